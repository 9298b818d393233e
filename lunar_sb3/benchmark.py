"""Side-by-side evidence: SoftUpdateDQN against Stable-Baselines3's DQN on Lunar Lander.

``python -m lunar_sb3.benchmark solve``       train K seeds of each agent to the lab's "solved", evaluate, plot
``python -m lunar_sb3.benchmark throughput``  env steps per second on identical settings and envs
``python -m lunar_sb3.benchmark threads``     env steps/s beside a busy process: default torch threads vs one
``python -m lunar_sb3.benchmark zoo``         the same through ``python -m rl_zoo3.train``, as users run it

Runs of different agents are interleaved (seed 0 of each, then seed 1, ...) so that timing ratios are taken
under the same machine load; each run uses one torch thread.
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
import yaml
from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import BaseCallback, CallbackList
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv
from tqdm import tqdm

from lunar_sb3 import SoftUpdateDQN, StopTrainingOnSolved
from lunar_sb3.envs import LAB_ENV_ID
from lunar_sb3.evaluate import evaluate_model
from lunar_sb3.outputs import (
    OneLineArgumentParser,
    OutputError,
    atomic_path,
    check_writable_folder,
    write_text_atomic,
)

LAB_NET = dict(net_arch=[64, 64])
# SB3's DQN as close to the lab as it allows: same network, lr, memory, minibatch, γ, τ and C; its own
# linear ε schedule (1.0 → 0.01 over the first 10 % of the step budget) and its default loss (Huber).
SB3_LAB = dict(
    learning_rate=1e-3,
    buffer_size=100_000,
    learning_starts=64,
    batch_size=64,
    gamma=0.995,
    tau=1e-3,
    train_freq=4,
    gradient_steps=1,
    target_update_interval=4,
    exploration_initial_eps=1.0,
    exploration_final_eps=0.01,
    exploration_fraction=0.1,
    policy_kwargs=LAB_NET,
)
# rl-zoo3's tuned DQN hyperparameters for LunarLander (hyperparams/dqn.yml)
SB3_ZOO_TUNED = dict(
    learning_rate=6.3e-4,
    batch_size=128,
    buffer_size=50_000,
    learning_starts=0,
    gamma=0.99,
    target_update_interval=250,
    train_freq=4,
    gradient_steps=-1,
    exploration_fraction=0.12,
    exploration_final_eps=0.1,
    policy_kwargs=dict(net_arch=[256, 256]),
)
# agent name -> (class, keyword arguments, or the name of a hyperparameter YAML shipped with lunar_sb3)
AGENTS: dict[str, tuple[type, dict[str, Any] | str]] = {
    "soft_dqn": (SoftUpdateDQN, {}),
    "soft_dqn_tuned": (SoftUpdateDQN, "soft_dqn_tuned.yml"),
    "sb3_dqn": (DQN, SB3_LAB),
    "sb3_dqn_zoo": (DQN, SB3_ZOO_TUNED),
}
SOLVE_FILES = ("solve.json", "solve.md", "learning_curves.png")
"""What ``solve`` writes into ``--out``."""
LABELS = {
    "soft_dqn": "SoftUpdateDQN (defaults)",
    "soft_dqn_tuned": "SoftUpdateDQN (tuned preset)",
    "sb3_dqn": "SB3 DQN, lab settings",
    "sb3_dqn_zoo": "SB3 DQN, rl-zoo3 tuned",
}


def agent_kwargs(agent: str) -> tuple[type, dict[str, Any]]:
    """The class and constructor arguments of an agent; a YAML preset is read as rl-zoo3 would read it."""
    algo_class, kwargs = AGENTS[agent]
    if isinstance(kwargs, str):
        from lunar_sb3.zoo import hyperparams_path

        entry = yaml.safe_load(hyperparams_path(kwargs).read_text())[LAB_ENV_ID]
        kwargs = {k: v for k, v in entry.items() if k not in ("n_timesteps", "policy", "callback")}
        if isinstance(kwargs.get("policy_kwargs"), str):
            kwargs["policy_kwargs"] = eval(kwargs["policy_kwargs"])  # the zoo's convention: a Python expression
    return algo_class, kwargs


class EpisodeRecorder(BaseCallback):
    """Keeps every training episode's return and the env step at which it ended (the learning curve)."""

    def __init__(self) -> None:
        super().__init__()
        self.returns: list[float] = []
        self.timesteps: list[int] = []

    def _on_step(self) -> bool:
        if np.any(self.locals["dones"]):
            for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True):
                if done and "episode" in info:
                    self.returns.append(round(float(info["episode"]["r"]), 2))
                    self.timesteps.append(self.num_timesteps)
        return True


def make_lab_env(seed: int) -> DummyVecEnv:
    """The training env every agent gets: LunarLander-v2, no rendering, Monitor statistics, seeded."""
    env = DummyVecEnv([lambda: Monitor(gym.make(LAB_ENV_ID))])
    env.seed(seed)
    return env


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


def run_solve(args: argparse.Namespace) -> None:
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


