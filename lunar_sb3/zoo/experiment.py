"""Wrappers of rl-zoo3's ``ExperimentManager`` that act only for ``--algo soft_dqn``.

They add what a learner expects from the zoo's commands: our YAML by default, early one-line errors, checkpoints
with the replay memory, resuming with the step counter, a compact progress line and an end-of-run summary.
"""

import functools
import inspect
import os
import pickle
import re
import shutil
import signal
import tempfile
import threading
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import rl_zoo3.exp_manager
import torch as th
from stable_baselines3.common.callbacks import CheckpointCallback

from lunar_sb3.callbacks import StopTrainingOnSolved, TrainingProgress
from lunar_sb3.checkpoints import WholeCheckpointCallback, is_checkpoint, is_intact, newest_intact_checkpoint
from lunar_sb3.envs import is_lunar_lander
from lunar_sb3.evaluation import evaluate_model
from lunar_sb3.landing_eval import LandingEvalCallback
from lunar_sb3.presets import ALGO_NAME, hyperparams_path
from lunar_sb3.soft_dqn.model_file import check_soft_dqn_zip
from lunar_sb3.zoo.errors import check_optuna_storage, fail
from lunar_sb3.zoo.hyperparams import check_hyperparameter_names, read_switches

LANDING_CHECK_EPISODES = 20
"""Greedy episodes of the landing check at the end of a run without a ``LandingEvalCallback`` (a few seconds)."""
LANDING_CHECK_SEED = 90_000
"""Episode i of the landing check is reset with seed 90,000 + i: away from the robust preset's selection and tests."""
LANDS_EVERY_TIME = 0.95
"""Below this landed share the summary suggests the robust preset."""

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
                fail(f"-conf {arguments['config']}: no such file")
            check_optuna_storage(
                arguments.get("storage"),
                arguments.get("study_name"),
                arguments.get("trial_id"),
                optimize=bool(arguments.get("optimize_hyperparameters")),
            )
            args = arguments.get("args")
            n_timesteps = getattr(args, "n_timesteps", -1)
            if n_timesteps == 0 or n_timesteps < -1:  # the zoo would silently train the YAML's whole budget
                fail(f"-n {n_timesteps}: the number of env steps must be >= 1 (leave -n out for the YAML's budget)")
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
    hyperparams = read_switches(hyperparams)
    self._lunar_sb3_keep_replay_buffers = hyperparams.pop("keep_replay_buffers", 1)
    keep = self._lunar_sb3_keep_replay_buffers
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < -1:
        fail(f"keep_replay_buffers={keep!r} must be -1 (all), 0 (none) or the number of newest checkpoints")
    self._lunar_sb3_landing_check = hyperparams.pop("landing_check_episodes", LANDING_CHECK_EPISODES)
    if not (isinstance(self._lunar_sb3_landing_check, int) and self._lunar_sb3_landing_check >= 0):
        fail(f"landing_check_episodes={self._lunar_sb3_landing_check!r} must be an integer >= 0 (0 turns it off)")
    return hyperparams, saved


@_patch("setup_experiment")
def _setup_experiment(original: Callable[..., Any], self: Any) -> Any:
    """Bad values (``tau:5``), an env with continuous actions, a broken ``-i`` file: one line, not a traceback."""
    if self.continue_training:
        _check_trained_agent(Path(self.trained_agent))
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
        _release_run_folder(self)
        fail(f"{type(error).__name__}: {error}")
    except BaseException:
        _release_run_folder(self)  # a rejected command leaves no run folder behind
        raise
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _check_trained_agent(agent: Path) -> None:
    """``-i``: a SoftUpdateDQN zip, and for a checkpoint an intact one (else name the newest intact one)."""
    try:
        check_soft_dqn_zip(agent)
        if is_checkpoint(agent) and not is_intact(agent):
            raise ValueError(f"{agent} is an incomplete checkpoint (training stopped while it was written)")
    except ValueError as error:
        newest = newest_intact_checkpoint(agent.parent) if is_checkpoint(agent) else None
        fail(f"-i {error}" + (f"; the newest intact checkpoint is {newest}" if newest else ""))


