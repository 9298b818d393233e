"""The agents a benchmark compares: SoftUpdateDQN presets and SB3's DQN, on the same seeded env."""

import gymnasium as gym
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from lunar_sb3.envs import LAB_ENV_ID
from lunar_sb3.presets import AGENTS, LABELS, SB3_LAB, SB3_ZOO_TUNED, agent_kwargs

# The agents and their settings live in lunar_sb3.presets (pictures label them too); importable here as before.
__all__ = ["AGENTS", "LABELS", "SB3_LAB", "SB3_ZOO_TUNED", "EpisodeRecorder", "agent_kwargs", "make_lab_env"]


class EpisodeRecorder(BaseCallback):
    """Keeps every training episode's return and the env step at which it ended (the learning curve)."""

    def __init__(self) -> None:
        super().__init__()
        self.returns: list[float] = []
        self.timesteps: list[int] = []

    def _on_step(self) -> bool:
        if np.any(self.locals["dones"]):
            for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True):
                if done and "episode" in info:
                    self.returns.append(round(float(info["episode"]["r"]), 2))
                    self.timesteps.append(self.num_timesteps)
        return True


def make_lab_env(seed: int) -> DummyVecEnv:
    """The training env every agent gets: LunarLander-v2, no rendering, Monitor statistics, seeded."""
    env = DummyVecEnv([lambda: Monitor(gym.make(LAB_ENV_ID))])
    env.seed(seed)
    return env
