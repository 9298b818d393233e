"""``pull``: put a package (a Hub repo or a folder) into rl-zoo3's folder layout, where ``enjoy`` and
``lunar_sb3.evaluate`` find it; and where the lander shipped with ``lunar_sb3`` lives.

A run folder made here looks like one ``rl_zoo3.train`` left (``<LOG>/<algo>/<ENV>_<N>/<ENV>.zip`` and
``<ENV>/config.yml, args.yml, env_kwargs.yml[, vecnormalize.pkl]``), which is also what rl-zoo3's ``load_from_hub``
makes of a Hub repo. It is assembled under a temporary name and renamed, so a failed pull leaves no run folder
that ``enjoy``'s "latest run" would pick.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

from lunar_sb3.evaluation import VECNORMALIZE_FILE
from lunar_sb3.hub.files import (
    CARD_FILE,
    CHART_FILE,
    CONFIG_FILES,
    GIF_FILE,
    HUB_VEC_NORMALIZE_FILE,
    METRICS_FILE,
    RESULTS_FILE,
    split_model_file_name,
)
from lunar_sb3.outputs import RUN_NAME, OutputError

SHIPPED_AGENTS = "rl-trained-agents"
"""The folder of the lander that ships with lunar_sb3, in rl-zoo3's own ``rl-trained-agents`` layout."""
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
"""``user/name``: the form of a Hub model repo id (the Hub allows letters, digits, ``-``, ``_`` and ``.``)."""


def shipped_agents_folder() -> Path:
    """``rl-trained-agents`` inside the installed package (the wheel ships it there) or in the repository."""
    package_dir = Path(__file__).parent.parent
    for folder in (package_dir / SHIPPED_AGENTS, package_dir.parent / SHIPPED_AGENTS):
        if folder.is_dir():
            return folder
    raise OutputError(f"the shipped lander's folder {SHIPPED_AGENTS} is missing from {package_dir}")


def check_repo_id(repo_id: str) -> str:
    """Refuse anything but ``user/name`` before any network or packaging work."""
    if not REPO_ID.fullmatch(repo_id) or ".." in repo_id or repo_id.endswith((".git", ".")):
        raise OutputError(f"repo id {repo_id!r} is not of the form user/name (letters, digits, '-', '_', '.')")
    return repo_id


def package_model(package: Path) -> tuple[Path, str, str]:
    """(model zip, algo, env name) of a package folder: its one ``<algo>-<ENV>.zip`` beside the zoo's config files.

    :raises OutputError: naming what is missing, for a folder that is not a complete package
    """
    if not package.is_dir():
        raise OutputError(f"no such package folder: {package}")
    models = [
        path
        for path in sorted(package.glob("*.zip"))
        if path.name != METRICS_FILE and split_model_file_name(path.name) is not None
    ]
    if len(models) != 1:
        found = ", ".join(path.name for path in models) or "none"
        raise OutputError(f"package {package} must hold one model zip named <algo>-<ENV>.zip, found {found}")
    missing = [name for name in (*CONFIG_FILES, METRICS_FILE) if not (package / name).is_file()]
    if missing:
        raise OutputError(f"package {package} is incomplete: no {', '.join(missing)}")
    algo, env = split_model_file_name(models[0].name)  # type: ignore[misc]
    return models[0], algo, env


def _next_run_id(algo_folder: Path, env: str) -> int:
    """rl-zoo3's ``get_latest_run_id`` + 1: the N a new ``<ENV>_<N>`` run folder gets."""
    ids = [0]
    if algo_folder.is_dir():
        for candidate in algo_folder.iterdir():
            match = RUN_NAME.fullmatch(candidate.name)
            if match and match["env_id"] == env and candidate.is_dir():
                ids.append(int(match["run_id"]))
    return max(ids) + 1


def pull_package(package: Path, log_folder: Path, exp_id: int = 0, force: bool = False) -> Path:
    """Copy a package folder into ``<log_folder>/<algo>/<ENV>_<N>`` (N: ``exp_id``, or the next free one for 0).

    :raises OutputError: for an incomplete package, an existing run folder (without ``force``) or a bad ``exp_id``
    """
    model, algo, env = package_model(package)
    if exp_id < 0:
        raise OutputError(f"--exp-id must be >= 0 (0: a new run folder after the latest), got {exp_id}")
    algo_folder = log_folder / algo
    run = algo_folder / f"{env}_{exp_id or _next_run_id(algo_folder, env)}"
    if run.exists() and not force:
        raise OutputError(f"run folder {run} already exists: pass --force to replace it, or --exp-id 0 for a new one")
    try:
        algo_folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=algo_folder, prefix=f".{run.name}.", suffix=".partial"))
    except OSError as error:
        raise OutputError(f"cannot write into {algo_folder}: {error.strerror or error}") from None
    try:
        shutil.copyfile(model, staging / f"{env}.zip")
        (staging / env).mkdir()
        for name in CONFIG_FILES:
            shutil.copyfile(package / name, staging / env / name)
        if (package / HUB_VEC_NORMALIZE_FILE).is_file():
            shutil.copyfile(package / HUB_VEC_NORMALIZE_FILE, staging / env / VECNORMALIZE_FILE)
        for name in (RESULTS_FILE, CARD_FILE, CHART_FILE, GIF_FILE):  # the card stays with the run it describes
            if (package / name).is_file():
                shutil.copyfile(package / name, staging / name)
        with zipfile.ZipFile(package / METRICS_FILE) as metrics:
            for name in metrics.namelist():
                if Path(name).name != name or name.startswith("."):  # only flat file names, as push_to_hub writes
                    raise OutputError(f"{package / METRICS_FILE} holds an unexpected path {name!r}")
            metrics.extractall(staging)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)
        if run.exists():
            shutil.rmtree(run)
        os.replace(staging, run)
    except zipfile.BadZipFile as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise OutputError(f"{package / METRICS_FILE} is not a zip file ({error})") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return run


def download_package(repo_id: str, destination: Path) -> Path:
    """Download a Hub repo's files into ``destination`` (``huggingface_hub.snapshot_download``, which finds a token
    for private repos where ``hf auth login`` put it)."""
    import huggingface_hub

    try:
        return Path(huggingface_hub.snapshot_download(repo_id=repo_id, repo_type="model", local_dir=destination))
    except Exception as error:  # repository not found, gated, offline ...: huggingface_hub's own message
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise OutputError(f"cannot download {repo_id} from the Hub ({type(error).__name__}: {first_line})") from None
