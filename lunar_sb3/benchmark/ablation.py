"""``ablation``: the lab's defaults against each Rainbow-lite component and all of them, with honest statistics.

Five seeds per agent say little through a mean. Following Agarwal et al. (NeurIPS 2021, "Deep RL at the edge of
the statistical precipice") and their ``rliable`` package, every figure is an interquartile mean (IQM) with a 95 %
stratified-bootstrap confidence interval, and each agent gets its probability of improvement over the lab's
defaults. A run that never solves counts as needing the whole step budget (and its time), so a failure costs
rather than vanishing from the sample. The learning curves are IQMs across seeds with bootstrap bands.
"""

import argparse
import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from lunar_sb3.benchmark.agents import LABELS
from lunar_sb3.benchmark.solve import run_solve
from lunar_sb3.outputs import atomic_path, write_text_atomic

ABLATION_AGENTS = ["soft_dqn", "double", "dueling", "prioritized", "nstep3", "rainbow_lite"]
ABLATION_FILES = ("solve.json", "solve.md", "learning_curves.png", "ablation.md", "ablation_curves.png")
BOOTSTRAP_REPS = 5000
STATS_EXTRA = 'the stats extra (rliable): pip install -e ".[stats]"'
"""What IQM and bootstrap intervals need; the training itself does not."""


def stats_available() -> bool:
    """Whether rliable is installed, so that reports can say so before hours of training rather than after."""
    return importlib.util.find_spec("rliable") is not None


def _rliable() -> tuple[Any, Any]:
    try:
        from rliable import library, metrics
    except ImportError as error:
        raise SystemExit(f"python -m lunar_sb3.benchmark: error: needs {STATS_EXTRA} ({error})") from None
    return library, metrics


def per_seed(results: list[dict[str, Any]], agent: str, max_steps: int) -> dict[str, np.ndarray]:
    """One value per seed of each reported quantity; an unsolved run counts its full budget."""
    runs = sorted((r for r in results if r["agent"] == agent), key=lambda r: r["seed"])
    return {
        "steps": np.array([r["steps"] if r["solved"] else max_steps for r in runs], dtype=float),
        "seconds": np.array([r["seconds"] for r in runs], dtype=float),
        "steps_per_second": np.array([r["steps_per_second"] for r in runs], dtype=float),
        "return": np.array([r["evaluation"]["return_mean"] for r in runs], dtype=float),
        "landed": np.array([r["evaluation"]["outcome_shares"]["landed"] for r in runs], dtype=float),
        "solved": np.array([r["solved"] for r in runs], dtype=float),
    }


def _point_and_interval(point: Any, interval: Any) -> tuple[float, float, float]:
    """rliable returns shapes (1,)/(2, 1) or ()/(2,) depending on the metric: flatten both."""
    low, high = np.ravel(interval)
    return float(np.ravel(point)[0]), float(low), float(high)


def iqm_with_ci(values: dict[str, np.ndarray], reps: int = BOOTSTRAP_REPS) -> dict[str, tuple[float, float, float]]:
    """IQM and its 95 % stratified-bootstrap interval per agent: {agent: (iqm, low, high)}."""
    library, metrics = _rliable()
    scores = {agent: v.reshape(-1, 1) for agent, v in values.items()}  # rliable: (runs, tasks), one task here
    points, intervals = library.get_interval_estimates(
        scores, lambda x: np.array([metrics.aggregate_iqm(x)]), reps=reps
    )
    return {agent: _point_and_interval(points[agent], intervals[agent]) for agent in values}


def probability_of_improvement(
    values: dict[str, np.ndarray], baseline: str, lower_is_better: bool, reps: int = BOOTSTRAP_REPS
) -> dict[str, tuple[float, float, float]]:
    """P(a run of the agent beats a run of the baseline), with its 95 % bootstrap interval."""
    library, metrics = _rliable()
    sign = -1.0 if lower_is_better else 1.0
    pairs = {
        agent: ((sign * v).reshape(-1, 1), (sign * values[baseline]).reshape(-1, 1))
        for agent, v in values.items()
        if agent != baseline
    }
    points, intervals = library.get_interval_estimates(pairs, metrics.probability_of_improvement, reps=reps)
    return {agent: _point_and_interval(points[agent], intervals[agent]) for agent in pairs}


