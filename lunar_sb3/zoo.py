"""rl-zoo3 glue: ``soft_dqn`` in ``ALGOS``, its Optuna search space, and its packaged hyperparameter file.

Importing this module registers everything (idempotently), so ``--gym-packages lunar_sb3.zoo`` or
``import lunar_sb3.zoo`` works even with the start-up hook turned off (``LUNAR_SB3_AUTOLOAD=0``).
"""

import difflib
import functools
import inspect
import os
import pickle
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import optuna
import rl_zoo3.exp_manager
import rl_zoo3.hyperparams_opt
import rl_zoo3.utils
import torch as th
from stable_baselines3.common.callbacks import CheckpointCallback

import lunar_sb3
from lunar_sb3 import SoftUpdateDQN, StopTrainingOnSolved
from lunar_sb3.callbacks import TrainingProgress
from lunar_sb3.robust import LandingEvalCallback

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
            "dueling",
            "prioritized_replay",
            "n_steps",
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
        # Rainbow-lite components: each combines with every other and with double_q
        "dueling": trial.suggest_categorical("dueling", [False, True]),
        "prioritized_replay": trial.suggest_categorical("prioritized_replay", [False, True]),
        "n_steps": trial.suggest_categorical("n_steps", [1, 3, 5]),
    }
    return convert_soft_dqn_params(params)


def _fail(message: str) -> NoReturn:
    """End a zoo command with one line naming the problem (exit status 1, no traceback)."""
    raise SystemExit(f"rl_zoo3 --algo {ALGO_NAME}: error: {' '.join(str(message).split())}")


# Keys of a zoo hyperparameter entry that rl-zoo3 consumes itself instead of passing them to the algorithm
ZOO_KEYS = frozenset(
    {
        "n_timesteps",
        "n_envs",
        "policy",
        "normalize",
        "env_wrapper",
        "vec_env_wrapper",
        "callback",
        "frame_stack",
        "env_kwargs",
        "monitor_kwargs",
        "noise_type",
        "noise_std",
    }
)
# Constructor arguments that the zoo sets from its own command line
ZOO_SET_ARGUMENTS = frozenset({"env", "tensorboard_log", "seed", "verbose", "device", "_init_setup_model"})


def known_hyperparameters() -> frozenset[str]:
    """Every key a ``soft_dqn`` YAML entry or ``-params`` may hold."""
    constructor = set(inspect.signature(SoftUpdateDQN.__init__).parameters) - {"self"} - ZOO_SET_ARGUMENTS
    return frozenset(constructor | ZOO_KEYS)


def check_hyperparameter_names(hyperparams: dict[str, Any], source: str) -> None:
    """Stop on a key ``SoftUpdateDQN`` does not know, naming it and the closest known key."""
    known = known_hyperparameters()
    for key in hyperparams:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(known))}"
            _fail(f"unknown hyperparameter {key!r} in {source}{hint}")


_PATCHES: dict[str, Callable[..., Any]] = {}


