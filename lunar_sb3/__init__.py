"""The "Deep Q-Learning - Lunar Lander" lab's algorithm as a Stable-Baselines3 / rl-zoo3 plugin."""

from typing import Any

from lunar_sb3.callbacks import StopTrainingOnSolved
from lunar_sb3.envs import register_lunar_lander_v2
from lunar_sb3.soft_dqn import SoftUpdateDQN
from lunar_sb3.version import __version__

register_lunar_lander_v2()

__all__ = ["OUTCOMES", "LandingEvalCallback", "LandingOutcome", "SoftUpdateDQN", "StopTrainingOnSolved", "__version__"]

# Public names whose modules import Box2D (through gymnasium's LunarLander): loaded on first use, so that
# ``import lunar_sb3`` (and the zoo's start-up) does not pay for the simulator.
_ON_FIRST_USE = {
    "OUTCOMES": "lunar_sb3.landing",
    "LandingOutcome": "lunar_sb3.landing",
    "LandingEvalCallback": "lunar_sb3.landing_eval",
}


def __getattr__(name: str) -> Any:
    if name in _ON_FIRST_USE:
        import importlib

        value = getattr(importlib.import_module(_ON_FIRST_USE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lunar_sb3' has no attribute {name!r}")
