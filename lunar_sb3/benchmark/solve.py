"""``solve``: train K seeds per agent to the lab's "solved", evaluate greedily, tabulate and plot."""

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.callbacks import CallbackList
from tqdm import tqdm

from lunar_sb3.benchmark.agents import LABELS, EpisodeRecorder, agent_kwargs, make_lab_env
from lunar_sb3.callbacks import StopTrainingOnSolved
from lunar_sb3.envs import LAB_ENV_ID
from lunar_sb3.evaluation import evaluate_model
from lunar_sb3.outputs import (
    atomic_path,
    write_text_atomic,
)

SOLVE_FILES = ("solve.json", "solve.md", "learning_curves.png")


def solve_run(agent: str, seed: int, max_steps: int, eval_episodes: int) -> dict[str, Any]:
    """Train one agent until solved (or ``max_steps``), then evaluate it greedily."""
    th.set_num_threads(1)
    algo_class, kwargs = agent_kwargs(agent)
    model = algo_class("MlpPolicy", make_lab_env(seed), seed=seed, **kwargs)
    solved, curve = StopTrainingOnSolved(verbose=0), EpisodeRecorder()
    start = time.perf_counter()
    model.learn(max_steps, callback=CallbackList([solved, curve]))
    seconds = time.perf_counter() - start
    evaluation = evaluate_model(model, LAB_ENV_ID, n_episodes=eval_episodes, seed=10_000 + seed)["summary"]
    return {
        "agent": agent,
        "seed": seed,
        "solved": solved.solved_at_episode is not None,
        "episodes": len(curve.returns),
        "steps": model.num_timesteps,
        "seconds": round(seconds, 2),
        "steps_per_second": round(model.num_timesteps / seconds, 1),
        "evaluation": evaluation,
        "curve": {"returns": curve.returns, "timesteps": curve.timesteps},
    }


def run_solve(args: argparse.Namespace) -> list[dict[str, Any]]:
    jobs = [(agent, seed) for seed in range(args.seed0, args.seed0 + args.seeds) for agent in args.agents]
    results = []
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(solve_run, agent, seed, args.max_steps, args.eval_episodes) for agent, seed in jobs]
        for future in tqdm(futures, desc="training runs", unit="run"):
            results.append(future.result())
    out = Path(args.out)
    meta = {
        "command": "python -m lunar_sb3.benchmark " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "cpu_count": os.cpu_count(),
        "torch_threads_per_run": 1,
        "jobs": args.jobs,
    }
    table = solve_table(results, args.agents)
    try:  # checked before training, but the disk may have filled up or the folder vanished since
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / "solve.json", json.dumps({"meta": meta, "runs": results}, indent=1))
        write_text_atomic(out / "solve.md", table + "\n")
        plot_curves(results, args.agents, out / "learning_curves.png")
    except OSError as error:
        print(table)
        sys.exit(f"python -m lunar_sb3.benchmark solve: error: cannot write the results into {out}: {error}")
    print(table)
    print(f"\nwrote {out / 'solve.json'}, {out / 'solve.md'}, {out / 'learning_curves.png'}")
    return results


def _median_min_max(values: list[float], fmt: str = "{:.0f}") -> str:
    if not values:
        return "–"
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def solve_table(results: list[dict[str, Any]], agents: list[str]) -> str:
    """Markdown: per agent the solve rate, cost to solve (median (min–max) over solved runs) and final eval."""
    rows = [
        "| agent | solved | episodes to solve | env steps to solve | seconds to solve | env steps/s "
        "| eval return | eval ≥ 200 | landed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for agent in agents:
        runs = [r for r in results if r["agent"] == agent]
        solved = [r for r in runs if r["solved"]]
        evals = [r["evaluation"] for r in runs]
        rows.append(
            f"| {LABELS[agent]} | {len(solved)}/{len(runs)} "
            f"| {_median_min_max([r['episodes'] for r in solved])} "
            f"| {_median_min_max([r['steps'] for r in solved])} "
            f"| {_median_min_max([r['seconds'] for r in solved])} "
            f"| {statistics.median(r['steps_per_second'] for r in runs):.0f} "
            f"| {statistics.mean(e['return_mean'] for e in evals):.1f} "
            f"| {100 * statistics.mean(e['solved_share'] for e in evals):.0f} % "
            f"| {100 * statistics.mean(e['outcome_shares']['landed'] for e in evals):.0f} % |"
        )
    first = agents[0]
    for other in agents[1:]:
        rows.append("")
        rows.append(f"{LABELS[first]} ÷ {LABELS[other]}, per seed, median: {ratio_line(results, first, other)}")
    return "\n".join(rows)


def ratio_line(results: list[dict[str, Any]], agent: str, other: str) -> str:
    """Seed-by-seed ratios of two agents: speed over all seeds, costs to solve over seeds both solved."""
    mine = {r["seed"]: r for r in results if r["agent"] == agent}
    theirs = {r["seed"]: r for r in results if r["agent"] == other}
    seeds = sorted(mine.keys() & theirs.keys())
    speed = statistics.median(mine[s]["steps_per_second"] / theirs[s]["steps_per_second"] for s in seeds)
    both = [s for s in seeds if mine[s]["solved"] and theirs[s]["solved"]]
    if not both:
        return f"env steps/s {speed:.2f}×; no seed solved by both"
    seconds = statistics.median(mine[s]["seconds"] / theirs[s]["seconds"] for s in both)
    steps = statistics.median(mine[s]["steps"] / theirs[s]["steps"] for s in both)
    return (
        f"env steps/s {speed:.2f}×, wall seconds to solve {seconds:.2f}×, env steps to solve {steps:.2f}× "
        f"({len(both)} seeds solved by both)"
    )


def plot_curves(results: list[dict[str, Any]], agents: list[str], path: Path) -> None:
    """Training return (100-episode moving average) against env steps, one line per seed, 200 drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(agents), figsize=(5 * len(agents), 4), sharey=True, squeeze=False)
    for ax, agent in zip(axes[0], agents, strict=True):
        for run in (r for r in results if r["agent"] == agent):
            returns = np.asarray(run["curve"]["returns"], dtype=float)
            steps = np.asarray(run["curve"]["timesteps"])
            if len(returns) == 0:
                continue
            window = min(100, len(returns))
            moving = np.convolve(returns, np.ones(window) / window, mode="valid")
            ax.plot(
                steps[window - 1 :], moving, label=f"seed {run['seed']}" + ("" if run["solved"] else " (not solved)")
            )
        ax.axhline(200, color="black", linestyle="--", linewidth=1)
        ax.set_title(LABELS[agent])
        ax.set_xlabel("env steps")
        ax.legend(fontsize=8)
    axes[0][0].set_ylabel("training return, 100-episode mean")
    fig.tight_layout()
    try:
        with atomic_path(path) as temporary:
            fig.savefig(temporary, dpi=100, format="png")
    finally:
        plt.close(fig)