def ablation_table(results: list[dict[str, Any]], agents: list[str], max_steps: int, baseline: str = "soft_dqn") -> str:
    """Markdown: IQM [95 % CI] per quantity, probability of improvement over the baseline, speed."""
    data = {agent: per_seed(results, agent, max_steps) for agent in agents}
    column = {
        name: iqm_with_ci({a: d[name] for a, d in data.items()}) for name in ("steps", "seconds", "return", "landed")
    }
    improves = probability_of_improvement({a: d["steps"] for a, d in data.items()}, baseline, lower_is_better=True)
    faster = probability_of_improvement({a: d["seconds"] for a, d in data.items()}, baseline, lower_is_better=True)

    def cell(name: str, agent: str, fmt: str) -> str:
        point, low, high = column[name][agent]
        return f"{fmt.format(point)} [{fmt.format(low)}, {fmt.format(high)}]"

    def chance(table: dict[str, tuple[float, float, float]], agent: str) -> str:
        return "—" if agent == baseline else "{:.2f} [{:.2f}, {:.2f}]".format(*table[agent])

    rows = [
        "| agent | solved | env steps to solve (IQM [95 % CI]) | P(fewer steps than defaults) "
        "| seconds to solve | P(less time than defaults) | env steps/s (median) | eval return | landed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for agent in agents:
        d = data[agent]
        rows.append(
            f"| {LABELS[agent]} | {int(d['solved'].sum())}/{len(d['solved'])} | {cell('steps', agent, '{:,.0f}')} "
            f"| {chance(improves, agent)} | {cell('seconds', agent, '{:.0f}')} | {chance(faster, agent)} "
            f"| {np.median(d['steps_per_second']):,.0f} | {cell('return', agent, '{:.1f}')} "
            f"| {cell('landed', agent, '{:.0%}')} |"
        )
    return "\n".join(rows)


def curve_bands(
    results: list[dict[str, Any]], agent: str, grid: np.ndarray, reps: int = 2000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IQM across seeds of the 100-episode mean training return at each grid step, with a bootstrap band.

    A run that stopped (solved) before a grid point keeps its last value: it is the return it was solved with.
    The IQM is rliable's (``scipy.stats.trim_mean`` cutting 25 % at each end), applied to all grid points and
    bootstrap resamples at once.
    """
    from scipy.stats import trim_mean

    rows = []
    for run in (r for r in results if r["agent"] == agent):
        returns = np.asarray(run["curve"]["returns"], dtype=float)
        steps = np.asarray(run["curve"]["timesteps"], dtype=float)
        if len(returns) == 0:
            continue
        moving = np.cumsum(returns) - np.concatenate([np.zeros(100), np.cumsum(returns)])[: len(returns)]
        moving /= np.minimum(np.arange(1, len(returns) + 1), 100)
        rows.append(np.interp(grid, steps, moving))
    curves = np.array(rows)  # (seeds, grid)
    resamples = curves[np.random.default_rng(seed).integers(0, len(curves), size=(reps, len(curves)))]
    boot = trim_mean(resamples, 0.25, axis=1)  # (reps, grid)
    return trim_mean(curves, 0.25, axis=0), np.percentile(boot, 2.5, axis=0), np.percentile(boot, 97.5, axis=0)


def plot_ablation_curves(results: list[dict[str, Any]], agents: list[str], path: Path, max_steps: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    last = max(max(r["curve"]["timesteps"] or [0]) for r in results)
    grid = np.linspace(0, min(last, max_steps), 200)
    fig, ax = plt.subplots(figsize=(8, 5))
    for agent in agents:
        iqm, low, high = curve_bands(results, agent, grid)
        (line,) = ax.plot(grid, iqm, label=LABELS[agent])
        ax.fill_between(grid, low, high, color=line.get_color(), alpha=0.15)
    ax.axhline(200, color="black", linestyle="--", linewidth=1)
    ax.set_xlabel("env steps")
    ax.set_ylabel("training return, 100-episode mean (IQM over seeds)")
    ax.set_title("Rainbow-lite ablation: IQM and 95 % bootstrap band")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as temporary:
        fig.savefig(temporary, dpi=100, format="png")
    plt.close(fig)


def run_ablation(args: argparse.Namespace) -> None:
    _rliable()  # fail before hours of training, not after
    args.agents = args.agents or ABLATION_AGENTS
    results = run_solve(args)
    out = Path(args.out)
    table = ablation_table(results, args.agents, args.max_steps)
    write_text_atomic(out / "ablation.md", table + "\n")
    plot_ablation_curves(results, args.agents, out / "ablation_curves.png", args.max_steps)
    print(f"\n{table}\n\nwrote {out / 'ablation.md'}, {out / 'ablation_curves.png'}")
