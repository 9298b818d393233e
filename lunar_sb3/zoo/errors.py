"""One-line errors for the zoo's commands with ``--algo soft_dqn``, and the Optuna storage checks.

Most mistakes are caught by our wrappers of ``ExperimentManager`` before any work (:func:`fail`). A few happen in
rl-zoo3's own scripts before or outside them (``--env`` with a typo, ``-i`` of a missing file, a ``-params`` value
that is not Python, an unwritable ``-f``, a full disk, ``enjoy``/``record_video`` given the wrong model): for those
:func:`install_excepthook` turns the exception into the same one line. Anything it does not recognise is a bug and
keeps its traceback.
"""

import errno
import os
import re
import sys
import traceback
import zipfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import NoReturn

import optuna

from lunar_sb3.presets import ALGO_NAME

PREFIX = f"rl_zoo3 --algo {ALGO_NAME}: error: "


def fail(message: str) -> NoReturn:
    """End a zoo command with one line naming the problem (exit status 1, no traceback)."""
    raise SystemExit(PREFIX + " ".join(str(message).split()))


def is_soft_dqn_zoo_command(argv: Sequence[str], orig_argv: Sequence[str] = ()) -> bool:
    """Whether this process is an rl-zoo3 script (train, enjoy, record_video, ...) run with ``--algo soft_dqn``.

    ``orig_argv`` is the interpreter's own command line: while ``python -m rl_zoo3.train`` imports the package,
    ``sys.argv[0]`` is still ``"-m"``.
    """
    words = [*argv[:1], *orig_argv]
    is_zoo = any(
        word.startswith("rl_zoo3") or Path(word).name.startswith("rl_zoo3") or "rl_zoo3" in Path(word).parts
        for word in words
    )
    return is_zoo and any(
        (arg == "--algo" and i + 1 < len(argv) and argv[i + 1] == ALGO_NAME) or arg == f"--algo={ALGO_NAME}"
        for i, arg in enumerate(argv)
    )


