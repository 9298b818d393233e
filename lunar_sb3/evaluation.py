"""Greedy evaluation of a trained lander: episodes, landing outcomes, the model and its normalisation.

The library half of ``python -m lunar_sb3.evaluate`` (which adds the command line and the pictures): the robust
preset's ``LandingEvalCallback``, the zoo's landing check, the benchmarks and the Hub package all score models here.
Episode i of an evaluation is reset with seed ``seed + i`` and actions are greedy, so a report can be reproduced
exactly. A model trained on ``VecNormalize``-d observations only makes sense on observations normalised with its
saved statistics: ``find_vec_normalize`` and ``load_vec_normalize`` find and freeze them.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import yaml
from stable_baselines3 import DQN
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from lunar_sb3.envs import LAB_ENV_ID
from lunar_sb3.landing import OUTCOMES, LandingOutcome, greedy_episodes
from lunar_sb3.soft_dqn import SoftUpdateDQN
from lunar_sb3.soft_dqn.model_file import SB3_DQN, SOFT_DQN, saved_algorithm

SOLVED_RETURN = 200.0
"""An episode counts as solved at this return (the lab's and gymnasium's threshold)."""

VECNORMALIZE_FILE = "vecnormalize.pkl"


def evaluate_model(
    model: BaseAlgorithm,
    env_id: str = LAB_ENV_ID,
    n_episodes: int = 100,
    seed: int = 0,
    vec_normalize: VecNormalize | None = None,
) -> dict:
    """Play ``n_episodes`` greedy episodes (episode i reset with ``seed + i``) and summarise them.

    ``vec_normalize`` (training statistics, see ``load_vec_normalize``) normalises each observation before the
    model sees it; the episodes themselves, and so the returns and outcomes, are those of the raw env.

    Returns ``{"summary": {...}, "episodes": {...}}``: the summary has ``return_mean``, ``return_std``,
    ``solved_share`` (return >= 200), ``outcome_shares`` (one entry per name in ``OUTCOMES``), ``length_mean``,
    ``main_engine_fires_mean`` and ``side_engine_fires_mean``; ``episodes`` holds the per-episode lists
    ``returns``, ``lengths``, ``outcomes``, ``main_engine_fires`` and ``side_engine_fires``.
    """
    if n_episodes < 1:
        raise ValueError(f"n_episodes={n_episodes!r} must be >= 1")
    if seed < 0:
        raise ValueError(f"seed={seed!r} must be >= 0 (gymnasium rejects negative seeds)")
    episodes: dict[str, list] = {
        k: [] for k in ("returns", "lengths", "outcomes", "main_engine_fires", "side_engine_fires")
    }
    seeds = [seed + i for i in range(n_episodes)]
    played = greedy_episodes(model, lambda: LandingOutcome(gym.make(env_id, render_mode=None)), seeds, vec_normalize)
    for episode_return, length, info in played:
        episodes["returns"].append(episode_return)
        episodes["lengths"].append(length)
        episodes["outcomes"].append(info["outcome"])
        episodes["main_engine_fires"].append(info["main_engine_fires"])
        episodes["side_engine_fires"].append(info["side_engine_fires"])
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

    The saved ``verbose`` is dropped: evaluating a model trained with ``verbose=2`` should not print training
    diagnostics.

    :raises ValueError: if the file is not an SB3 model zip of a DQN (see :func:`model_class_of`)
    """
    cls = model_class_of(path)
    try:
        return cls.load(path, device="cpu", custom_objects={"verbose": 0})
    except Exception as error:  # anything SB3 or torch raise on a broken or foreign zip
        raise ValueError(
            f"{path} could not be loaded as a {cls.__name__} model ({type(error).__name__}: {error})"
        ) from error


def model_class_of(path: str | Path) -> type[BaseAlgorithm]:
    """``SoftUpdateDQN`` or ``DQN``, read from a model zip without loading its networks (see ``model_file``).

    :raises ValueError: if the file is not an SB3 model zip of a DQN
    """
    algorithm = saved_algorithm(path)
    if algorithm not in (SOFT_DQN, SB3_DQN):
        raise ValueError(
            f"{path} holds a model of another algorithm ({algorithm}): evaluate takes SoftUpdateDQN or SB3 DQN models"
        )
    return SoftUpdateDQN if algorithm == SOFT_DQN else DQN


def find_vec_normalize(model_path: str | Path, env_id: str) -> Path | None:
    """The ``vecnormalize.pkl`` of the run a model belongs to, or None if the run did not normalise.

    rl-zoo3 keeps it in ``<run>/<ENV_ID>/vecnormalize.pkl`` and the final model in ``<run>/<ENV_ID>.zip``; the run
    is the zip's folder (final model, ``best_model.zip``, checkpoints) or, for a zip kept one level down, its parent.
    A ``vecnormalize.pkl`` right beside the zip counts too. The nearest one wins.
    """
    for folder in param_folders(model_path, env_id):
        if (folder / VECNORMALIZE_FILE).is_file():
            return folder / VECNORMALIZE_FILE
    return None


def param_folders(model_path: str | Path, env_id: str) -> list[Path]:
    """Where a run's ``vecnormalize.pkl`` and ``config.yml`` may be, nearest first (see ``find_vec_normalize``)."""
    path = Path(model_path).absolute()
    folders = []
    for run in (path.parent, path.parent.parent):
        folders += [run, run / env_id, run / path.stem]
    return list(dict.fromkeys(folders))


