"""Learning curve PNG from a training run's Monitor files, for machines without a screen.

``python -m rl_zoo3.plots.plot_train`` opens a window; this writes the same curve (plus the lab's 200 line)
to a file: ``python -m lunar_sb3.plot logs/soft_dqn/LunarLander-v2_1 -o curve.png``.
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from stable_baselines3.common.monitor import LoadMonitorResultsError, load_results  # noqa: E402


def plot_learning_curve(run_folder: str | Path, output: str | Path, window: int = 100) -> Path:
    """Training return per episode and its ``window``-episode moving average against env steps."""
    episodes = load_results(str(run_folder))  # every *.monitor.csv of the run, in time order
    returns = episodes["r"].to_numpy()
    steps = np.cumsum(episodes["l"].to_numpy())
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, returns, color="tab:blue", alpha=0.3, linewidth=0.8, label="episode return")
    if len(returns) >= window:
        moving = np.convolve(returns, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], moving, color="tab:blue", label=f"{window}-episode mean")
    ax.axhline(200, color="black", linestyle="--", linewidth=1, label="solved (200)")
    ax.set_xlabel("env steps")
    ax.set_ylabel("training return")
    ax.set_title(f"{Path(run_folder).name}: {len(returns)} episodes")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return Path(output)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lunar_sb3.plot", description=__doc__)
    parser.add_argument(
        "run_folder", help="a zoo run folder holding *.monitor.csv, e.g. logs/soft_dqn/LunarLander-v2_1"
    )
    parser.add_argument("-o", "--output", default="learning_curve.png")
    parser.add_argument("-w", "--window", type=int, default=100, help="moving-average window (episodes)")
    args = parser.parse_args(argv)
    try:
        path = plot_learning_curve(args.run_folder, args.output, args.window)
    except LoadMonitorResultsError:
        parser.error(f"no *.monitor.csv in {args.run_folder!r}: pass the folder of a training run")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
