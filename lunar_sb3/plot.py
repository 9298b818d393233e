"""Learning curve PNG from a training run's Monitor files, for machines without a screen.

``python -m rl_zoo3.plots.plot_train`` opens a window; this writes the same curve (plus the env's "solved"
line: 200 for LunarLander) to a file, by default beside the run: ``python -m lunar_sb3.plot
logs/soft_dqn/LunarLander-v2_1`` writes ``logs/soft_dqn/LunarLander-v2_1/learning_curve.png``;
``-f logs --algo soft_dqn --exp-id 0`` picks the latest run the way rl-zoo3 does, ``-o`` writes elsewhere.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from stable_baselines3.common.monitor import LoadMonitorResultsError, load_results  # noqa: E402

from lunar_sb3.envs import LAB_ENV_ID, reward_threshold  # noqa: E402
from lunar_sb3.outputs import (  # noqa: E402
    OneLineArgumentParser,
    OutputError,
    atomic_path,
    check_writable_file,
    env_id_of_run,
    find_run_folder,
    has_monitor_files,
)
from lunar_sb3.presets import ALGO_NAME  # noqa: E402

DEFAULT_NAME = "learning_curve.png"
"""The PNG's name inside the run folder when no ``-o`` is given."""
ZOO_ALGO = ALGO_NAME


def plot_learning_curve(
    run_folder: str | Path, output: str | Path, window: int = 100, solved_threshold: float | None = None
) -> Path:
    """Training return per episode and its ``window``-episode moving average against env steps.

    The "solved" line is at ``solved_threshold``, by default the reward threshold of the env the run folder is
    named after (LunarLander: 200, CartPole-v1: 475); an env without one gets no line.

    The PNG is written under a temporary name and then renamed, so a failure never leaves a partial image.

    :raises ValueError: if ``window`` < 1, or the run's monitor files are damaged or hold no finished episode
    :raises LoadMonitorResultsError: if ``run_folder`` holds no ``*.monitor.csv``
    """
    if window < 1:
        raise ValueError(f"window={window!r} must be >= 1")
    try:
        episodes = load_results(str(run_folder))  # every *.monitor.csv of the run, in time order
        returns = episodes["r"].to_numpy(dtype=float)
        steps = np.cumsum(episodes["l"].to_numpy(dtype=int))
    except (AssertionError, IndexError) as error:  # what load_results raises on a missing or empty first line
        raise ValueError(
            f"cannot read the monitor files in {run_folder}: one lacks Monitor's '#{{...}}' header line"
        ) from error
    except (ValueError, KeyError) as error:  # a damaged header (JSON) or table (CSV, columns)
        raise ValueError(f"cannot read the monitor files in {run_folder} ({type(error).__name__}: {error})") from error
    if len(returns) == 0:
        raise ValueError(f"the monitor files in {run_folder} hold no finished episode yet")
    fig, ax = plt.subplots(figsize=(7, 4))
    try:
        ax.plot(steps, returns, color="tab:blue", alpha=0.3, linewidth=0.8, label="episode return")
        if len(returns) >= window:
            moving = np.convolve(returns, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1 :], moving, color="tab:blue", label=f"{window}-episode mean")
        if solved_threshold is None:
            env_id = env_id_of_run(Path(run_folder).absolute())
            solved_threshold = reward_threshold(env_id) if env_id else None
        if solved_threshold is not None:
            label = f"solved ({solved_threshold:g})"
            ax.axhline(solved_threshold, color="black", linestyle="--", linewidth=1, label=label)
        ax.set_xlabel("env steps")
        ax.set_ylabel("training return")
        ax.set_title(f"{Path(run_folder).absolute().name}: {len(returns)} episodes")
        ax.legend(loc="lower right")
        fig.tight_layout()
        with atomic_path(output) as temporary:
            # the format follows the name the user asked for, not the temporary one
            fig.savefig(temporary, dpi=100, format=_image_format(output))
    finally:
        plt.close(fig)
    return Path(output)


def _image_format(output: str | Path) -> str | None:
    """``-o curve.svg`` writes SVG; a name without a suffix gets matplotlib's default (PNG)."""
    return Path(output).suffix[1:].lower() or None


def main(argv: Sequence[str] | None = None) -> None:
    parser = OneLineArgumentParser(
        prog="python -m lunar_sb3.plot", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "run_folder", nargs="?", help="a zoo run folder holding *.monitor.csv, e.g. logs/soft_dqn/LunarLander-v2_1"
    )
    parser.add_argument("-o", "--output", type=Path, help=f"image file (default: <run_folder>/{DEFAULT_NAME})")
    parser.add_argument("-w", "--window", type=int, default=100, help="moving-average window (episodes, >= 1)")
    zoo = parser.add_argument_group("an rl-zoo3 run chosen like rl_zoo3.enjoy does (instead of RUN_FOLDER)")
    zoo.add_argument("-f", "--folder", type=Path, help="rl-zoo3 log folder, e.g. logs")
    zoo.add_argument("--algo", help=f"algorithm folder under the log folder (default: {ZOO_ALGO})")
    zoo.add_argument("--env", help=f"env id of the run folders <ENV_ID>_N (default: {LAB_ENV_ID})")
    zoo.add_argument(
        "--exp-id", type=int, help="N of the run folder <ENV_ID>_N (default: 0, the latest run with monitor files)"
    )
    args = parser.parse_args(argv)
    if args.window < 1:
        parser.error(f"-w/--window must be >= 1, got {args.window}")
    if args.folder is None and (args.algo is not None or args.exp_id is not None or args.env is not None):
        parser.error("--algo, --env and --exp-id choose a run under a log folder: pass -f LOG_FOLDER too")
    if (args.folder is None) == (args.run_folder is None):
        parser.error("pass either a run folder or -f LOG_FOLDER (one of them)")
    run_folder = Path(args.run_folder or ".")
    try:
        if args.folder is not None:
            run_folder = find_run_folder(
                args.folder,
                args.algo or ZOO_ALGO,
                args.env or LAB_ENV_ID,
                args.exp_id or 0,
                usable=has_monitor_files,
                wanted="monitor files",
            )
        if not run_folder.exists():
            raise OutputError(f"no *.monitor.csv in {str(run_folder)!r}: no such folder")
        if not run_folder.is_dir():
            raise OutputError(f"{run_folder} is a file: pass the folder of a training run")
        output = check_writable_file(args.output if args.output is not None else run_folder / DEFAULT_NAME)
        path = plot_learning_curve(run_folder, output, args.window)
    except LoadMonitorResultsError:
        parser.error(f"no *.monitor.csv in {str(run_folder)!r}: pass the folder of a training run")
    except (OutputError, ValueError, OSError) as error:
        parser.error(str(error))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
