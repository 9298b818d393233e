"""The lab's definition of "solved", as a Stable-Baselines3 callback."""

from collections import deque

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback


class StopTrainingOnSolved(BaseCallback):
    """Stop training once the mean return of the last ``window`` training episodes reaches ``solved_threshold``.

    This is the lab's criterion (100 episodes, 200 points). It reads the ``Monitor`` episode statistics of the
    training env, so unlike SB3's ``StopTrainingOnRewardThreshold`` it needs no separate evaluation env.

    :param solved_threshold: mean return that counts as solved (the lab: 200)
    :param window: number of most recent training episodes averaged (the lab: 100)
    :param verbose: 1 prints a line when solved
    """

    def __init__(self, solved_threshold: float = 200.0, window: int = 100, verbose: int = 1) -> None:
        super().__init__(verbose)
        if window < 1:
            raise ValueError(f"StopTrainingOnSolved: window={window!r} must be an integer >= 1")
        self.solved_threshold = solved_threshold
        self.window = window
        self.returns: deque[float] = deque(maxlen=window)
        self.episodes = 0
        self.solved_at_episode: int | None = None
        self.solved_at_timestep: int | None = None

    def _on_step(self) -> bool:
        dones = self.locals["dones"]
        if not np.any(dones):
            return True
        for done, info in zip(dones, self.locals["infos"], strict=True):
            if done and "episode" in info:
                self.returns.append(float(info["episode"]["r"]))
                self.episodes += 1
        if len(self.returns) == self.window and np.mean(self.returns) >= self.solved_threshold:
            self.solved_at_episode = self.episodes
            self.solved_at_timestep = self.num_timesteps
            if self.verbose >= 1:
                print(
                    f"Solved: the last {self.window} episodes average {np.mean(self.returns):.1f} >= "
                    f"{self.solved_threshold:g} after {self.episodes} episodes ({self.num_timesteps} steps)"
                )
            return False
        return True