def _patch(method_name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Record a wrapper for ``ExperimentManager.<method_name>`` that acts only for ``--algo soft_dqn``.

    The wrapper receives the original method as its first argument; :func:`register` installs it.
    """

    def decorate(wrapper: Callable[..., Any]) -> Callable[..., Any]:
        _PATCHES[method_name] = wrapper
        return wrapper

    return decorate


def _install_patch(method_name: str, wrapper: Callable[..., Any]) -> None:
    """Wrap the method once (idempotent: a second ``register()`` does not wrap twice)."""
    manager = rl_zoo3.exp_manager.ExperimentManager
    original = getattr(manager, method_name)
    if getattr(original, "_lunar_sb3_wrapped", False):
        return

    @functools.wraps(original)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(self, "algo", None) != ALGO_NAME:
            return original(self, *args, **kwargs)
        return wrapper(original, self, *args, **kwargs)

    method._lunar_sb3_wrapped = True  # type: ignore[attr-defined]
    setattr(manager, method_name, method)


def _patch_init() -> None:
    """``ExperimentManager.__init__``: our YAML by default, early checks of files and storage, one torch thread."""
    manager = rl_zoo3.exp_manager.ExperimentManager
    init = manager.__init__
    if getattr(init, "_lunar_sb3_wrapped", False):
        return
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(*args: Any, **kwargs: Any) -> None:
        bound = signature.bind(*args, **kwargs)
        arguments = bound.arguments
        if arguments.get("algo") == ALGO_NAME:
            # rl-zoo3 looks for hyperparams/<algo>.yml inside its own package, where a plugin cannot put files
            if not arguments.get("config"):
                arguments["config"] = str(hyperparams_path())
            elif not Path(arguments["config"]).is_file() and arguments["config"].endswith((".yml", ".yaml")):
                _fail(f"-conf {arguments['config']}: no such file")
            _check_optuna_storage(
                arguments.get("storage"),
                arguments.get("study_name"),
                arguments.get("trial_id"),
                optimize=bool(arguments.get("optimize_hyperparameters")),
            )
            args = arguments.get("args")
            # PyTorch's OpenMP threads spin-wait inside the tiny matrix products of a 64-64 network: on a busy
            # machine two threads run ~40x slower than one. One thread unless --num-threads says otherwise.
            if args is None or getattr(args, "num_threads", -1) <= 0:
                th.set_num_threads(1)
        init(*bound.args, **bound.kwargs)

    __init__._lunar_sb3_wrapped = True  # type: ignore[attr-defined]
    manager.__init__ = __init__


@_patch("read_hyperparameters")
def _read_hyperparameters(original: Callable[..., Any], self: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train trial 0 too (rl-zoo3 tests ``--trial-id`` for truthiness), and reject unknown keys."""
    trial_zero = self.trial_id == 0 and self.storage and self.study_name
    if trial_zero:
        trial_params = self.load_trial(self.storage, self.study_name, 0)
        custom = self.custom_hyperparams
        # The zoo's order: YAML, then the trial, then -params; -params is applied last, so it still wins
        self.custom_hyperparams = {**trial_params, **(custom or {})}
        print("Loading trial 0 from Optuna study...")
    try:
        hyperparams, saved = original(self)
    finally:
        if trial_zero:
            self.custom_hyperparams = custom
    check_hyperparameter_names(hyperparams, f"{self.config} or -params")
    return hyperparams, saved


@_patch("setup_experiment")
def _setup_experiment(original: Callable[..., Any], self: Any) -> Any:
    """Bad values (``tau:5``), an env with continuous actions, a broken ``-i`` file: one line, not a traceback."""
    if self.continue_training:
        from lunar_sb3.evaluate import model_class_of  # recognises another algorithm's zip by its policy class

        try:
            model_class_of(self.trained_agent)
        except ValueError as error:
            _fail(f"-i {error}")
    scratch = None
    if self.optimize_hyperparameters:
        # -optimize trains in memory, yet the zoo's setup makes a run folder for one monitor file. In the run
        # folder it would stay empty (and `enjoy -f logs`, newest run, would pick it and find no model), and two
        # workers started together compute the same run folder: one would delete it under the other. So the
        # setup gets a private folder of its own, removed once it is done.
        scratch = tempfile.mkdtemp(prefix="lunar_sb3_optimize_")
        self.save_path, self.params_path = scratch, os.path.join(scratch, self.env_name)
    try:
        return original(self)
    except (ValueError, AssertionError, TypeError, zipfile.BadZipFile, EOFError, pickle.UnpicklingError) as error:
        _fail(f"{type(error).__name__}: {error}")
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


@_patch("create_callbacks")
def _create_callbacks(original: Callable[..., Any], self: Any) -> None:
    """Checkpoints (``--save-freq``) also save the replay memory, so a killed run resumes with it.

    A ``LandingEvalCallback`` from the YAML without a folder keeps its best model in the run folder, where
    ``--load-best`` looks; the zoo's own ``EvalCallback`` (``--eval-freq``) then still writes ``evaluations.npz``
    but no longer saves ``best_model.zip`` over it.
    """
    from stable_baselines3.common.callbacks import EvalCallback

    from lunar_sb3.robust import LandingEvalCallback

    original(self)
    run_folder = Path(self.save_path)
    landing = [c for c in self.callbacks if isinstance(c, LandingEvalCallback)]
    for callback in landing:
        if callback.best_model_save_path is None:
            callback.best_model_save_path = run_folder
    landing_in_run = any(c.best_model_save_path == run_folder for c in landing)
    for callback in self.callbacks:
        if isinstance(callback, CheckpointCallback):
            callback.save_replay_buffer = True
            callback.save_vecnormalize = True
        if isinstance(callback, EvalCallback) and landing_in_run:
            callback.best_model_save_path = None
    if not self.optimize_hyperparameters:
        self._lunar_sb3_progress = TrainingProgress(verbose=self.verbose)
        self.callbacks.append(self._lunar_sb3_progress)


@_patch("_load_pretrained_agent")
def _load_pretrained_agent(original: Callable[..., Any], self: Any, hyperparams: dict[str, Any], env: Any) -> Any:
    """Resume from a checkpoint ``rl_model_<N>_steps.zip`` with the replay memory saved beside it."""
    model = original(self, hyperparams, env)
    agent = Path(self.trained_agent)
    match = re.fullmatch(r"(.*)_(\d+)_steps\.zip", agent.name)
    beside = agent.parent / "replay_buffer.pkl"
    if match and not beside.exists():
        checkpoint_buffer = agent.parent / f"{match[1]}_replay_buffer_{match[2]}_steps.pkl"
        if checkpoint_buffer.exists():
            print(f"Loading replay buffer {checkpoint_buffer}")
            model.load_replay_buffer(checkpoint_buffer)
    return model


@_patch("learn")
def _learn(original: Callable[..., Any], self: Any, model: Any) -> None:
    """Continued training (``-i``) keeps counting env steps, so ``-n`` adds steps and logs continue."""
    if not self.continue_training:
        return original(self, model)
    model._keep_step_counter = True  # an attribute, not a wrapped `learn`: checkpoints pickle the model's dict
    try:
        return original(self, model)
    finally:
        model._keep_step_counter = False


@_patch("save_trained_model")
def _save_trained_model(original: Callable[..., Any], self: Any, model: Any) -> None:
    """After the zoo saves: elapsed time, solved or not, the model path and the commands to try next."""
    original(self, model)
    progress = getattr(self, "_lunar_sb3_progress", None)
    if progress is not None and self.verbose >= 1:
        solved = next((c for c in self.callbacks if isinstance(c, StopTrainingOnSolved)), None)
        landing = next((c for c in self.callbacks if isinstance(c, LandingEvalCallback)), None)
        extra = ""
        if landing is not None and landing.best is not None:
            best = landing.best
            bar = (
                f"landing bar met at {landing.bar_met_at:,} env steps" if landing.bar_met_at else "landing bar not met"
            )
            extra = (
                f"Best landing evaluation at {best['timesteps']:,} env steps: return {best['return_mean']:.1f}, "
                f"landed {best['outcome_shares']['landed']:.0%}, crashed {best['outcome_shares']['crashed']:.0%} "
                f"({bar}); it is best_model.zip, shown with --load-best."
            )
        model_path = Path(f"{self.save_path}/{self.env_name}.zip")
        print(progress.summary(model, model_path, self.env_name.gym_id, solved, extra))


def _without_password(url: str) -> str:
    """A database URL fit for an error message: ``postgresql://user:***@host/db``."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def _check_optuna_storage(
    storage: str | None, study_name: str | None, trial_id: int | None, optimize: bool = False
) -> None:
    """Stop with a one-line message, before any training, when ``--storage``/``--study-name``/``--trial-id``
    cannot work (Optuna would otherwise fail later with a bare ``KeyError``, ``IsADirectoryError`` or a database
    driver's traceback, or, for a study that minimizes, silently tune towards the worst return)."""
    if storage is None:
        if trial_id is not None:
            _fail(f"--trial-id {trial_id} needs --storage and --study-name")
        return
    shown = _without_password(storage)
    is_journal = storage.endswith(".log")
    if is_journal:  # a journal file, shared by the workers
        journal = Path(storage)
        if journal.is_dir():
            _fail(f"--storage {storage} is a directory; pass a journal file such as logs/study.log")
        if journal.exists() and not os.access(journal, os.R_OK | os.W_OK):
            _fail(f"--storage {storage} is not readable and writable by this user")
        if trial_id is not None and not journal.exists():
            _fail(f"--storage {storage} does not exist, so there is no trial {trial_id} to load")
        if not journal.exists():
            return  # the first worker creates it
    if trial_id is not None and study_name is None:
        _fail("--trial-id needs --study-name")
    backend = (
        optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage)) if is_journal else storage
    )
    try:
        summaries = {summary.study_name: summary for summary in optuna.get_all_study_summaries(storage=backend)}
    except Exception as error:
        message = _without_password(f"{type(error).__name__}: {error}".splitlines()[0])
        _fail(f"cannot read the Optuna storage {shown} ({message})")
    if optimize and study_name in summaries and summaries[study_name].direction != optuna.study.StudyDirection.MAXIMIZE:
        _fail(
            f"study {study_name!r} in {shown} minimizes, but rl-zoo3 reports returns to maximize; "
            "create it with `optuna create-study ... --direction maximize`"
        )
    if trial_id is None:
        return
    if study_name not in summaries:
        _fail(f"no study named {study_name!r} in {shown}; it holds: {', '.join(summaries) or 'no study'}")
    trials = optuna.load_study(study_name=study_name, storage=backend).trials
    if not 0 <= trial_id < len(trials):
        _fail(f"study {study_name!r} has trials 0..{len(trials) - 1}, not {trial_id}")


def register() -> None:
    """Make rl-zoo3 know ``soft_dqn`` (idempotent)."""
    rl_zoo3.utils.ALGOS[ALGO_NAME] = SoftUpdateDQN
    rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER[ALGO_NAME] = sample_soft_dqn_params
    rl_zoo3.hyperparams_opt.HYPERPARAMS_CONVERTER[ALGO_NAME] = convert_soft_dqn_params
    _patch_init()
    for method_name, wrapper in _PATCHES.items():
        _install_patch(method_name, wrapper)


register()
