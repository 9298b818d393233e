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

import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import gymnasium as gym
import torch

from lunar_sb3.envs import LAB_ENV_ID
from lunar_sb3.evaluation import (
    SOLVED_RETURN,
    VECNORMALIZE_FILE,
    check_spaces,
    evaluate_model,
    find_vec_normalize,
    format_summary,
    load_model,
    load_vec_normalize,
    model_class_of,
    normalizing_config,
)
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
from lunar_sb3.soft_dqn.model_file import SOFT_DQN

# The library functions live in lunar_sb3.evaluation; they are importable from here too, where they used to be.
__all__ = [
    "SOLVED_RETURN",
    "VECNORMALIZE_FILE",
    "ZOO_ALGO",
    "evaluate_model",
    "find_vec_normalize",
    "format_summary",
    "load_model",
    "load_vec_normalize",
    "main",
    "model_class_of",
]

ZOO_ALGO = SOFT_DQN
"""The algorithm folder ``-f LOG_FOLDER`` looks in unless ``--algo`` says otherwise."""


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
        check_spaces(model, env_id)
        stats = args.vecnormalize or find_vec_normalize(path, env_id)
        if stats is None and (config := normalizing_config(path, env_id)) is not None:
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