def throughput_run(agent: str, steps: int, seed: int = 0, threads: int = 1) -> float:
    """Env steps/s of one agent on the lab's settings with ε fixed at 0.1 (so both act greedily 90 % of steps)."""
    th.set_num_threads(threads)
    algo_class, kwargs = agent_kwargs(agent)
    kwargs = {**kwargs, "exploration_initial_eps": 0.1, "exploration_final_eps": 0.1}
    model = algo_class("MlpPolicy", make_lab_env(seed), seed=seed, **kwargs)
    start = time.perf_counter()
    model.learn(steps)
    return steps / (time.perf_counter() - start)


def bare_env_rate(steps: int, seed: int = 0) -> float:
    """Env steps/s of the bare simulator: ``gym.make(LunarLander-v2)`` with random actions, nothing else."""
    env = gym.make(LAB_ENV_ID)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


# Where a training step's time goes: profile entries (file suffix, function name) summed by cumulative time
PROFILE_PARTS = {
    "env (LunarLander.step + wrappers + Monitor)": [("fast_rollout.py", "_step_envs")],
    "action choice": [("fast_rollout.py", "_actions")],
    "gradient step + Polyak": [("soft_dqn.py", "train")],
    "callbacks": [("callbacks.py", "on_step")],
}


def profile_breakdown(steps: int) -> dict[str, float]:
    """Shares of one SoftUpdateDQN training run's time (under cProfile, which inflates small calls alike)."""
    import cProfile
    import pstats

    th.set_num_threads(1)
    algo_class, kwargs = agent_kwargs("soft_dqn")
    model = algo_class("MlpPolicy", make_lab_env(0), seed=0, exploration_initial_eps=0.1, exploration_final_eps=0.1)
    profiler = cProfile.Profile()
    profiler.runcall(model.learn, steps)
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (calls, primitive, tottime, cumtime, callers)
    total = sum(entry[2] for entry in stats.values())
    shares = {}
    for part, functions in PROFILE_PARTS.items():
        seconds = sum(
            entry[3]
            for (file, _, name), entry in stats.items()
            if any(file.endswith(suffix) and name == function for suffix, function in functions)
        )
        shares[part] = seconds / total
    shares["the rest (rollout loop, replay writes, learn's bookkeeping)"] = 1 - sum(shares.values())
    return shares


def run_throughput(args: argparse.Namespace) -> None:
    rates: dict[str, list[float]] = {"soft_dqn": [], "sb3_dqn": [], "bare_env": []}
    for round_ in tqdm(range(args.rounds), desc="interleaved rounds"):
        for agent in ("soft_dqn", "sb3_dqn"):  # same process, one after the other: same machine load
            rates[agent].append(throughput_run(agent, args.steps, seed=round_))
        rates["bare_env"].append(bare_env_rate(args.steps, seed=round_))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    labels = {**LABELS, "bare_env": f"bare {LAB_ENV_ID}, random actions"}
    print(f"env steps/s, median of {args.rounds} interleaved rounds of {args.steps} steps (one torch thread):")
    for name, values in rates.items():
        rounds = ", ".join(f"{v:.0f}" for v in values)
        print(f"  {labels[name]:<36} {medians[name]:8.0f}   ({1e6 / medians[name]:6.1f} µs/step)   rounds: {rounds}")
    print(f"  ratio SoftUpdateDQN ÷ SB3 DQN: {medians['soft_dqn'] / medians['sb3_dqn']:.2f}×")
    # F: what training costs per env step, in units of the simulator's own step
    print(f"  overhead factor F = training µs/step ÷ bare env µs/step: {medians['bare_env'] / medians['soft_dqn']:.2f}")
    if args.profile:
        print(f"where SoftUpdateDQN's time goes (cProfile, {args.steps} steps, cumulative time shares):")
        for part, share in profile_breakdown(args.steps).items():
            print(f"  {part:<62} {100 * share:5.1f} %")


def run_threads(args: argparse.Namespace) -> None:
    """Default torch threads vs one thread for SoftUpdateDQN, with a CPU-bound process competing for a core."""
    default_threads = th.get_num_threads()
    settings = {f"torch default ({default_threads} threads)": default_threads, "one torch thread": 1}
    rates: dict[str, list[float]] = {name: [] for name in settings}
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # the "something else" on a laptop
    try:
        for round_ in tqdm(range(args.rounds), desc="interleaved rounds"):
            for name, threads in settings.items():
                rates[name].append(throughput_run("soft_dqn", args.steps, seed=round_, threads=threads))
    finally:
        busy.kill()
    print(
        f"SoftUpdateDQN env steps/s beside one CPU-bound process ({os.cpu_count()} cores), "
        f"median of {args.rounds} interleaved rounds of {args.steps} steps:"
    )
    for name, values in rates.items():
        print(f"  {name:<28} {statistics.median(values):8.0f}   rounds: {', '.join(f'{v:.0f}' for v in values)}")
    default, one = (statistics.median(values) for values in rates.values())
    print(f"  ratio one thread ÷ default: {one / default:.1f}×")


