"""The ``robust`` benchmark's report: pooled figures over seeds, the per-seed markdown table and the goal line.

Apart from the runner (``robust.py``) because ``q-average`` and ``peers`` write and read the same format.
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

from lunar_sb3.evaluation import GOAL, meets_bar
from lunar_sb3.landing import OUTCOMES

SHORT_NAMES = {
    "landed": "landed",
    "landed_off_pad": "off pad",
    "crashed": "crashed",
    "out_of_bounds": "out",
    "timeout": "timeout",
}


def aggregate(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Over the seeds that trained: pooled episodes (each seed has as many), per-seed means, medians of costs."""
    done = [r for r in runs if "error" not in r]
    if not done:
        return None
    returns = np.concatenate([r["returns"] for r in done])
    means = [r["evaluation"]["return_mean"] for r in done]
    evaluations = [r["evaluation"] for r in done]
    return {
        "seeds": len(done),
        "episodes": int(returns.size),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "seed_return_mean": float(np.mean(means)),
        "seed_return_mean_std": float(np.std(means)),
        "solved_share": float(np.mean(returns >= 200)),
        "return_min": float(returns.min()),
        "outcome_shares": {name: float(np.mean([e["outcome_shares"][name] for e in evaluations])) for name in OUTCOMES},
        "main_engine_fires_mean": float(np.mean([e["main_engine_fires_mean"] for e in evaluations])),
        "side_engine_fires_mean": float(np.mean([e["side_engine_fires_mean"] for e in evaluations])),
        "wall_seconds_median": float(statistics.median(r["wall_seconds"] for r in done)),
        "steps_median": float(statistics.median(r["steps"] for r in done)),
        "bar_met": sum(r["bar_met_at"] is not None for r in done),
    }


def robust_table(runs: list[dict[str, Any]]) -> str:
    """Markdown: one row per seed and one for all seeds (pooled test episodes)."""
    outcome_columns = " | ".join(SHORT_NAMES[name] for name in OUTCOMES)
    rows = [
        f"| seed | model tested | env steps trained | bar met at | wall s | return mean ± std | ≥ 200 | worst "
        f"| {outcome_columns} | main / side fires |",
        "|" + "---|" * (8 + len(OUTCOMES) + 1),
    ]
    for r in runs:
        if "error" in r:
            error = r["error"].replace("|", "\\|")
            rows.append(f"| {r['seed']} | training failed: {error} |")
            continue
        rows.append(
            _row(
                str(r["seed"]),
                r["model"],
                f"{r['steps']:,}",
                _steps(r["bar_met_at"]),
                f"{r['wall_seconds']:.0f}",
                r["evaluation"],
            )
        )
    total = aggregate(runs)
    if total is not None and total["seeds"] > 1:
        rows.append(
            _row(
                f"all ({total['seeds']})",
                "",
                f"{total['steps_median']:,.0f} (median)",
                f"{total['bar_met']}/{total['seeds']}",
                f"{total['wall_seconds_median']:.0f} (median)",
                total,
            )
        )
        rows.append("")
        rows.append(
            f"Per-seed mean return: {total['seed_return_mean']:.1f} "
            f"± {total['seed_return_mean_std']:.1f} (mean ± std over {total['seeds']} seeds); "
            f"{total['episodes']} test episodes in all."
        )
        rows.append(goal_line(runs))
    return "\n".join(rows)


def worst_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run that landed least often; of those, the one with the lowest mean return."""
    return min(runs, key=lambda r: (r["evaluation"]["outcome_shares"]["landed"], r["evaluation"]["return_mean"]))


def goal_line(runs: list[dict[str, Any]]) -> str:
    """On how many seeds the goal holds, the worst seed, and the IQM over seeds with 95 % bootstrap CIs."""
    from lunar_sb3.benchmark.ablation import STATS_EXTRA, iqm_with_ci, stats_available

    done = sorted((r for r in runs if "error" not in r), key=lambda r: r["seed"])
    met = [r["seed"] for r in done if meets_bar(r["evaluation"], **GOAL)]
    worst = worst_run(done)
    per_seed = {
        "return": np.array([r["evaluation"]["return_mean"] for r in done]),
        "landed": np.array([100 * r["evaluation"]["outcome_shares"]["landed"] for r in done]),
    }
    goal = (
        f"Goal (mean >= 270, >= 98 % landed and >= 200, no crash) met on {len(met)} of {len(done)} seeds; worst seed "
        f"{worst['seed']} ({worst['evaluation']['return_mean']:.1f}, landed "
        f"{worst['evaluation']['outcome_shares']['landed']:.0%})."
    )
    if not stats_available():  # a report after hours of training must not fail for want of a statistics package
        return f"{goal} IQM over seeds with bootstrap CIs: needs {STATS_EXTRA}."
    iqm = {name: iqm_with_ci({name: values})[name] for name, values in per_seed.items()}
    return f"{goal} IQM over seeds with 95 % stratified-bootstrap CIs: " + (
        "mean return {:.1f} [{:.1f}, {:.1f}], landed {:.1f} % [{:.1f}, {:.1f}].".format(*iqm["return"], *iqm["landed"])
    )


def _row(seed: str, model: str, steps: str, bar: str, seconds: str, e: dict[str, Any]) -> str:
    shares = " | ".join(f"{100 * e['outcome_shares'][name]:.0f} %" for name in OUTCOMES)
    return (
        f"| {seed} | {model} | {steps} | {bar} | {seconds} | {e['return_mean']:.1f} ± {e['return_std']:.1f} "
        f"| {100 * e['solved_share']:.0f} % | {e['return_min']:.0f} | {shares} "
        f"| {e['main_engine_fires_mean']:.0f} / {e['side_engine_fires_mean']:.0f} |"
    )


def _steps(value: int | None) -> str:
    return "–" if value is None else f"{value:,}"
