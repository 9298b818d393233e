"""The lab's definition of "solved" and a learner-readable progress report, as Stable-Baselines3 callbacks."""

import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import HumanOutputFormat


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


class TrainingProgress(BaseCallback):
    """A compact progress line every ``every`` episodes instead of SB3's log table every 4 episodes.

    Each line shows what a learner watches: episodes, env steps, the mean of the last 100 training returns
    against the lab's 200, ε, speed and elapsed time. SB3's full tables stay available with ``verbose=2``
    (they still go to CSV/tensorboard either way): at ``verbose < 2`` only the logger's stdout table is removed.

    :param every: episodes between two lines
    :param solved_threshold: the mean return the line compares against (the lab: 200)
    :param verbose: 0 prints nothing, 1 the compact lines, 2 the compact lines and SB3's tables
    """

    def __init__(self, every: int = 25, solved_threshold: float = 200.0, verbose: int = 1) -> None:
        super().__init__(verbose)
        if every < 1:
            raise ValueError(f"TrainingProgress: every={every!r} must be an integer >= 1")
        self.every = every
        self.solved_threshold = solved_threshold
        self.episodes = 0
        self.start_time = time.perf_counter()
        self.start_timesteps = 0

    def _on_training_start(self) -> None:
        self.start_time = time.perf_counter()
        self.start_timesteps = self.num_timesteps
        if self.verbose < 2:  # keep CSV/tensorboard, drop only the table printed to the terminal
            self.logger.output_formats = [
                fmt
                for fmt in self.logger.output_formats
                if not (isinstance(fmt, HumanOutputFormat) and not fmt.own_file)
            ]

    def _on_step(self) -> bool:
        dones = self.locals["dones"]
        if not np.any(dones):
            return True
        for _ in range(int(np.count_nonzero(dones))):
            self.episodes += 1
            if self.verbose >= 1 and self.episodes % self.every == 0:
                print(self.line(), flush=True)
        return True

    def elapsed(self) -> float:
        return time.perf_counter() - self.start_time

    def line(self) -> str:
        """``episode 250 | 61,234 steps | mean return (last 100) 87.4 / 200 | ε 0.29 | 4,120 steps/s | 0:15``."""
        returns = [info["r"] for info in self.model.ep_info_buffer]
        mean = f"{np.mean(returns):7.1f}" if returns else "      –"
        elapsed = self.elapsed()
        speed = (self.num_timesteps - self.start_timesteps) / max(elapsed, 1e-9)
        return (
            f"episode {self.episodes:5d} | {self.num_timesteps:9,d} steps | "
            f"mean return (last {len(returns)}) {mean} / {self.solved_threshold:g} | "
            f"ε {self.model.exploration_rate:.3f} | {speed:6,.0f} steps/s | {_clock(elapsed)} elapsed"
        )

    def summary(
        self, model: Any, model_path: Path, env_id: str, solved: StopTrainingOnSolved | None, extra: str = ""
    ) -> str:
        """What happened and what to run next, with this run's actual paths (``extra``: more result lines)."""
        if solved is not None and solved.solved_at_episode is not None:
            outcome = (
                f"Solved after {solved.solved_at_episode} episodes ({solved.solved_at_timestep:,} env steps): "
                f"the last {solved.window} episodes average >= {solved.solved_threshold:g}."
            )
        else:
            returns = [info["r"] for info in model.ep_info_buffer]
            reached = bool(returns) and len(returns) >= 100 and np.mean(returns) >= self.solved_threshold
            mean = f"{np.mean(returns):.1f}" if returns else "n/a"
            relation = ">=" if reached else "<"
            verdict = "Solved (training went on past it)" if reached else "Not solved"
            outcome = (
                f"{verdict}: the last {len(returns)} episodes average {mean} ({relation} {self.solved_threshold:g})."
            )
        run = model_path.parent
        algo_env = f"--algo soft_dqn --env {env_id}"
        logs, exp_id = run.parent.parent, run.name.rsplit("_", 1)[-1]
        return "\n".join(
            [
                "",
                f"Training finished in {_clock(self.elapsed())} ({model.num_timesteps:,} env steps, "
                f"{self.episodes} episodes this run).",
                outcome,
                *([extra] if extra else []),
                f"Model: {model_path}",
                "Next:",
                f"  python -m rl_zoo3.enjoy {algo_env} -f {logs} --exp-id {exp_id} --no-render -n 1000   # play",
                f"  python -m rl_zoo3.record_video {algo_env} -f {logs} --exp-id {exp_id} -n 1000   # mp4",
                f"  python -m lunar_sb3.evaluate {run}   # 100 greedy episodes, landing outcomes",
                f"  python -m lunar_sb3.plot {run}   # learning curve PNG beside the run",
            ]
        )


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
