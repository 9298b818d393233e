"""Evaluate a trained lander greedily and report how its episodes end.

``python -m lunar_sb3.evaluate MODEL.zip [--env LunarLander-v2] [-n 100] [--seed S] [--json out.json]``

The mean return says whether a model is good; the outcome shares (from ``LandingOutcome``) say *why* it is not:
crashing, drifting off screen, hovering until the time limit or landing beside the pad need different fixes.
Episode i is reset with seed ``seed + i`` and actions are greedy, so a report can be reproduced exactly.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import DQN
from stable_baselines3.common.base_class import BaseAlgorithm

from lunar_sb3.envs import LAB_ENV_ID
from lunar_sb3.landing import OUTCOMES, LandingOutcome
from lunar_sb3.soft_dqn import SoftUpdateDQN

SOLVED_RETURN = 200.0
"""An episode counts as solved at this return (the lab's and gymnasium's threshold)."""

# Attributes that SoftUpdateDQN sets and saves but SB3's DQN does not (DQN does save `exploration_schedule`).
_SOFT_UPDATE_DQN_KEYS = frozenset({"exploration_decay", "finished_episodes"})


def evaluate_model(model: BaseAlgorithm, env_id: str = LAB_ENV_ID, n_episodes: int = 100, seed: int = 0) -> dict:
    """Play ``n_episodes`` greedy episodes (episode i reset with ``seed + i``) and summarise them.

    Returns ``{"summary": {...}, "episodes": {...}}``: the summary has ``return_mean``, ``return_std``,
    ``solved_share`` (return >= 200), ``outcome_shares`` (one entry per name in ``OUTCOMES``), ``length_mean``,
    ``main_engine_fires_mean`` and ``side_engine_fires_mean``; ``episodes`` holds the per-episode lists
    ``returns``, ``lengths``, ``outcomes``, ``main_engine_fires`` and ``side_engine_fires``.
    """
    if n_episodes < 1:
        raise ValueError(f"n_episodes={n_episodes!r} must be >= 1")
    env = LandingOutcome(gym.make(env_id, render_mode=None))
    episodes: dict[str, list] = {
        k: [] for k in ("returns", "lengths", "outcomes", "main_engine_fires", "side_engine_fires")
    }
    try:
        for i in range(n_episodes):
            obs, _ = env.reset(seed=seed + i)
            episode_return, length, done = 0.0, 0, False
            while not done:
                action, _ = model.predict(obs, deterministic=True)
                obs, reward, terminated, truncated, info = env.step(action)
                episode_return += float(reward)
                length += 1
                done = terminated or truncated
            episodes["returns"].append(episode_return)
            episodes["lengths"].append(length)
            episodes["outcomes"].append(info["outcome"])
            episodes["main_engine_fires"].append(info["main_engine_fires"])
            episodes["side_engine_fires"].append(info["side_engine_fires"])
    finally:
        env.close()
    returns = np.asarray(episodes["returns"])
    summary = {
        "env_id": env_id,
        "n_episodes": n_episodes,
        "seed": seed,
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "solved_share": float(np.mean(returns >= SOLVED_RETURN)),
        "outcome_shares": {name: episodes["outcomes"].count(name) / n_episodes for name in OUTCOMES},
        "length_mean": float(np.mean(episodes["lengths"])),
        "main_engine_fires_mean": float(np.mean(episodes["main_engine_fires"])),
        "side_engine_fires_mean": float(np.mean(episodes["side_engine_fires"])),
    }
    return {"summary": summary, "episodes": episodes}


def format_summary(summary: dict, title: str = "") -> str:
    """The summary as a small text table."""
    rows = [
        ("return", f"{summary['return_mean']:.1f} ± {summary['return_std']:.1f}"),
        (f"return >= {SOLVED_RETURN:g}", f"{100 * summary['solved_share']:.1f} %"),
        *((name, f"{100 * share:.1f} %") for name, share in summary["outcome_shares"].items()),
        ("episode length", f"{summary['length_mean']:.1f}"),
        ("main engine fires", f"{summary['main_engine_fires_mean']:.1f}"),
        ("side engine fires", f"{summary['side_engine_fires_mean']:.1f}"),
    ]
    header = title or f"{summary['n_episodes']} greedy episodes on {summary['env_id']}"
    return "\n".join([header, *(f"  {name:<18} {value:>16}" for name, value in rows)])


def load_model(path: str | Path) -> BaseAlgorithm:
    """Load a ``SoftUpdateDQN`` or SB3 ``DQN`` zip, choosing the class from the zip's saved attributes.

    ``SoftUpdateDQN.load`` would also accept a plain ``DQN`` zip (and vice versa), silently giving it the other
    class's defaults, so the class is decided from the data instead: only a ``SoftUpdateDQN`` saves the
    attributes in ``_SOFT_UPDATE_DQN_KEYS``.

    :raises ValueError: if the file is not an SB3 model zip
    """
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a Stable-Baselines3 model zip ({error})") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a Stable-Baselines3 model zip (its 'data' is not a JSON object)")
    cls = SoftUpdateDQN if _SOFT_UPDATE_DQN_KEYS & data.keys() else DQN
    try:
        return cls.load(path, device="cpu")
    except Exception as error:  # anything SB3 or torch raise on a broken or foreign zip
        raise ValueError(
            f"{path} could not be loaded as a {cls.__name__} model ({type(error).__name__}: {error})"
        ) from error


def _check_spaces(model: BaseAlgorithm, env_id: str) -> None:
    """Fail with a readable message if the model cannot act in ``env_id`` (e.g. a CartPole model)."""
    env = gym.make(env_id, render_mode=None)
    try:
        for kind in ("observation", "action"):
            model_space, env_space = getattr(model, f"{kind}_space"), getattr(env, f"{kind}_space")
            if model_space != env_space:
                ours, theirs = _describe(model_space), _describe(env_space)
                if ours == theirs:  # same shape, other bounds: only the full description tells them apart
                    ours, theirs = str(model_space), str(env_space)
                raise ValueError(f"the model's {kind} space {ours} does not match {env_id}'s {theirs}")
    finally:
        env.close()


def _describe(space: gym.Space) -> str:
    """A space in a few words: bounds of a Box are noise in an error message, its shape is what differs."""
    if isinstance(space, gym.spaces.Box):
        return f"Box(shape={space.shape}, dtype={space.dtype})"
    return str(space)


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; every user error ends with a one-line message on stderr and exit status 1."""
    parser = argparse.ArgumentParser(
        prog="python -m lunar_sb3.evaluate", description="Greedy evaluation of a SoftUpdateDQN or DQN lander."
    )
    parser.add_argument("model", help="path to a SoftUpdateDQN or SB3 DQN .zip")
    parser.add_argument("--env", default=LAB_ENV_ID, help=f"gymnasium env id (default: {LAB_ENV_ID})")
    parser.add_argument("-n", "--n-episodes", type=int, default=100, help="number of episodes (default: 100)")
    parser.add_argument("--seed", type=int, default=0, help="episode i resets with seed SEED+i (default: 0)")
    parser.add_argument("--json", type=Path, help="also write the summary and per-episode results here")
    args = parser.parse_args(argv)
    # gymnasium warns that the lab's id LunarLander-v2 is "out of date" (it is v3's dynamics, see lunar_sb3.envs);
    # on the command line that is noise around the report or an error message.
    warnings.filterwarnings("ignore", message=r".*LunarLander-v2 is out of date", category=DeprecationWarning)
    torch.set_num_threads(1)  # greedy play of a small MLP gains nothing from threads on a shared machine

    def fail(message: str) -> SystemExit:
        return SystemExit(f"{parser.prog}: error: {' '.join(message.split())}")

    if args.n_episodes < 1:
        raise fail(f"-n must be >= 1, got {args.n_episodes}")
    path = Path(args.model)
    if not path.is_file() and Path(f"{path}.zip").is_file():  # like SB3's load, "model" finds "model.zip"
        path = Path(f"{path}.zip")
    if not path.is_file():
        raise fail(f"no such model file: {args.model}")
    try:
        gym.spec(args.env)
    except gym.error.Error as error:
        raise fail(f"unknown env id {args.env!r} ({error})") from None
    try:
        model = load_model(path)
        _check_spaces(model, args.env)
        result = evaluate_model(model, env_id=args.env, n_episodes=args.n_episodes, seed=args.seed)
    except (ValueError, TypeError) as error:  # TypeError: LandingOutcome on an env that is not a LunarLander
        raise fail(str(error)) from None

    title = (
        f"{path.name} ({type(model).__name__}) on {args.env}: {args.n_episodes} greedy episodes, "
        f"seeds {args.seed}..{args.seed + args.n_episodes - 1}"
    )
    print(format_summary(result["summary"], title))
    if args.json is not None:
        report = {"model": str(path), "model_class": type(model).__name__, **result}
        try:
            args.json.write_text(json.dumps(report, indent=2) + "\n")
        except OSError as error:
            raise fail(f"cannot write {args.json}: {error}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
