"""Evaluate a trained lander greedily and report how its episodes end.

``python -m lunar_sb3.evaluate MODEL.zip [--env LunarLander-v2] [-n 100] [--seed S] [--json out.json]``
``python -m lunar_sb3.evaluate logs/soft_dqn/LunarLander-v2_1``  (an rl-zoo3 run folder: writes evaluation.json there)
``python -m lunar_sb3.evaluate -f logs --algo soft_dqn --exp-id 0``  (rl-zoo3's way to name a run; 0: the latest)
``python -m lunar_sb3.evaluate MODEL.zip --chart outcomes.png --gif landings.gif``  (pictures, ``lunar_sb3.pictures``)

The mean return says whether a model is good; the outcome shares (from ``LandingOutcome``) say *why* it is not:
crashing, drifting off screen, hovering until the time limit or landing beside the pad need different fixes.
Episode i is reset with seed ``seed + i`` and actions are greedy, so a report can be reproduced exactly.
A model trained on ``VecNormalize``-d observations (rl-zoo3's ``normalize: true``) only makes sense on observations
normalised with its saved statistics: a ``vecnormalize.pkl`` found beside the model is applied, and said so.
"""

from __future__ import annotations

import ast
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import yaml
from stable_baselines3 import DQN
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from lunar_sb3.envs import LAB_ENV_ID
from lunar_sb3.landing import OUTCOMES, LandingOutcome, greedy_episodes
from lunar_sb3.outputs import (
    OneLineArgumentParser,
    OutputError,
    check_writable_file,
    env_id_of_run,
    find_run_folder,
    model_of_run,
    write_text_atomic,
)
from lunar_sb3.pictures import CHART_FORMATS, landing_gif, outcome_chart
from lunar_sb3.soft_dqn import SoftUpdateDQN
from lunar_sb3.soft_dqn.model_file import SB3_DQN, SOFT_DQN, saved_algorithm

SOLVED_RETURN = 200.0
"""An episode counts as solved at this return (the lab's and gymnasium's threshold)."""

ZOO_ALGO = "soft_dqn"
"""The algorithm folder ``-f LOG_FOLDER`` looks in unless ``--algo`` says otherwise."""
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
    for folder in _param_folders(model_path, env_id):
        if (folder / VECNORMALIZE_FILE).is_file():
            return folder / VECNORMALIZE_FILE
    return None


def _param_folders(model_path: str | Path, env_id: str) -> list[Path]:
    """Where a run's ``vecnormalize.pkl`` and ``config.yml`` may be, nearest first (see ``find_vec_normalize``)."""
    path = Path(model_path).absolute()
    folders = []
    for run in (path.parent, path.parent.parent):
        folders += [run, run / env_id, run / path.stem]
    return list(dict.fromkeys(folders))


class _ConfigLoader(yaml.SafeLoader):
    """Reads rl-zoo3's ``config.yml`` (a dumped ``OrderedDict``) without executing arbitrary Python tags."""


def _construct_ordered_dict(loader: yaml.SafeLoader, node: yaml.Node) -> dict:
    (pairs,) = loader.construct_sequence(node, deep=True)
    return dict(pairs)


_ConfigLoader.add_constructor("tag:yaml.org,2002:python/object/apply:collections.OrderedDict", _construct_ordered_dict)
_ConfigLoader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)


