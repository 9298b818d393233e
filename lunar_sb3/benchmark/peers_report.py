"""The ``peers`` benchmark's report: per-agent figures with IQM and CIs, the markdown tables and the outcome chart.

Apart from the runner (``peers.py``), as the ``robust`` report is from its runner.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from lunar_sb3.benchmark.robust import TEST_SEED_BASE, TEST_SEED_STRIDE
from lunar_sb3.benchmark.robust_report import SHORT_NAMES
from lunar_sb3.landing import OUTCOMES
from lunar_sb3.outputs import write_text_atomic

PEER_ENV_ID = "LunarLander-v3"
"""The id rl-zoo3's dqn.yml, qrdqn.yml and ppo.yml have LunarLander hyperparameters for."""


def write_peers_results(out: Path, meta: dict[str, Any], runs: list[dict[str, Any]], ours: Path | None) -> None:
    """peers.json (every test episode), peers.md (per-seed and per-agent tables) and the outcome chart."""
    from lunar_sb3.pictures import outcome_chart, results_by_agent

    ours_runs = _our_runs(ours)
    summary = agent_summaries(runs, ours_runs)
    document = {"meta": meta, "agents": summary, "runs": runs}
    write_text_atomic(out / "peers.json", json.dumps(document, indent=1) + "\n")
    write_text_atomic(out / "peers.md", peers_markdown(meta, runs, summary, ours) + "\n")
    files = ([ours] if ours_runs else []) + [out / "peers.json"]
    grouped = results_by_agent(files)
    if grouped:
        outcome_chart(
            {f"{label}, {len(results)} seed{'s' * (len(results) > 1)}": results for label, results in grouped.items()},
            out / "peers_outcomes.png",
            title=f"Greedy test episodes ({meta['eval_episodes']} per seed, seeds {TEST_SEED_BASE} + "
            f"{TEST_SEED_STRIDE}·S + i): how they end",
        )


def _our_runs(ours: Path | None) -> list[dict[str, Any]]:
    if ours is None or not ours.is_file():
        return []
    data = json.loads(ours.read_text(encoding="utf-8"))
    label = f"robust preset ({Path(data.get('meta', {}).get('conf', 'soft_dqn_robust.yml')).stem})"
    return [{**r, "label": label} for r in data.get("runs", []) if "error" not in r]


