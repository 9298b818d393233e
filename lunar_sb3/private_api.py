"""The private or undocumented entry points of rl-zoo3, Stable-Baselines3 and torch that lunar_sb3 relies on.

All in one place, so that a release that moves one is found by a test (``tests/test_private_api.py`` checks every
entry against the installed versions, at the newest and at the lowest declared versions in CI) and reported to a
user in one sentence naming the installed version, instead of an ``AttributeError`` deep inside a wrapper.

What happens when one is missing: the zoo glue refuses to register (the start-up hook turns that into a warning);
torch's private kernels are optional, and the fast path falls back where they are missing.
"""

from __future__ import annotations

import importlib
from importlib import metadata

# dotted name -> what relies on it
REQUIRED: dict[str, str] = {
    # rl-zoo3: the ExperimentManager methods the zoo glue wraps (lunar_sb3/zoo/experiment.py) ...
    "rl_zoo3.exp_manager.ExperimentManager.__init__": "default YAML, early checks, one torch thread",
    "rl_zoo3.exp_manager.ExperimentManager.read_hyperparameters": "unknown keys, switches, trial 0",
    "rl_zoo3.exp_manager.ExperimentManager.setup_experiment": "one-line errors, no run folder when rejected",
    "rl_zoo3.exp_manager.ExperimentManager.create_log_folder": "run folders claimed atomically",
    "rl_zoo3.exp_manager.ExperimentManager.create_callbacks": "whole checkpoints, progress line",
    "rl_zoo3.exp_manager.ExperimentManager._load_pretrained_agent": "-i resumes with the checkpoint's memory",
    "rl_zoo3.exp_manager.ExperimentManager.learn": "-i keeps the step counter, Ctrl-C is remembered",
    "rl_zoo3.exp_manager.ExperimentManager.save_trained_model": "the end-of-run summary",
    "rl_zoo3.exp_manager.ExperimentManager.load_trial": "--trial-id 0",
    # ... and the registries it adds soft_dqn to, and the -params parser whose errors it rephrases
    "rl_zoo3.utils.ALGOS": "--algo soft_dqn",
    "rl_zoo3.utils.StoreDict.__call__": "one line for a -params value that is not Python",
    "rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER": "-optimize",
    "rl_zoo3.hyperparams_opt.HYPERPARAMS_CONVERTER": "--trial-id",
    # Stable-Baselines3: what the callbacks call beyond the documented API
    "stable_baselines3.common.callbacks.CheckpointCallback._checkpoint_path": "checkpoint names (checkpoints.py)",
    "stable_baselines3.common.buffers.NStepReplayBuffer": "n-step returns",
}
OPTIONAL: dict[str, str] = {
    "torch._foreach_lerp_": "all soft target updates in one call (else one lerp per tensor)",
    "torch._fused_adam_": "Adam(fused=True) on the general path (else torch's for-each Adam)",
}


def resolve(dotted: str) -> object:
    """The object ``dotted`` names (a module, then attributes), or raise AttributeError/ImportError."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            value: object = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        for name in parts[split:]:
            value = getattr(value, name)
        return value
    raise ImportError(f"no module in {dotted}")


def missing(names: dict[str, str]) -> list[str]:
    """The entries of ``names`` that the installed packages lack."""
    absent = []
    for dotted in names:
        try:
            resolve(dotted)
        except (ImportError, AttributeError):
            absent.append(dotted)
    return absent


def check_required(prefix: str) -> None:
    """Raise an ImportError naming the missing entry points of one package and its installed version."""
    wanted = {name: use for name, use in REQUIRED.items() if name.startswith(prefix + ".")}
    absent = missing(wanted)
    if absent:
        distribution = {"rl_zoo3": "rl_zoo3", "stable_baselines3": "stable_baselines3"}.get(prefix, prefix)
        try:
            version = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            version = "not installed"
        details = "; ".join(f"{name} ({wanted[name]})" for name in absent)
        raise ImportError(
            f"lunar_sb3 needs {details}, which {prefix} {version} does not have: install a version within the "
            "range pyproject.toml declares"
        )
