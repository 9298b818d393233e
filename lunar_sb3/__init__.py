"""The "Deep Q-Learning - Lunar Lander" lab's algorithm as a Stable-Baselines3 / rl-zoo3 plugin."""

from lunar_sb3.callbacks import StopTrainingOnSolved
from lunar_sb3.envs import register_lunar_lander_v2
from lunar_sb3.landing import OUTCOMES, LandingOutcome
from lunar_sb3.robust import LandingEvalCallback
from lunar_sb3.soft_dqn import SoftUpdateDQN
from lunar_sb3.version import __version__

register_lunar_lander_v2()

__all__ = ["OUTCOMES", "LandingEvalCallback", "LandingOutcome", "SoftUpdateDQN", "StopTrainingOnSolved", "__version__"]
