"""The README and the docs site: the site builds strictly, every Python example runs, every relative link resolves.

Examples are run as a user would paste them, with one change: the budgets named in ``TINY_BUDGETS`` (the steps
of every ``learn(...)`` call, evaluation sizes and frequencies) are rewritten to tiny values in the syntax tree,
so an example that trains for two million steps is checked in a second. Nothing else in an example is touched,
and each runs in its own temporary folder.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import lunar_sb3

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# ```lang ... ``` at the start of a line; the closing fence has the same number of backticks
FENCE = re.compile(r"^(?P<fence>`{3,})(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
# [text](target) and ![alt](target), with an optional "title"
LINK = re.compile(r"!?\[[^\]]*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
# A path into the repository written as inline code (no wildcards or placeholders)
REPOSITORY_PATH = re.compile(r"(?:lunar_sb3|hyperparams|results|tests|docs|\.ci)/[\w./-]*")
# A run named by a fixed number: what the training summary prints is the run's own number, not 1
FIXED_RUN = re.compile(r"--exp-id 1\b|LunarLander-v2_1\b")

TINY_BUDGETS = {"total_timesteps": 600, "eval_freq": 200, "min_timesteps": 0, "n_eval_episodes": 2, "n_episodes": 2}


def fenced_blocks(path: Path) -> list[tuple[str, str, int]]:
    """(language, body, line number) of every fenced code block in a Markdown file."""
    text = path.read_text(encoding="utf-8")
    return [(m["lang"], m["body"], text.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(text)]


def prose(path: Path, keep_blocks: frozenset[str] = frozenset()) -> str:
    """The file without fenced blocks (except those in ``keep_blocks``) and inline code spans."""
    text = FENCE.sub(lambda m: m[0] if m["lang"] in keep_blocks else "", path.read_text(encoding="utf-8"))
    return INLINE_CODE.sub("", text)


def python_examples() -> list:
    """One pytest param per distinct Python example (the README repeats one of the docs' examples)."""
    seen: dict[str, str] = {}
    for path in DOC_FILES:
        for lang, body, line in fenced_blocks(path):
            if lang in ("python", "py") and body not in seen:
                seen[body] = f"{path.relative_to(ROOT)}:{line}"
    return [pytest.param(body, where, id=where) for body, where in seen.items()]


class TinyBudgets(ast.NodeTransformer):
    """Rewrite ``x.learn(N, ...)`` / ``total_timesteps=N`` and the evaluation sizes in ``TINY_BUDGETS``."""

    def __init__(self) -> None:
        self.rewritten: list[str] = []

    def visit_Call(self, node: ast.Call) -> ast.Call:
        self.generic_visit(node)
        if isinstance(node.func, ast.Attribute) and node.func.attr == "learn" and node.args:
            node.args[0] = ast.copy_location(ast.Constant(TINY_BUDGETS["total_timesteps"]), node.args[0])
            self.rewritten.append("learn")
        for keyword in node.keywords:
            if keyword.arg in TINY_BUDGETS:
                keyword.value = ast.copy_location(ast.Constant(TINY_BUDGETS[keyword.arg]), keyword.value)
                self.rewritten.append(keyword.arg)
        return node


def test_the_docs_have_examples_to_run() -> None:
    # The parametrized test below passes vacuously if the fence pattern stops matching
    assert len(python_examples()) >= 5


@pytest.mark.parametrize(("source", "where"), python_examples())
def test_python_example_runs(source: str, where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = ast.parse(source, filename=where)
    budgets = TinyBudgets()
    tree = ast.fix_missing_locations(budgets.visit(tree))
    if ".learn(" in source:
        assert "learn" in budgets.rewritten, f"{where}: a learn(...) call whose step count was not shrunk"
    monkeypatch.chdir(tmp_path)  # examples save models and runs into the current folder
    (tmp_path / "rl-trained-agents").symlink_to(ROOT / "rl-trained-agents")  # as from the repository's root
    exec(compile(tree, where, "exec"), {"__name__": "__main__"})


def test_the_budget_rewrite_reaches_every_budget() -> None:
    source = "m.learn(2_000_000, callback=c)\nm.learn(total_timesteps=5)\nf(eval_freq=25_000, n_eval_episodes=50)"
    tree = ast.fix_missing_locations(TinyBudgets().visit(ast.parse(source)))
    assert ast.unparse(tree) == (
        "m.learn(600, callback=c)\nm.learn(total_timesteps=600)\nf(eval_freq=200, n_eval_episodes=2)"
    )


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_to_files(path: Path) -> None:
    broken = []
    for match in LINK.finditer(prose(path)):
        target = match["target"].split("#", 1)[0]
        if not target or "://" in target or target.startswith("mailto:"):
            continue
        if not (path.parent / target).exists():
            broken.append(match["target"])
    assert not broken, f"{path.relative_to(ROOT)} links to missing files: {broken}"


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_repository_paths_in_code_spans_exist(path: Path) -> None:
    """`lunar_sb3/zoo/hyperparams.py`, `results/robust/robust.json`, ...: a moved module or result shows here."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    spans = [span.strip("`") for span in INLINE_CODE.findall(text)]
    paths = [span for span in spans if REPOSITORY_PATH.fullmatch(span)]
    missing = [span for span in paths if not (ROOT / span).exists()]
    assert not missing, f"{path.relative_to(ROOT)} names repository paths that do not exist: {missing}"


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_command_names_a_fixed_run(path: Path) -> None:
    """Commands say "the newest run" or ``LunarLander-v2_N``: after a few runs, ``_1`` is someone else's model.

    Printed output (```text blocks) is exempt: a real run's summary names its own run, which was run 1.
    """
    text = prose(path, keep_blocks=frozenset({"bash", "sh", "console", "python", ""}))
    # the shipped lander is run 1 of rl-trained-agents/ by rl-zoo3's convention: a fixed folder, not a user's run
    lines = [line for line in text.splitlines() if "rl-trained-agents" not in line]
    fixed = FIXED_RUN.findall("\n".join(lines))
    assert not fixed, f"{path.relative_to(ROOT)} hard-codes run 1: {fixed}"


def test_readme_test_command_is_what_ci_runs() -> None:
    """README promises that CI runs its test command; .ci/run's last command must be that command."""
    setup = [body for lang, body, _ in fenced_blocks(ROOT / "README.md") if lang == "bash" and "pytest" in body]
    assert len(setup) == 1, "README should have one bash block with the test command"
    readme_test_command = setup[0].strip().rsplit(" && ", 1)[-1]
    ci_commands = [line for line in (ROOT / ".ci/run").read_text().splitlines() if line and not line.startswith("#")]
    assert ci_commands[-1] == readme_test_command == "python -m pytest"


def test_citation_and_changelog_name_the_current_version() -> None:
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert {"cff-version", "message", "title", "authors"} <= citation.keys()
    assert str(citation["version"]) == lunar_sb3.__version__
    assert citation["license"] == "MIT"
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## [Unreleased]" in changelog
    assert re.search(rf"^## \[{re.escape(lunar_sb3.__version__)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", changelog, re.M)
    assert "MIT License" in (ROOT / "LICENSE").read_text(encoding="utf-8")


def test_site_builds_strictly(tmp_path: Path) -> None:
    """``mkdocs build --strict``: every page in the nav, every link and anchor, every API object resolves."""
    tools = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")
    missing = [name for name in tools if not _has(name)]
    if missing:
        pytest.skip(f"the docs tools are not installed ({', '.join(missing)}): pip install -e '.[docs]'")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # mkdocs-material's banner about MkDocs 2, not ours
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stderr[-4000:]}"
    site = tmp_path / "site"
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    for name in ("lunar_sb3.SoftUpdateDQN.td_target", "lunar_sb3.evaluation.evaluate_model", "LandingEvalCallback"):
        assert name in api, f"the API reference lacks {name}"
    # the files the pages link to with ../ are in the site (docs/hooks.py), pictures included
    assert (site / "results" / "robust" / "outcomes_by_agent.png").is_file()


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a missing parent package
        return False