def agent_summaries(runs: list[dict[str, Any]], ours_runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per agent (label): pooled test episodes, IQM [95 % CI] over seeds of mean return and landed share, costs."""
    from lunar_sb3.benchmark.ablation import iqm_with_ci

    by_label: dict[str, list[dict[str, Any]]] = {}
    for r in [*ours_runs, *runs]:
        if "error" not in r:
            by_label.setdefault(r["label"], []).append(r)
    summaries: dict[str, dict[str, Any]] = {}
    for label, done in by_label.items():
        returns = np.concatenate([r.get("returns") or r["episodes"]["returns"] for r in done]).astype(float)
        evaluations = [r["evaluation"] for r in done]
        summaries[label] = {
            "seeds": [r["seed"] for r in done],
            "episodes": int(returns.size),
            "return_mean": float(returns.mean()),
            "return_std": float(returns.std()),
            "return_min": float(returns.min()),
            "solved_share": float(np.mean(returns >= 200)),
            "outcome_shares": {
                name: float(np.mean([e["outcome_shares"][name] for e in evaluations])) for name in OUTCOMES
            },
            "main_engine_fires_mean": float(np.mean([e["main_engine_fires_mean"] for e in evaluations])),
            "side_engine_fires_mean": float(np.mean([e["side_engine_fires_mean"] for e in evaluations])),
            "length_mean": float(np.mean([e["length_mean"] for e in evaluations])),
            "wall_seconds_median": float(statistics.median(r["wall_seconds"] for r in done)),
            "steps_median": float(statistics.median(r["steps"] for r in done)),
        }
    per_seed = {
        "return": {label: np.array([r["evaluation"]["return_mean"] for r in d]) for label, d in by_label.items()},
        "landed": {
            label: np.array([r["evaluation"]["outcome_shares"]["landed"] for r in d]) for label, d in by_label.items()
        },
    }
    for quantity, values in per_seed.items():
        for label, (iqm, low, high) in iqm_with_ci(values).items():
            summaries[label][f"{quantity}_iqm"] = [iqm, low, high]
    return summaries


def peers_markdown(
    meta: dict[str, Any], runs: list[dict[str, Any]], summary: dict[str, dict[str, Any]], ours: Path | None
) -> str:
    """Markdown: the per-agent summary (IQMs with 95 % CIs over seeds), then one row per run."""
    outcome_columns = " | ".join(SHORT_NAMES[name] for name in OUTCOMES)
    lines = [
        f"# Peers on the robust benchmark's test episodes ({meta['date']})",
        "",
        f"`{meta['command']}`: each run trained by `python -m rl_zoo3.train --algo <algo> --env {PEER_ENV_ID} "
        f"--seed S -f <out>/logs/seed_S --eval-freq -1 --num-threads 1` with rl-zoo3's own hyperparameters"
        + (f" (step budget -n {meta['max_steps']})" if meta["max_steps"] else "")
        + f", then its final model plays {meta['eval_episodes']} greedy episodes reset with seeds "
        f"{meta['test_seeds']}, ended and labelled by `LandingOutcome`. One run at a time (--jobs {meta['jobs']}) "
        f"on a {meta['cpu_count']}-core machine shared with other work, torch {meta['torch']} on the CPU, one thread."
        + (
            f" **Partial: {len(runs)} of {meta['runs_planned']} runs finished so far.**"
            if len(runs) < meta.get("runs_planned", len(runs))
            else ""
        )
        + (f" Our robust preset: from `{ours}` (same seeds and test episodes)." if ours and ours.is_file() else ""),
        "",
        "## Per agent",
        "",
        "IQM over seeds of the per-seed mean return and landed share, with 95 % stratified-bootstrap CIs (rliable); "
        "the other columns pool every test episode (outcome shares: mean over seeds).",
        "",
        f"| agent | seeds | IQM mean return [95 % CI] | IQM landed [95 % CI] | return mean ± std | ≥ 200 | worst "
        f"| {outcome_columns} | main / side fires | wall s (median) | env steps (median) |",
        "|" + "---|" * (9 + len(OUTCOMES) + 1),
    ]
    for label, s in summary.items():
        r_iqm, l_iqm = s["return_iqm"], s["landed_iqm"]
        shares = " | ".join(f"{100 * s['outcome_shares'][name]:.1f} %" for name in OUTCOMES)
        lines.append(
            f"| {label} | {len(s['seeds'])} | {r_iqm[0]:.1f} [{r_iqm[1]:.1f}, {r_iqm[2]:.1f}] "
            f"| {100 * l_iqm[0]:.1f} % [{100 * l_iqm[1]:.1f}, {100 * l_iqm[2]:.1f}] "
            f"| {s['return_mean']:.1f} ± {s['return_std']:.1f} | {100 * s['solved_share']:.1f} % "
            f"| {s['return_min']:.0f} "
            f"| {shares} | {s['main_engine_fires_mean']:.0f} / {s['side_engine_fires_mean']:.0f} "
            f"| {s['wall_seconds_median']:.0f} | {s['steps_median']:,.0f} |"
        )
    lines += [
        "",
        "## Per run",
        "",
        f"| agent | seed | env steps | wall s | return mean ± std | ≥ 200 | worst | {outcome_columns} "
        "| main / side fires | mean length |",
        "|" + "---|" * (9 + len(OUTCOMES)),
    ]
    for r in runs:
        if "error" in r:
            error = r["error"].replace("|", "\\|")
            lines.append(f"| {r['algo']} | {r['seed']} | training failed: {error} |")
            continue
        e = r["evaluation"]
        shares = " | ".join(f"{100 * e['outcome_shares'][name]:.0f} %" for name in OUTCOMES)
        lines.append(
            f"| {r['algo']} | {r['seed']} | {r['steps']:,} | {r['wall_seconds']:.0f} "
            f"| {e['return_mean']:.1f} ± {e['return_std']:.1f} | {100 * e['solved_share']:.0f} % "
            f"| {e['return_min']:.0f} | {shares} "
            f"| {e['main_engine_fires_mean']:.0f} / {e['side_engine_fires_mean']:.0f} "
            f"| {e['length_mean']:.0f} |"
        )
    lines += [
        "",
        "Wall seconds are measured around the whole `rl_zoo3.train` subprocess (start-up and saving included), "
        "env steps are the final model's `num_timesteps` (PPO rounds up to whole rollouts of 16 × 1024 steps).",
    ]
    return "\n".join(lines)