def _normalizing_config(model_path: str | Path, env_id: str) -> Path | None:
    """An rl-zoo3 ``config.yml`` of the model's run saying that observations were normalised, or None.

    It tells a normalised run whose ``vecnormalize.pkl`` is gone apart from a run that never normalised.
    """
    for folder in _param_folders(model_path, env_id):
        config = folder / "config.yml"
        try:
            hyperparams = yaml.load(config.read_text(), Loader=_ConfigLoader)
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
    parser = OneLineArgumentParser(
        prog="python -m lunar_sb3.evaluate", description="Greedy evaluation of a SoftUpdateDQN or DQN lander."
    )
    parser.add_argument(
        "model",
        nargs="?",
        help="a SoftUpdateDQN or SB3 DQN .zip, or an rl-zoo3 run folder such as logs/soft_dqn/LunarLander-v2_1",
    )
    parser.add_argument(
        "--env", help=f"gymnasium env id (default: from the run folder's name <ENV_ID>_<N>, else {LAB_ENV_ID})"
    )
    parser.add_argument("-n", "--n-episodes", type=int, default=100, help="number of episodes (default: 100)")
    parser.add_argument("--seed", type=int, default=0, help="episode i resets with seed SEED+i, SEED >= 0 (default: 0)")
    parser.add_argument(
        "--json",
        type=Path,
        help="write the summary and per-episode results here (default: <run>/evaluation.json for a run folder, "
        "nothing for a zip)",
    )
    parser.add_argument(
        "--vecnormalize",
        type=Path,
        metavar="PKL",
        help="VecNormalize statistics to normalize observations with (default: the vecnormalize.pkl rl-zoo3 saves "
        "with the run, if there is one)",
    )
    pictures = parser.add_argument_group("pictures")
    pictures.add_argument(
        "--chart",
        type=Path,
        metavar="PATH",
        help="write this evaluation's outcome shares as a bar chart (.png/.svg/.pdf)",
    )
    pictures.add_argument(
        "--gif", type=Path, metavar="PATH", help="write a GIF of greedy episodes (one per --gif-seeds seed, .gif)"
    )
    pictures.add_argument(
        "--gif-seeds",
        type=int,
        nargs="+",
        metavar="S",
        help="episode seeds of the GIF (default: SEED SEED+1 SEED+2, the first three episodes of the evaluation)",
    )
    zoo = parser.add_argument_group("an rl-zoo3 run chosen like rl_zoo3.enjoy does (instead of MODEL)")
    zoo.add_argument("-f", "--folder", type=Path, help="rl-zoo3 log folder, e.g. logs")
    zoo.add_argument("--algo", help=f"algorithm folder under the log folder (default: {ZOO_ALGO})")
    zoo.add_argument(
        "--exp-id", type=int, help="N of the run folder <ENV_ID>_N (default: 0, the latest run with a saved model)"
    )
    args = parser.parse_args(argv)
    # gymnasium warns that the lab's id LunarLander-v2 is "out of date" (it is v3's dynamics, see lunar_sb3.envs);
    # on the command line that is noise around the report or an error message.
    warnings.filterwarnings("ignore", message=r".*LunarLander-v2 is out of date", category=DeprecationWarning)
    torch.set_num_threads(1)  # greedy play of a small MLP gains nothing from threads on a shared machine

    def fail(message: str) -> SystemExit:
        return SystemExit(f"{parser.prog}: error: {' '.join(message.split())}")

    if args.n_episodes < 1:
        raise fail(f"-n must be >= 1, got {args.n_episodes}")
    if args.seed < 0:
        raise fail(f"--seed must be >= 0 (gymnasium rejects negative seeds), got {args.seed}")
    if args.gif_seeds is not None and args.gif is None:
        raise fail("--gif-seeds chooses the episodes of a GIF: pass --gif PATH too")
    gif_seeds = args.gif_seeds if args.gif_seeds is not None else [args.seed + i for i in range(3)]
    if min(gif_seeds) < 0:
        raise fail(f"--gif-seeds must be >= 0 (gymnasium rejects negative seeds), got {min(gif_seeds)}")
    if args.gif is not None and args.gif.suffix.lower() != ".gif":
        raise fail(f"--gif {args.gif}: the file name must end in .gif")
    if args.chart is not None and args.chart.suffix.lower().lstrip(".") not in CHART_FORMATS:
        raise fail(f"--chart {args.chart}: the file name must end in {', '.join('.' + f for f in CHART_FORMATS)}")
    if args.folder is None and (args.algo is not None or args.exp_id is not None):
        raise fail("--algo and --exp-id choose a run under a log folder: pass -f LOG_FOLDER too")
    if args.folder is not None and args.model is not None:
        raise fail(f"pass either MODEL ({args.model}) or -f LOG_FOLDER, not both")
    if args.folder is None and args.model is None:
        raise fail("nothing to evaluate: pass a model zip, an rl-zoo3 run folder, or -f LOG_FOLDER")

    run: Path | None = None  # set when the model comes from a run folder: outputs then go into it
    try:
        if args.folder is not None:
            env_id = args.env or LAB_ENV_ID
            run = find_run_folder(args.folder, args.algo or ZOO_ALGO, env_id, args.exp_id or 0)
            path = model_of_run(run, env_id)
        elif Path(args.model).is_dir():
            run = Path(args.model)
            env_id = args.env or env_id_of_run(run) or LAB_ENV_ID
            path = model_of_run(run, env_id_of_run(run) or env_id)
        else:
            env_id = args.env or LAB_ENV_ID
            path = Path(args.model)
            if not path.is_file() and Path(f"{path}.zip").is_file():  # like SB3's load, "model" finds "model.zip"
                path = Path(f"{path}.zip")
        if run is not None and not path.is_file():
            raise OutputError(f"run folder {run} holds no model {path.name} (rl-zoo3 saves it when training ends)")
        if not path.is_file():
            raise OutputError(f"no such model file: {args.model}")
        json_path = args.json
        if json_path is None and run is not None:
            json_path = run / "evaluation.json"  # a run folder's results stay with the run
        for output in (json_path, args.chart, args.gif):
            if output is not None:
                check_writable_file(output)  # before the episodes, which take minutes for a good lander
    except OutputError as error:
        raise fail(str(error)) from None
    if args.vecnormalize is not None and not args.vecnormalize.is_file():
        raise fail(f"no such VecNormalize file: {args.vecnormalize}")
    try:
        gym.spec(env_id)
    except gym.error.Error as error:
        raise fail(f"unknown env id {env_id!r} ({error})") from None
    try:
        model = load_model(path)
        _check_spaces(model, env_id)
        stats = args.vecnormalize or find_vec_normalize(path, env_id)
        if stats is None and (config := _normalizing_config(path, env_id)) is not None:
            raise ValueError(
                f"{config} says the model was trained on normalized observations, but no {VECNORMALIZE_FILE} was "
                "found with it: pass --vecnormalize PKL"
            )
        vec_normalize = None if stats is None else load_vec_normalize(stats, env_id)
        result = evaluate_model(
            model, env_id=env_id, n_episodes=args.n_episodes, seed=args.seed, vec_normalize=vec_normalize
        )
    except (ValueError, TypeError, gym.error.Error) as error:  # TypeError: LandingOutcome on a non-LunarLander env
        raise fail(str(error)) from None

    shown = path.name if run is None else f"{run.name}/{path.name}"
    title = (
        f"{shown} ({type(model).__name__}) on {env_id}: {args.n_episodes} greedy episodes, "
        f"seeds {args.seed}..{args.seed + args.n_episodes - 1}"
    )
    if stats is not None:
        title += f", observations normalized with {stats}"
    print(format_summary(result["summary"], title))
    if json_path is not None:
        report = {
            "model": str(path),
            "model_class": type(model).__name__,
            "vecnormalize": None if stats is None else str(stats),
            **result,
        }
        try:
            write_text_atomic(json_path, json.dumps(report, indent=2) + "\n")
        except OSError as error:
            raise fail(f"cannot write {json_path}: {error}") from None
        print(f"wrote {json_path}")
    try:
        if args.chart is not None:
            outcome_chart(
                {shown: result["summary"]},
                args.chart,
                title=f"{shown} on {env_id}: {args.n_episodes} greedy episodes (seeds {args.seed}.."
                f"{args.seed + args.n_episodes - 1}), mean return {result['summary']['return_mean']:.1f}",
            )
            print(f"wrote {args.chart}")
        if args.gif is not None:
            episodes = landing_gif(model, env_id, gif_seeds, args.gif, vec_normalize=vec_normalize)
            shown_episodes = ", ".join(f"seed {e['seed']} {e['outcome']} {e['return']:.0f}" for e in episodes)
            print(f"wrote {args.gif} ({shown_episodes})")
    except OSError as error:
        raise fail(f"cannot write a picture: {error}") from None
    return 0


if __name__ == "__main__":
    sys.exit(main())
