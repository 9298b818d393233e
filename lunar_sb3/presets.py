"""The named configurations: the algorithm's zoo name, the packaged hyperparameter files, the benchmark's agents.

One place for each name: ``soft_dqn`` (the zoo's ``--algo``), the YAML presets that ship with the package
(``soft_dqn.yml`` = the lab, ``soft_dqn_tuned.yml``, ``soft_dqn_robust.yml``) and the agents the benchmarks and
pictures compare, with their labels.
"""

from pathlib import Path
from typing import Any

import yaml
from stable_baselines3 import DQN

from lunar_sb3.envs import LAB_ENV_ID
from lunar_sb3.soft_dqn import SoftUpdateDQN
from lunar_sb3.soft_dqn.model_file import SOFT_DQN

ALGO_NAME = SOFT_DQN
"""The name rl-zoo3 knows the algorithm by (``--algo soft_dqn``) and the folder of its runs under ``-f``."""

_PACKAGE_DIR = Path(__file__).parent


def hyperparams_path(name: str = f"{ALGO_NAME}.yml") -> Path:
    """The YAML shipped in the wheel (``lunar_sb3/hyperparams``), or the repository's ``hyperparams/``."""
    for folder in (_PACKAGE_DIR / "hyperparams", _PACKAGE_DIR.parent / "hyperparams"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"lunar_sb3: hyperparameter file {name} is missing from {_PACKAGE_DIR}")


LAB_NET = dict(net_arch=[64, 64])
# SB3's DQN as close to the lab as it allows: same network, lr, memory, minibatch, γ, τ and C; its own
# linear ε schedule (1.0 → 0.01 over the first 10 % of the step budget) and its default loss (Huber).
SB3_LAB = dict(
    learning_rate=1e-3,
    buffer_size=100_000,
    learning_starts=64,
    batch_size=64,
    gamma=0.995,
    tau=1e-3,
    train_freq=4,
    gradient_steps=1,
    target_update_interval=4,
    exploration_initial_eps=1.0,
    exploration_final_eps=0.01,
    exploration_fraction=0.1,
    policy_kwargs=LAB_NET,
)
# rl-zoo3's tuned DQN hyperparameters for LunarLander (hyperparams/dqn.yml)
SB3_ZOO_TUNED = dict(
    learning_rate=6.3e-4,
    batch_size=128,
    buffer_size=50_000,
    learning_starts=0,
    gamma=0.99,
    target_update_interval=250,
    train_freq=4,
    gradient_steps=-1,
    exploration_fraction=0.12,
    exploration_final_eps=0.1,
    policy_kwargs=dict(net_arch=[256, 256]),
)
# agent name -> (class, keyword arguments, or the name of a hyperparameter YAML shipped with lunar_sb3)
AGENTS: dict[str, tuple[type, dict[str, Any] | str]] = {
    "soft_dqn": (SoftUpdateDQN, {}),
    "soft_dqn_tuned": (SoftUpdateDQN, "soft_dqn_tuned.yml"),
    "sb3_dqn": (DQN, SB3_LAB),
    "sb3_dqn_zoo": (DQN, SB3_ZOO_TUNED),
    # Rainbow-lite ablation: each component alone on the lab's defaults, then all of them together
    "double": (SoftUpdateDQN, dict(double_q=True)),
    "dueling": (SoftUpdateDQN, dict(dueling=True)),
    "prioritized": (SoftUpdateDQN, dict(prioritized_replay=True)),
    "nstep3": (SoftUpdateDQN, dict(n_steps=3)),
    "rainbow_lite": (SoftUpdateDQN, dict(double_q=True, dueling=True, prioritized_replay=True, n_steps=3)),
}
LABELS = {
    "soft_dqn": "SoftUpdateDQN (defaults)",
    "soft_dqn_tuned": "SoftUpdateDQN (tuned preset)",
    "sb3_dqn": "SB3 DQN, lab settings",
    "sb3_dqn_zoo": "SB3 DQN, rl-zoo3 tuned",
    "double": "+ Double DQN",
    "dueling": "+ dueling",
    "prioritized": "+ prioritized replay",
    "nstep3": "+ 3-step returns",
    "rainbow_lite": "rainbow-lite (all four)",
}


def agent_kwargs(agent: str) -> tuple[type, dict[str, Any]]:
    """The class and constructor arguments of an agent; a YAML preset is read as rl-zoo3 would read it."""
    algo_class, kwargs = AGENTS[agent]
    if isinstance(kwargs, str):
        entry = yaml.safe_load(hyperparams_path(kwargs).read_text())[LAB_ENV_ID]
        kwargs = {k: v for k, v in entry.items() if k not in ("n_timesteps", "policy", "callback")}
        if isinstance(kwargs.get("policy_kwargs"), str):
            kwargs["policy_kwargs"] = eval(kwargs["policy_kwargs"])  # the zoo's convention: a Python expression
    return algo_class, kwargs
