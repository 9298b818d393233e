"""The lab's definition of "solved" and a learner-readable progress report, as Stable-Baselines3 callbacks."""

import time
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import HumanOutputFormat
from stable_baselines3.common.vec_env import VecEnv

from lunar_sb3.envs import is_lunar_lander


def env_reward_threshold(env: VecEnv | None) -> float | None:
    """The reward threshold of the (first) env in a VecEnv, from its gymnasium spec, or None."""
    if env is None:
        return None
    spec = env.get_attr("spec", indices=[0])[0]
    threshold = getattr(spec, "reward_threshold", None)
    return None if threshold is None else float(threshold)


class StopTrainingOnSolved(BaseCallback):
    """Stop training once the mean return of the last ``window`` training episodes reaches ``solved_threshold``.

    This is the lab's criterion (100 episodes, 200 points). It reads the ``Monitor`` episode statistics of the
    training env, so unlike SB3's ``StopTrainingOnRewardThreshold`` it needs no separate evaluation env.

    :param solved_threshold: mean return that counts as solved; None (default) takes the env's own reward
        threshold: 200 for LunarLander (the lab's), 475 for CartPole-v1
    :param window: number of most recent training episodes averaged (the lab: 100)
    :param verbose: 1 prints a line when solved
    """

    def __init__(self, solved_threshold: float | None = None, window: int = 100, verbose: int = 1) -> None:
        super().__init__(verbose)
        if window < 1:
            raise ValueError(f"StopTrainingOnSolved: window={window!r} must be an integer >= 1")
        self.solved_threshold = solved_threshold
        self.window = window
        self.returns: deque[float] = deque(maxlen=window)
        self.episodes = 0
        self.solved_at_episode: int | None = None
        self.solved_at_timestep: int | None = None

    def _init_callback(self) -> None:
        if self.solved_threshold is None:
            self.solved_threshold = env_reward_threshold(self.training_env)
            if self.solved_threshold is None:
                raise ValueError(
                    "StopTrainingOnSolved: the training env has no reward threshold; pass solved_threshold"
                )

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
    :param solved_threshold: the mean return the line compares against; None takes the one of ``stop_rule``, else
        the env's reward threshold (LunarLander: 200, the lab's), else the line shows no target
    :param stop_rule: the run's ``StopTrainingOnSolved``, whose threshold the line and the summary then use
    :param verbose: 0 prints nothing, 1 the compact lines, 2 the compact lines and SB3's tables
    """

    def __init__(
        self,
        every: int = 25,
        solved_threshold: float | None = None,
        stop_rule: StopTrainingOnSolved | None = None,
        verbose: int = 1,
    ) -> None:
        super().__init__(verbose)
        if every < 1:
            raise ValueError(f"TrainingProgress: every={every!r} must be an integer >= 1")
        self.every = every
        self.solved_threshold = solved_threshold
        self.stop_rule = stop_rule
        self.episodes = 0
        self.returns: deque[float] = deque(maxlen=100)  # the last 100 training returns, this one included
        self.start_time = time.perf_counter()
        self.start_timesteps = 0
        self.interrupted = False

    @property
    def threshold(self) -> float | None:
        """The "solved" bar this run is measured against, or None when the env has none."""
        if self.solved_threshold is not None:
            return self.solved_threshold
        if self.stop_rule is not None and self.stop_rule.solved_threshold is not None:
            return self.stop_rule.solved_threshold
        return env_reward_threshold(self.training_env) if self.model is not None else None

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
        for done, info in zip(dones, self.locals["infos"], strict=True):
            if not done:
                continue
            self.episodes += 1
            if "episode" in info:  # read here: SB3 adds it to ep_info_buffer only after the callbacks ran
                self.returns.append(float(info["episode"]["r"]))
            if self.verbose >= 1 and self.episodes % self.every == 0:
                print(self.line(), flush=True)
        return True

    def elapsed(self) -> float:
        return time.perf_counter() - self.start_time

    def line(self) -> str:
        """``episode 250 | 61,234 steps | mean return (last 100) 87.4 / 200 | ε 0.29 | 4,120 steps/s | 0:15``."""
        returns = self.returns
        mean = f"{np.mean(returns):7.1f}" if returns else "      –"
        elapsed = self.elapsed()
        speed = (self.num_timesteps - self.start_timesteps) / max(elapsed, 1e-9)
        target = "" if self.threshold is None else f" / {self.threshold:g}"
        return (
            f"episode {self.episodes:5d} | {self.num_timesteps:9,d} steps | "
            f"mean return (last {len(returns)}) {mean}{target} | "
            f"ε {self.model.exploration_rate:.3f} | {speed:6,.0f} steps/s | {_clock(elapsed)} elapsed"
        )

    def summary(
        self,
        model: Any,
        model_path: Path,
        env_id: str,
        solved: StopTrainingOnSolved | None,
        extra: str = "",
        load_best: bool = False,
    ) -> str:
        """What happened and what to run next, with this run's actual paths (``extra``: more result lines;
        ``load_best``: the commands show ``best_model.zip``, the kept lander, instead of the final model)."""
        returns = [info["r"] for info in model.ep_info_buffer]
        mean = f"{np.mean(returns):.1f}" if returns else "n/a"
        threshold = self.threshold
        if solved is not None and solved.solved_at_episode is not None:
            outcome = (
                f"Solved after {solved.solved_at_episode} episodes ({solved.solved_at_timestep:,} env steps): "
                f"the last {solved.window} episodes average >= {solved.solved_threshold:g}."
            )
        elif threshold is None:
            outcome = f"No 'solved' bar: {env_id} has no reward threshold. Last {len(returns)} episodes: mean {mean}."
        else:
            reached = len(returns) >= 100 and np.mean(returns) >= threshold
            relation = ">=" if reached else "<"
            verdict = "Solved (training went on past it)" if reached else "Not solved"
            outcome = f"{verdict}: the last {len(returns)} episodes average {mean} ({relation} {threshold:g})."
        run = model_path.parent
        algo_env = f"--algo soft_dqn --env {env_id}"
        logs, exp_id = run.parent.parent, run.name.rsplit("_", 1)[-1]
        ended = (
            f"Interrupted (Ctrl-C) at {model.num_timesteps:,} env steps; the model was saved as it was then"
            if self.interrupted
            else f"Training finished in {_clock(self.elapsed())}"
        )
        landing_tools = is_lunar_lander(env_id)  # evaluate reports landings: LunarLander only
        best = " --load-best" if load_best else ""
        evaluated = run / "best_model.zip" if load_best else run
        return "\n".join(
            [
                "",
                f"{ended} ({model.num_timesteps:,} env steps, {self.episodes} episodes this run"
                f"{f', {_clock(self.elapsed())}' if self.interrupted else ''}).",
                outcome,
                *([extra] if extra else []),
                f"Model: {model_path}",
                "Next:",
                f"  python -m rl_zoo3.enjoy {algo_env} -f {logs} --exp-id {exp_id}{best} --no-render -n 1000   # play",
                f"  python -m rl_zoo3.record_video {algo_env} -f {logs} --exp-id {exp_id}{best} -n 1000   # mp4",
                *[f"  python -m lunar_sb3.evaluate {evaluated}   # 100 greedy episodes, landings"] * landing_tools,
                f"  python -m lunar_sb3.plot {run}   # learning curve PNG beside the run",
            ]
        )


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"
