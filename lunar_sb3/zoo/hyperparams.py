"""The ``soft_dqn`` hyperparameters as rl-zoo3 sees them: the packaged YAML, the Optuna space, the key checks."""

import difflib
import inspect
from typing import Any

import optuna

from lunar_sb3.soft_dqn import SoftUpdateDQN
from lunar_sb3.zoo.errors import fail


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
# Keys that only `--algo soft_dqn` reads (taken out before the model is built)
PLUGIN_KEYS = frozenset({"keep_replay_buffers", "landing_check_episodes"})
"""``keep_replay_buffers``: how many of the newest ``--save-freq`` checkpoints keep their replay memory (default 1,
-1 keeps all). ``landing_check_episodes``: greedy episodes of the landing check at the end of a LunarLander run
(default 20, 0 turns it off)."""
# Constructor arguments that the zoo sets from its own command line
ZOO_SET_ARGUMENTS = frozenset({"env", "tensorboard_log", "seed", "verbose", "device", "_init_setup_model"})


def known_hyperparameters() -> frozenset[str]:
    """Every key a ``soft_dqn`` YAML entry or ``-params`` may hold."""
    constructor = set(inspect.signature(SoftUpdateDQN.__init__).parameters) - {"self"} - ZOO_SET_ARGUMENTS
    return frozenset(constructor | ZOO_KEYS | PLUGIN_KEYS)


def switch_names() -> frozenset[str]:
    """The on/off options of ``SoftUpdateDQN`` (parameters annotated ``bool``)."""
    parameters = inspect.signature(SoftUpdateDQN.__init__).parameters.values()
    return frozenset(p.name for p in parameters if p.annotation in (bool, "bool") and not p.name.startswith("_"))


def read_switches(hyperparams: dict[str, Any]) -> dict[str, Any]:
    """``true``/``false`` spelled in any case (a YAML string, a quoted ``-params`` value) become booleans.

    Any other value is left for the constructor, which refuses everything but ``True``/``False`` with one line:
    the string ``"False"`` is truthy, so passing it on would silently switch the option on.
    """
    spelled = {"true": True, "false": False}
    return {
        key: spelled[value.strip().lower()]
        if key in switch_names() and isinstance(value, str) and value.strip().lower() in spelled
        else value
        for key, value in hyperparams.items()
    }


def check_hyperparameter_names(hyperparams: dict[str, Any], source: str) -> None:
    """Stop on a key ``SoftUpdateDQN`` does not know, naming it and the closest known key."""
    known = known_hyperparameters()
    for key in hyperparams:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(known))}"
            fail(f"unknown hyperparameter {key!r} in {source}{hint}")