@_patch("create_log_folder")
def _create_log_folder(original: Callable[..., Any], self: Any) -> None:
    """Claim the run folder atomically: runs started together with one ``-f`` get distinct folders.

    rl-zoo3 picks ``<ENV>_<latest + 1>`` when the command starts and creates it with ``exist_ok=True``, so two runs
    started in the same second share one folder (one's model beside the other's monitor file). Here the folder is
    created with ``mkdir`` (create-or-fail), and a folder someone else created first means trying the next number.
    """
    if self.optimize_hyperparameters:
        return original(self)
    save_path = Path(self.save_path)
    match = re.fullmatch(re.escape(str(self.env_name)) + r"_(\d+)(.*)", save_path.name)
    run_id, suffix = (int(match[1]), match[2]) if match else (1, "")  # suffix: the zoo's --uuid
    save_path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        save_path = save_path.parent / f"{self.env_name}_{run_id}{suffix}"
        try:
            save_path.mkdir()
            break
        except FileExistsError:
            run_id += 1
    self._lunar_sb3_claimed = save_path
    self.save_path, self.params_path = str(save_path), str(save_path / str(self.env_name))
    os.makedirs(self.params_path, exist_ok=True)


def _release_run_folder(self: Any) -> None:
    """Delete the run folder this command claimed (only that one, and only while setting up)."""
    claimed = getattr(self, "_lunar_sb3_claimed", None)
    if claimed is not None:
        shutil.rmtree(claimed, ignore_errors=True)
        self._lunar_sb3_claimed = None


@_patch("create_callbacks")
def _create_callbacks(original: Callable[..., Any], self: Any) -> None:
    """Checkpoints (``--save-freq``) also save the replay memory, so a killed run resumes with it.

    A ``LandingEvalCallback`` from the YAML without a folder keeps its best model in the run folder, where
    ``--load-best`` looks; the zoo's own ``EvalCallback`` (``--eval-freq``) then still writes ``evaluations.npz``
    but no longer saves ``best_model.zip`` over it.
    """
    from stable_baselines3.common.callbacks import EvalCallback

    original(self)
    run_folder = Path(self.save_path)
    landing = [c for c in self.callbacks if isinstance(c, LandingEvalCallback)]
    for callback in landing:
        if callback.best_model_save_path is None:
            callback.best_model_save_path = run_folder
    landing_in_run = any(c.best_model_save_path == run_folder for c in landing)
    for i, callback in enumerate(self.callbacks):
        if type(callback) is CheckpointCallback:  # the zoo's --save-freq: whole-or-absent, with the memory
            self.callbacks[i] = WholeCheckpointCallback(
                callback.save_freq,
                callback.save_path,
                callback.name_prefix,
                save_replay_buffer=True,
                save_vecnormalize=True,
                keep_replay_buffers=getattr(self, "_lunar_sb3_keep_replay_buffers", 1),
                verbose=callback.verbose,
            )
        if isinstance(callback, EvalCallback) and landing_in_run:
            callback.best_model_save_path = None
    if not self.optimize_hyperparameters:
        stop_rule = next((c for c in self.callbacks if isinstance(c, StopTrainingOnSolved)), None)
        self._lunar_sb3_progress = TrainingProgress(stop_rule=stop_rule, verbose=self.verbose)
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
        else:
            print(
                f"Note: {agent.name} kept no replay memory (by default only the newest checkpoint keeps it, see "
                "keep_replay_buffers); training continues with an empty one"
            )
    return model


