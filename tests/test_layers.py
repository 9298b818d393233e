"""The package imports in one direction: each module only from its own layer or the layers below, and no cycles.

Built from the source with ``ast`` (imports inside functions included, so a lazy import that dodges a cycle is
still seen as the cycle it is). Layers from the bottom: the algorithm and small utilities; evaluation; callbacks
and presets; integrations (the zoo glue and the start-up hook); command-line tools, pictures, Hub, export and the
benchmark.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "lunar_sb3"

LAYERS = {
    0: ("lunar_sb3.soft_dqn", "lunar_sb3.envs", "lunar_sb3.outputs", "lunar_sb3.version", "lunar_sb3.private_api"),
    1: ("lunar_sb3.landing", "lunar_sb3.evaluation"),
    2: ("lunar_sb3.callbacks", "lunar_sb3.checkpoints", "lunar_sb3.landing_eval", "lunar_sb3.presets"),
    3: ("lunar_sb3.zoo", "lunar_sb3._autoload"),
    4: (
        "lunar_sb3.evaluate", "lunar_sb3.plot", "lunar_sb3.pictures", "lunar_sb3.export", "lunar_sb3.hub",
        "lunar_sb3.benchmark",
    ),
}  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    matches = [
        (len(prefix), layer)
        for layer, prefixes in LAYERS.items()
        for prefix in prefixes
        if module == prefix or module.startswith(prefix + ".")
    ]
    assert matches, f"{module} is in no layer: add it to LAYERS in tests/test_layers.py"
    return max(matches)[1]


def imported_modules(path: Path) -> set[str]:
    """The lunar_sb3 modules ``path`` imports, anywhere in the file (a name imported from a package counts as its
    submodule when there is one)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):  # type-only imports are not imports at run time
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            node.body = []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "lunar_sb3"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lunar_sb3":
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                found.add(candidate if candidate in MODULES else node.module)
    return found


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}
GRAPH = {module: imported_modules(path) for module, path in MODULES.items()}


def test_every_module_has_a_layer() -> None:
    for module in MODULES:
        if module != "lunar_sb3":
            layer_of(module)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m != "lunar_sb3"))
def test_imports_only_downward(module: str) -> None:
    own = layer_of(module)
    upward = sorted(m for m in GRAPH[module] if m == "lunar_sb3" or layer_of(m) > own)
    assert not upward, f"{module} (layer {own}) imports {upward}: move the shared piece down a layer instead"


def test_no_import_cycle() -> None:
    """Depth-first search over the whole graph; a back edge is a cycle, reported with its path."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(GRAPH.get(module, ())):
            if state.get(target) == 1:
                cycle = path[path.index(target) :] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target in GRAPH and state.get(target) is None:
                visit(target)
        path.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if state.get(module) is None:
            visit(module)


def test_the_check_sees_a_lazy_import(tmp_path: Path) -> None:
    """An import inside a function counts: the case a lazy import used to hide."""
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from lunar_sb3.evaluate import main\n")
    assert imported_modules(source) == {"lunar_sb3.evaluate"}
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from lunar_sb3.evaluate import main\n")
    assert imported_modules(source) == set()


def test_importing_the_package_does_not_load_box2d() -> None:
    import subprocess
    import sys

    code = "import sys, lunar_sb3; print('Box2D' in sys.modules, 'lunar_sb3.landing' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