def zoo_fps(algo: str, steps: int, folder: str, extra: list[str]) -> float:
    """Env steps/s as rl-zoo3 reports them (``time/fps`` of the last log line) for one training run."""
    command = [
        sys.executable,
        "-m",
        "rl_zoo3.train",
        "--algo",
        algo,
        "--env",
        LAB_ENV_ID,
        "-n",
        str(steps),
        "--eval-freq",
        "-1",
        "-f",
        folder,
        "--seed",
        "0",
        "--num-threads",
        "1",
        *extra,
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return float(re.findall(r"\|\s+fps\s+\|\s+(\d+)", output)[-1])


def run_zoo(args: argparse.Namespace) -> None:
    lab = {k: v for k, v in SB3_LAB.items() if k != "policy_kwargs"}
    dqn_params = [f"{key}:{value}" for key, value in lab.items()] + ["policy_kwargs:dict(net_arch=[64,64])"]
    rates: dict[str, list[float]] = {"soft_dqn": [], "dqn": []}
    with tempfile.TemporaryDirectory() as folder:
        for _ in tqdm(range(args.rounds), desc="interleaved rounds"):
            # --verbose 2: soft_dqn's compact progress lines replace the log tables this reads time/fps from
            rates["soft_dqn"].append(zoo_fps("soft_dqn", args.steps, folder, ["--verbose", "2"]))
            rates["dqn"].append(zoo_fps("dqn", args.steps, folder, ["-params", *dqn_params]))
    print(f"rl-zoo3 train, env steps/s (time/fps), median of {args.rounds} rounds of {args.steps} steps:")
    for algo, values in rates.items():
        print(f"  --algo {algo:<9} {statistics.median(values):8.0f}   rounds: {', '.join(f'{v:.0f}' for v in values)}")
    print(f"  ratio soft_dqn ÷ dqn: {statistics.median(rates['soft_dqn']) / statistics.median(rates['dqn']):.2f}×")


def main(argv: list[str] | None = None) -> None:
    parser = OneLineArgumentParser(
        prog="python -m lunar_sb3.benchmark", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    solve = commands.add_parser("solve", help="train K seeds per agent to 'solved', evaluate, plot")
    solve.add_argument("--seeds", type=int, default=5, help="seeds per agent (default 5)")
    solve.add_argument("--seed0", type=int, default=0, help="first seed")
    solve.add_argument("--agents", nargs="+", choices=list(AGENTS), default=["soft_dqn", "sb3_dqn"])
    solve.add_argument("--max-steps", type=int, default=1_500_000, help="step cap per run")
    solve.add_argument("--eval-episodes", type=int, default=100)
    solve.add_argument("--jobs", type=int, default=1, help="runs in parallel (one core each)")
    solve.add_argument("--out", default="benchmark_results", help="folder for solve.json, solve.md, the PNG")
    solve.add_argument("--quick", action="store_true", help="tiny budgets: checks the pipeline, proves nothing")
    throughput = commands.add_parser("throughput", help="env steps/s, SoftUpdateDQN vs SB3 DQN, same settings")
    throughput.add_argument("--steps", type=int, default=20_000, help="env steps per run (default 20000)")
    throughput.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    throughput.add_argument(
        "--no-profile", dest="profile", action="store_false", help="skip the cProfile breakdown of the training step"
    )
    threads = commands.add_parser("threads", help="env steps/s beside a busy process: default vs one torch thread")
    threads.add_argument("--steps", type=int, default=3_000, help="env steps per run (default 3000)")
    threads.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    zoo = commands.add_parser("zoo", help="env steps/s through rl_zoo3.train, soft_dqn vs dqn (lab settings)")
    zoo.add_argument("--steps", type=int, default=30_000, help="env steps per run (default 30000)")
    zoo.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    args = parser.parse_args(argv)
    command = commands.choices[args.command]  # its errors name the subcommand: "... benchmark solve: error: ..."
    if args.command == "solve":
        if args.quick:
            args.seeds, args.max_steps, args.eval_episodes = min(args.seeds, 2), 2_000, 2
        for option in ("seeds", "max_steps", "eval_episodes", "jobs"):
            _require_positive(command, args, option)
        if args.seed0 < 0:
            command.error(f"--seed0 must be >= 0 (seeds are non-negative), got {args.seed0}")
        try:
            check_writable_folder(args.out, SOLVE_FILES)  # before hours of training, not after
        except OutputError as error:
            command.error(str(error))
        run_solve(args)
    else:
        for option in ("steps", "rounds"):
            _require_positive(command, args, option)
        {"throughput": run_throughput, "threads": run_threads, "zoo": run_zoo}[args.command](args)


def _require_positive(parser: argparse.ArgumentParser, args: argparse.Namespace, option: str) -> None:
    """argparse's own one-line usage error (exit status 2) for a count that must be >= 1."""
    value = getattr(args, option)
    if value < 1:
        parser.error(f"--{option.replace('_', '-')} must be >= 1, got {value}")


if __name__ == "__main__":
    main()