@_patch("learn")
def _learn(original: Callable[..., Any], self: Any, model: Any) -> None:
    """Continued training (``-i``) keeps counting env steps; a Ctrl-C is remembered for the summary.

    rl-zoo3 catches the ``KeyboardInterrupt`` and saves the model as if training had ended; the summary must not
    then report a finished run.
    """
    progress = getattr(self, "_lunar_sb3_progress", None)
    previous = signal.getsignal(signal.SIGINT)

    def interrupted(signum: int, frame: Any) -> None:
        if progress is not None:
            progress.interrupted = True
        raise KeyboardInterrupt

    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:
        signal.signal(signal.SIGINT, interrupted)
    model._keep_step_counter = self.continue_training  # an attribute: checkpoints pickle the model's dict
    try:
        return original(self, model)
    finally:
        model._keep_step_counter = False
        if in_main_thread:
            signal.signal(signal.SIGINT, previous)


@_patch("save_trained_model")
def _save_trained_model(original: Callable[..., Any], self: Any, model: Any) -> None:
    """After the zoo saves: elapsed time, solved or not, how the greedy policy lands, the commands to try next."""
    original(self, model)
    progress = getattr(self, "_lunar_sb3_progress", None)
    if progress is not None and self.verbose >= 1:
        solved = next((c for c in self.callbacks if isinstance(c, StopTrainingOnSolved)), None)
        landing = next((c for c in self.callbacks if isinstance(c, LandingEvalCallback)), None)
        env_id = self.env_name.gym_id
        if landing is not None:
            bar = f"landing bar met at {landing.bar_met_at:,} env steps" if landing.bar_met_at else "bar not met"
            extra = f"{landing.kept_line()} ({bar}; it is best_model.zip, shown with --load-best)"
        else:
            episodes = getattr(self, "_lunar_sb3_landing_check", LANDING_CHECK_EPISODES)
            extra = landing_check(model, env_id, episodes) if is_lunar_lander(env_id) and episodes else ""
        model_path = Path(f"{self.save_path}/{self.env_name}.zip")
        kept = landing is not None and landing.best is not None and landing.best["saved"]
        print(progress.summary(model, model_path, env_id, solved, extra, load_best=kept))


def landing_check(model: Any, env_id: str, n_episodes: int) -> str:
    """How the final greedy policy lands on a few fixed episodes, and the robust preset when it lands too rarely.

    "Solved" is a mean over *training* episodes; whether the greedy policy lands is another question, and a
    learner should see the difference on their own run.
    """
    with warnings.catch_warnings():  # LunarLander-v2 is the lab's id on purpose; the zoo hides this warning too
        warnings.filterwarnings("ignore", message=".*LunarLander-v2 is out of date", category=DeprecationWarning)
        result = evaluate_model(
            model, env_id, n_episodes=n_episodes, seed=LANDING_CHECK_SEED, vec_normalize=model.get_vec_normalize_env()
        )
    summary = result["summary"]
    shares = summary["outcome_shares"]
    last_seed = LANDING_CHECK_SEED + n_episodes - 1
    line = (
        f"Landing check, {n_episodes} greedy episodes (seeds {LANDING_CHECK_SEED}-{last_seed}, -params "
        f"landing_check_episodes:0 turns it off): landed {shares['landed']:.0%}, beside the pad "
        f"{shares['landed_off_pad']:.0%}, crashed {shares['crashed']:.0%}, out of bounds "
        f"{shares['out_of_bounds']:.0%}, still flying at the time limit {shares['timeout']:.0%}; "
        f"mean return {summary['return_mean']:.1f}."
    )
    if shares["landed"] < LANDS_EVERY_TIME:
        line += (
            f"\nIt lands less than {LANDS_EVERY_TIME:.0%} of the time. For a lander that lands, train the robust "
            f"preset: python -m rl_zoo3.train --algo soft_dqn --env {env_id} -conf "
            f"{hyperparams_path('soft_dqn_robust.yml')}"
        )
    return line


def install_patches() -> None:
    """Install every wrapper once (idempotent)."""
    _patch_init()
    for method_name, wrapper in _PATCHES.items():
        _install_patch(method_name, wrapper)
