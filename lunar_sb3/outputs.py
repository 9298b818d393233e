"""Shared helpers of the command-line tools: one-line errors, output files and rl-zoo3 run folders.

Outputs are checked before the expensive work (a benchmark that trains for an hour must not die at the end because
``--out`` is a file) and written under a temporary name in the target folder, then renamed with ``os.replace``, so
an interrupted or failed write never leaves a half-written file and never clobbers the previous one.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

RUN_NAME = re.compile(r"(?P<env_id>.+)_(?P<run_id>\d+)")
"""rl-zoo3 names a run folder ``<ENV_ID>_<N>`` (``get_latest_run_id`` only counts names of this form)."""


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are the single line ``PROG: error: MESSAGE`` (exit status 2).

    argparse prints the usage block first; in a log or a CI failure the one line that names the problem is what
    matters, and ``--help`` still shows the usage.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")


class OutputError(Exception):
    """A problem with an output location or a run folder, phrased for the user (one line)."""


def _probe(folder: Path) -> None:
    """Create and delete a file in ``folder``: the only reliable test (``os.access`` says yes to root on a
    read-only mount or under ACLs)."""
    try:
        handle, name = tempfile.mkstemp(dir=folder, prefix=".write-check-")
    except OSError as error:
        raise OutputError(f"cannot write into {folder}: {error.strerror or error}") from None
    os.close(handle)
    os.unlink(name)


def check_writable_file(path: str | Path) -> Path:
    """Fail early unless ``path`` can be (re)written: its folder must exist and take new files.

    The folder is not created: a typo in ``-o`` should be reported, not turned into a new directory tree.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"output {path} is a folder, expected a file name")
    folder = path.parent
    if not folder.exists():
        raise OutputError(f"cannot write {path}: folder {folder} does not exist")
    if not folder.is_dir():
        raise OutputError(f"cannot write {path}: {folder} is not a folder")
    _probe(folder)
    return path


def check_writable_folder(folder: str | Path, file_names: tuple[str, ...] = ()) -> Path:
    """Fail early unless ``folder`` exists and takes files, or can be created (nothing is created here).

    ``file_names`` are the files that will be written into it; none of them may be an existing folder.
    """
    folder = Path(folder)
    if folder.exists():
        if not folder.is_dir():
            raise OutputError(f"output folder {folder} is an existing file")
        for name in file_names:
            if (folder / name).is_dir():
                raise OutputError(f"cannot write {folder / name}: it is a folder")
        _probe(folder)
        return folder
    ancestor = folder.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"cannot create output folder {folder}: {ancestor} is a file")
    _probe(ancestor)
    return folder


def _new_file_mode(path: Path) -> int:
    """The mode ``open(path, "w")`` would give: keep an existing file's, else 0o666 minus the umask
    (``mkstemp`` makes files 0o600, which would hide shared results from other users)."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder (same suffix, so tools that infer the format still do) and move
    it onto ``path`` when the block succeeds; on any error the temporary file is removed and ``path`` untouched."""
    path = Path(path)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.chmod(temporary, _new_file_mode(path))
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` all at once (see ``atomic_path``)."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def env_id_of_run(run_folder: str | Path) -> str | None:
    """The env id in an rl-zoo3 run folder's name (``LunarLander-v2_3`` -> ``LunarLander-v2``), or None."""
    match = RUN_NAME.fullmatch(Path(run_folder).name)
    return match["env_id"] if match else None


def model_of_run(run_folder: str | Path, env_id: str) -> Path:
    """The final model rl-zoo3 saves in a run folder: ``<run>/<ENV_ID>.zip``."""
    return Path(run_folder) / f"{env_id}.zip"


def has_model(run_folder: Path, env_id: str) -> bool:
    """Whether a run has saved its final model (``find_run_folder``'s test for evaluate)."""
    return model_of_run(run_folder, env_id).is_file()


def has_monitor_files(run_folder: Path, env_id: str) -> bool:
    """Whether a run has Monitor files, maybe still growing (``find_run_folder``'s test for plot)."""
    return any(run_folder.glob("*monitor.csv"))


def find_run_folder(
    log_folder: str | Path,
    algo: str,
    env_id: str,
    exp_id: int = 0,
    usable: Callable[[Path, str], bool] = has_model,
    wanted: str = "a saved model",
) -> Path:
    """The run folder ``<log_folder>/<algo>/<ENV_ID>_<exp_id>``, as rl-zoo3's ``-f/--algo/--exp-id`` name it.

    ``exp_id`` 0 means the latest run, with ``get_latest_run_id``'s rule (greatest ``N`` among ``<ENV_ID>_<N>``)
    except that runs for which ``usable`` is false are skipped: a run that is still training, or crashed before
    saving, should not hide the last finished one.
    """
    if exp_id < 0:
        raise OutputError(f"--exp-id must be >= 0 (0: latest run), got {exp_id}")
    algo_folder = Path(log_folder) / algo
    if not algo_folder.is_dir():
        raise OutputError(f"no folder {algo_folder}: no {algo} runs under {log_folder}")
    if exp_id > 0:
        run = algo_folder / f"{env_id}_{exp_id}"
        if not run.is_dir():
            raise OutputError(f"no run folder {run}")
        return run
    runs = []
    for candidate in algo_folder.iterdir():
        match = RUN_NAME.fullmatch(candidate.name)
        if match and match["env_id"] == env_id and candidate.is_dir() and usable(candidate, env_id):
            runs.append((int(match["run_id"]), candidate))
    if not runs:
        raise OutputError(f"no {env_id}_<N> run with {wanted} in {algo_folder}")
    return max(runs)[1]
