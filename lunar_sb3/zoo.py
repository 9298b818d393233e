"""rl-zoo3 glue: ``soft_dqn`` in ``ALGOS``, its Optuna search space, and its packaged hyperparameter file.

Importing this module registers everything (idempotently), so ``--gym-packages lunar_sb3.zoo`` or
``import lunar_sb3.zoo`` works even with the start-up hook turned off (``LUNAR_SB3_AUTOLOAD=0``).
"""

import functools
import inspect
import os
from pathlib import Path
from typing import Any, NoReturn

import optuna
import rl_zoo3.exp_manager
import rl_zoo3.hyperparams_opt
import rl_zoo3.utils

import lunar_sb3
from lunar_sb3 import SoftUpdateDQN

ALGO_NAME = "soft_dqn"


def hyperparams_path(name: str = f"{ALGO_NAME}.yml") -> Path:
    """The YAML shipped in the wheel (``lunar_sb3/hyperparams``), or the repository's ``hyperparams/``."""
    package_dir = Path(lunar_sb3.__file__).parent
    for folder in (package_dir / "hyperparams", package_dir.parent / "hyperparams"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"lunar_sb3: hyperparameter file {name} is missing from {package_dir}")


def convert_soft_dqn_params(params: dict[str, Any]) -> dict[str, Any]:
    """Turn Optuna's raw suggestions into ``SoftUpdateDQN`` keyword arguments (also used by ``--trial-id``)."""
    hyperparams = {
        key: params[key]
        for key in (
            "learning_rate",
            "batch_size",
            "buffer_size",
            "gamma",
            "tau",
            "target_update_interval",
            "exploration_decay",
            "train_freq",
            "gradient_steps",
            "loss",
            "double_q",
        )
        if key in params
    }
    if "net_width" in params:
        hyperparams["policy_kwargs"] = dict(net_arch=[params["net_width"]] * params.get("net_depth", 2))
    return hyperparams


def sample_soft_dqn_params(
    trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict[str, Any]
) -> dict[str, Any]:
    """Search space centred on the lab's values; every combination is a valid ``SoftUpdateDQN``."""
    params = {
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 5e-3, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128, 256]),
        "buffer_size": trial.suggest_categorical("buffer_size", [25_000, 50_000, 100_000, 300_000]),
        "gamma": trial.suggest_categorical("gamma", [0.98, 0.99, 0.995, 0.999]),
        "tau": trial.suggest_float("tau", 1e-4, 2e-2, log=True),
        "target_update_interval": trial.suggest_categorical("target_update_interval", [1, 2, 4, 8, 16]),
        "exploration_decay": trial.suggest_categorical("exploration_decay", [0.98, 0.99, 0.995, 0.998]),
        "train_freq": trial.suggest_categorical("train_freq", [1, 2, 4, 8]),
        "gradient_steps": trial.suggest_categorical("gradient_steps", [1, 2]),
        "net_width": trial.suggest_categorical("net_width", [32, 64, 128, 256]),
        "net_depth": trial.suggest_int("net_depth", 1, 3),
        "loss": trial.suggest_categorical("loss", ["mse", "huber"]),
        "double_q": trial.suggest_categorical("double_q", [False, True]),
    }
    return convert_soft_dqn_params(params)


def _default_to_packaged_hyperparams(init: Any) -> Any:
    """Wrap ``ExperimentManager.__init__`` so ``--algo soft_dqn`` without ``-conf`` reads our YAML.

    rl-zoo3 looks for ``hyperparams/<algo>.yml`` inside its own package, where a plugin cannot put files.
    """
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(*args: Any, **kwargs: Any) -> None:
        bound = signature.bind(*args, **kwargs)
        arguments = bound.arguments
        if arguments.get("algo") == ALGO_NAME:
            if not arguments.get("config"):
                arguments["config"] = str(hyperparams_path())
            _check_optuna_storage(arguments.get("storage"), arguments.get("study_name"), arguments.get("trial_id"))
        init(*bound.args, **bound.kwargs)

    __init__._lunar_sb3_wrapped = True  # type: ignore[attr-defined]
    return __init__


def _check_optuna_storage(storage: str | None, study_name: str | None, trial_id: int | None) -> None:
    """Stop with a one-line message, before any training, when ``--storage``/``--study-name``/``--trial-id``
    cannot work (Optuna would otherwise fail later with a bare ``KeyError`` or ``IsADirectoryError``)."""
    if storage is None:
        return

    def fail(message: str) -> NoReturn:
        raise SystemExit(f"rl_zoo3.train --algo {ALGO_NAME}: error: {message}")

    if storage.endswith(".log"):  # a journal file, shared by the workers
        journal = Path(storage)
        if journal.is_dir():
            fail(f"--storage {storage} is a directory; pass a journal file such as logs/study.log")
        if journal.exists() and not os.access(journal, os.R_OK | os.W_OK):
            fail(f"--storage {storage} is not readable and writable by this user")
        if trial_id is not None and not journal.exists():
            fail(f"--storage {storage} does not exist, so there is no trial {trial_id} to load")
    if trial_id is None:
        return
    if study_name is None:
        fail("--trial-id needs --study-name")
    backend = (
        optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))
        if storage.endswith(".log")
        else storage
    )
    try:
        names = optuna.get_all_study_names(storage=backend)
    except Exception as error:
        fail(f"cannot read the Optuna storage {storage} ({type(error).__name__}: {error})")
    if study_name not in names:
        fail(f"no study named {study_name!r} in {storage}; it holds: {', '.join(names) or 'no study'}")
    trials = optuna.load_study(study_name=study_name, storage=backend).trials
    if not 0 <= trial_id < len(trials):
        fail(f"study {study_name!r} has trials 0..{len(trials) - 1}, not {trial_id}")


def register() -> None:
    """Make rl-zoo3 know ``soft_dqn`` (idempotent)."""
    rl_zoo3.utils.ALGOS[ALGO_NAME] = SoftUpdateDQN
    rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER[ALGO_NAME] = sample_soft_dqn_params
    rl_zoo3.hyperparams_opt.HYPERPARAMS_CONVERTER[ALGO_NAME] = convert_soft_dqn_params
    manager = rl_zoo3.exp_manager.ExperimentManager
    if not getattr(manager.__init__, "_lunar_sb3_wrapped", False):
        manager.__init__ = _default_to_packaged_hyperparams(manager.__init__)


register()
