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
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import rl_zoo3.exp_manager
import torch as th
from stable_baselines3.common.callbacks import CheckpointCallback

from lunar_sb3 import StopTrainingOnSolved
from lunar_sb3.callbacks import TrainingProgress
from lunar_sb3.robust import LandingEvalCallback
from lunar_sb3.zoo.errors import ALGO_NAME, check_optuna_storage, fail
from lunar_sb3.zoo.hyperparams import check_hyperparameter_names, hyperparams_path

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
            fail(f"-i {error}")
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
        fail(f"{type(error).__name__}: {error}")
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


def install_patches() -> None:
    """Install every wrapper once (idempotent)."""
    _patch_init()
    for method_name, wrapper in _PATCHES.items():
        _install_patch(method_name, wrapper)
