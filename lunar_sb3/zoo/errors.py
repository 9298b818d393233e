"""One-line errors for the zoo's commands with ``--algo soft_dqn``, and the Optuna storage checks."""

import os
import re
from pathlib import Path
from typing import NoReturn

import optuna

ALGO_NAME = "soft_dqn"


def fail(message: str) -> NoReturn:
    """End a zoo command with one line naming the problem (exit status 1, no traceback)."""
    raise SystemExit(f"rl_zoo3 --algo {ALGO_NAME}: error: {' '.join(str(message).split())}")


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