def _option(argv: Sequence[str], names: tuple[str, ...]) -> str | None:
    """The value given to an option such as ``-i``/``--trained-agent`` on the command line, if any."""
    for i, arg in enumerate(argv):
        if arg in names and i + 1 < len(argv):
            return argv[i + 1]
        for name in names:
            if name.startswith("--") and arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def user_error_message(error: BaseException, tb: TracebackType | None, argv: Sequence[str]) -> str | None:
    """The one line for an exception that the user's input or machine caused, or None for a bug."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        where = f" while writing {error.filename}" if error.filename else ""
        detail = error.strerror if error.strerror and "checkpoint" in error.strerror else "no space left on device"
        return f"{detail}{where}: free some space, or train into another folder with -f"
    if isinstance(error, OSError) and error.errno == errno.ENOENT and error.filename:
        return f"no such file or folder: {error.filename} (check the paths given to -f, -i, -o, -conf)"
    if isinstance(error, OSError) and error.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR):
        where = error.filename or "a file or folder"
        return f"cannot write {where} ({error.strerror}): choose a folder you can write to (-f, -o)"
    for frame, _ in traceback.walk_tb(tb):  # rl-zoo3's StoreDict evaluates each -params/--env-kwargs value
        code = frame.f_code
        if code.co_name == "__call__" and code.co_filename.endswith(os.path.join("rl_zoo3", "utils.py")):
            pair = frame.f_locals.get("arguments")
            if pair is not None:
                return (
                    f"cannot read {pair!r} as key:value ({type(error).__name__}: {error}); values are Python "
                    "literals, so write text in quotes, e.g. loss:\"'huber'\""
                )
    message = str(error)
    if isinstance(error, ValueError) and "not found in gym registry" in message:
        env_id, _, guess = message.partition(" not found in gym registry, you maybe meant ")
        return f"--env {env_id}: no such environment; did you mean {guess.rstrip('?')}?"
    if isinstance(error, AssertionError) and "trained_agent must be a valid path" in message:
        agent = _option(argv, ("-i", "--trained-agent"))
        return f"-i {agent}: no such model file (expected a .zip saved by training)"
    if isinstance(error, AssertionError) and re.search(r"The .* folder was not found", message):
        return f"{message}: train first, or point -f/--exp-id at an existing run"
    if isinstance(error, ValueError) and message.startswith("No model found for"):
        hint = (
            " (best_model.zip is written by the zoo's evaluation, --eval-freq, or by a LandingEvalCallback)"
            if message.rstrip().endswith("best_model.zip")
            else ""
        )
        return message + hint
    if isinstance(error, ValueError) and ("holds a model" in message or "model zip" in message):
        return message  # SoftUpdateDQN.load's own check of the file
    if isinstance(error, (zipfile.BadZipFile, EOFError)):
        return f"the model file is damaged or incomplete ({type(error).__name__}: {error})"
    return None


def install_excepthook(argv: Sequence[str] | None = None) -> None:
    """For ``--algo soft_dqn`` zoo commands: known user errors end with one line, bugs keep their traceback."""
    argv = list(sys.argv if argv is None else argv)
    if not is_soft_dqn_zoo_command(argv, getattr(sys, "orig_argv", ())) or getattr(sys.excepthook, "_lunar_sb3", False):
        return
    previous = sys.excepthook

    def excepthook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        message = user_error_message(error, tb, argv)
        if message is None:
            previous(kind, error, tb)
        else:
            print(PREFIX + " ".join(message.split()), file=sys.stderr)
            # Objects half-built when the error struck fail again in their destructors at exit (rl-zoo3's
            # VecVideoRecorder on an unwritable -o): their noise would bury the one line that names the problem.
            sys.unraisablehook = lambda unraisable: None

    excepthook._lunar_sb3 = True  # type: ignore[attr-defined]
    sys.excepthook = excepthook


def _without_password(url: str) -> str:
    """A database URL fit for an error message: ``postgresql://user:***@host/db``."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def check_optuna_storage(
    storage: str | None, study_name: str | None, trial_id: int | None, optimize: bool = False
) -> None:
    """Stop with a one-line message, before any training, when ``--storage``/``--study-name``/``--trial-id``
    cannot work (Optuna would otherwise fail later with a bare ``KeyError``, ``IsADirectoryError`` or a database
    driver's traceback, or, for a study that minimizes, silently tune towards the worst return)."""
    if storage is None:
        if trial_id is not None:
            fail(f"--trial-id {trial_id} needs --storage and --study-name")
        return
    shown = _without_password(storage)
    is_journal = storage.endswith(".log")
    if is_journal:  # a journal file, shared by the workers
        journal = Path(storage)
        if journal.is_dir():
            fail(f"--storage {storage} is a directory; pass a journal file such as logs/study.log")
        if journal.exists() and not os.access(journal, os.R_OK | os.W_OK):
            fail(f"--storage {storage} is not readable and writable by this user")
        if trial_id is not None and not journal.exists():
            fail(f"--storage {storage} does not exist, so there is no trial {trial_id} to load")
        if not journal.exists():
            return  # the first worker creates it
    if trial_id is not None and study_name is None:
        fail("--trial-id needs --study-name")
    backend = (
        optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage)) if is_journal else storage
    )
    try:
        summaries = {summary.study_name: summary for summary in optuna.get_all_study_summaries(storage=backend)}
    except Exception as error:
        message = _without_password(f"{type(error).__name__}: {error}".splitlines()[0])
        fail(f"cannot read the Optuna storage {shown} ({message})")
    if optimize and study_name in summaries and summaries[study_name].direction != optuna.study.StudyDirection.MAXIMIZE:
        fail(
            f"study {study_name!r} in {shown} minimizes, but rl-zoo3 reports returns to maximize; "
            "create it with `optuna create-study ... --direction maximize`"
        )
    if trial_id is None:
        return
    if study_name not in summaries:
        fail(f"no study named {study_name!r} in {shown}; it holds: {', '.join(summaries) or 'no study'}")
    trials = optuna.load_study(study_name=study_name, storage=backend).trials
    if not 0 <= trial_id < len(trials):
        fail(f"study {study_name!r} has trials 0..{len(trials) - 1}, not {trial_id}")