class ConfigLoader(yaml.SafeLoader):
    """Reads rl-zoo3's ``config.yml`` (a dumped ``OrderedDict``) without executing arbitrary Python tags."""


def _construct_ordered_dict(loader: yaml.SafeLoader, node: yaml.Node) -> dict:
    (pairs,) = loader.construct_sequence(node, deep=True)
    return dict(pairs)


ConfigLoader.add_constructor("tag:yaml.org,2002:python/object/apply:collections.OrderedDict", _construct_ordered_dict)
ConfigLoader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)


def normalizing_config(model_path: str | Path, env_id: str) -> Path | None:
    """An rl-zoo3 ``config.yml`` of the model's run saying that observations were normalised, or None.

    It tells a normalised run whose ``vecnormalize.pkl`` is gone apart from a run that never normalised.
    """
    for folder in param_folders(model_path, env_id):
        config = folder / "config.yml"
        try:
            hyperparams = yaml.load(config.read_text(), Loader=ConfigLoader)
        except (OSError, ValueError, yaml.YAMLError):
            continue
        if isinstance(hyperparams, dict) and _normalizes_observations(hyperparams.get("normalize", False)):
            return config
    return None


def _normalizes_observations(normalize: object) -> bool:
    """rl-zoo3's ``normalize`` hyperparameter: a bool, a dict of ``VecNormalize`` kwargs or such a dict as a string."""
    if isinstance(normalize, str):
        try:
            normalize = ast.literal_eval(normalize)
        except (ValueError, SyntaxError):
            return True  # rl-zoo3 would eval() it: some expression, most likely with normalisation on
    if isinstance(normalize, dict):
        return bool(normalize.get("norm_obs", True))
    return bool(normalize)


def load_vec_normalize(path: str | Path, env_id: str) -> VecNormalize:
    """Saved ``VecNormalize`` statistics, frozen for evaluation (``training=False``, ``norm_reward=False``).

    :raises ValueError: if the file is not a ``VecNormalize`` pickle or does not fit ``env_id``'s observations
    """
    venv = DummyVecEnv([lambda: gym.make(env_id, render_mode=None)])
    try:
        vec_normalize = VecNormalize.load(str(path), venv)
    except Exception as error:  # unpickling garbage, another object, or statistics of another observation shape
        raise ValueError(
            f"{path} could not be loaded as VecNormalize statistics for {env_id} ({type(error).__name__}: {error})"
        ) from error
    finally:
        venv.close()  # only the statistics are used: observations come from evaluate_model's own env
    vec_normalize.training = False
    vec_normalize.norm_reward = False
    return vec_normalize


def check_spaces(model: BaseAlgorithm, env_id: str) -> None:
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


SCORE_FORMULA = "return_mean + landed_weight * 100 * landed_share - crash_penalty * 100 * crashed_share"


def landing_score(summary: dict[str, Any], landed_weight: float = 1.0, crash_penalty: float = 1.0) -> float:
    """The mean return, plus ``landed_weight`` points per percent of episodes landed between the flags, minus
    ``crash_penalty`` points per percent crashed.

    Why not the mean return alone: it already holds +100 for a landing and -100 for a crash, but averaged over 50
    episodes one crash moves it by only ~4 points, well inside the noise of fuel use, so a policy that crashes now
    and then can out-score one that always lands. With the default weights, a percent landed is worth one return
    point and a percent crashed costs one more, so e.g. 96 % landed at 240 (score 336) beats 80 % at 250 (330).
    Landing beside the pad, leaving the screen and hovering until the time limit get no bonus: they are misses.
    """
    shares = summary["outcome_shares"]
    return float(
        summary["return_mean"]
        + landed_weight * 100.0 * shares.get("landed", 0.0)
        - crash_penalty * 100.0 * shares.get("crashed", 0.0)
    )


GOAL: dict[str, float] = {
    "stop_mean_return": 270.0,
    "stop_landed_share": 0.98,
    "stop_min_return_share": 0.98,
    "stop_max_crashed_share": 0.0,
}
"""The robust lander's goal as ``meets_bar`` keywords: it beats the PPO most learners train on every axis (mean
>= 270, >= 98 % landed between the flags, >= 98 % of episodes >= 200, no crash). ``LandingEvalCallback``'s
defaults, and what the benchmarks count per seed."""


def meets_bar(
    summary: dict[str, Any],
    stop_mean_return: float | None = None,
    stop_landed_share: float | None = None,
    stop_min_return_share: float | None = None,
    stop_max_crashed_share: float | None = None,
) -> bool:
    """Whether an evaluation meets every given criterion (None skips one; with none given nothing meets the bar).

    ``stop_min_return_share`` is the share of episodes with return >= 200 (``summary["solved_share"]``).
    """
    shares = summary["outcome_shares"]
    checks = [
        (stop_mean_return, lambda bar: summary["return_mean"] >= bar),
        (stop_landed_share, lambda bar: shares.get("landed", 0.0) >= bar),
        (stop_min_return_share, lambda bar: summary["solved_share"] >= bar),
        (stop_max_crashed_share, lambda bar: shares.get("crashed", 0.0) <= bar),
    ]
    given = [(bar, check) for bar, check in checks if bar is not None]
    return bool(given) and all(check(bar) for bar, check in given)
