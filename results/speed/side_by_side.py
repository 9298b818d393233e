"""Two checkouts of lunar_sb3 measured side by side in one run: env steps/s and first-run compile time.

Usage (each checkout with its own venv):

    python results/speed/side_by_side.py --before /path/to/old/.venv/bin/python --after .venv/bin/python

Rounds are interleaved (before, after, after, before, ...) so that whatever else runs on the machine slows both
alike; only the ratios after ÷ before mean anything. Each measurement is a fresh subprocess:

* throughput: ``lunar_sb3.benchmark.speed.throughput_run`` of that checkout (ε fixed at 0.1, 20k steps, one torch
  thread) after a short warm-up run, so that Numba's cache load is not counted;
* compile: ``SoftUpdateDQN("MlpPolicy", "LunarLander-v2").learn(1000)`` with an empty ``NUMBA_CACHE_DIR``
  (compiles everything) minus the same with that cache filled (loads it): the seconds a first run pays.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

# agent -> SoftUpdateDQN options, beyond the benchmark's own agents: the robust preset's network and target
EXTRA_AGENTS = {"robust_net": dict(double_q=True, policy_kwargs=dict(net_arch=[256, 256]))}
AGENTS = ("soft_dqn", "rainbow_lite", "robust_net")


def worker_throughput(agent: str, steps: int, seed: int) -> dict:
    from lunar_sb3 import SoftUpdateDQN
    from lunar_sb3.benchmark import agents, speed

    for name, options in EXTRA_AGENTS.items():
        agents.AGENTS[name] = (SoftUpdateDQN, options)
    speed.throughput_run(agent, 500, seed=seed)  # warm-up: Numba's cache loaded, pages touched
    paths: dict[str, str] = {}
    rate = speed.throughput_run(agent, steps, seed=seed, paths=paths)
    return {"rate": rate, "path": paths[agent]}


def worker_learn_1000() -> dict:
    import torch as th

    th.set_num_threads(1)
    start = time.perf_counter()
    from lunar_sb3 import SoftUpdateDQN

    SoftUpdateDQN("MlpPolicy", "LunarLander-v2", seed=0).learn(1000)
    return {"seconds": time.perf_counter() - start}


def run_worker(python: str, arguments: list[str], env: dict | None = None) -> dict:
    command = [python, os.path.abspath(__file__), "--worker", *arguments]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    with tempfile.TemporaryDirectory() as folder:  # not the current folder: no other checkout on sys.path
        run = subprocess.run(command, capture_output=True, text=True, check=True, env=environment, cwd=folder)
    output = run.stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", help="python of the checkout measured first (today's)")
    parser.add_argument("--after", help="python of the new checkout")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--compile-rounds", type=int, default=3)
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, *rest = args.worker
        result = worker_learn_1000() if kind == "learn1000" else worker_throughput(rest[0], int(rest[1]), int(rest[2]))
        print(json.dumps(result))
        return

    checkouts = {"before": args.before, "after": args.after}
    rates = {(agent, name): [] for agent in AGENTS for name in checkouts}
    paths = {}
    for round_ in range(args.rounds):
        order = list(checkouts) if round_ % 2 == 0 else list(checkouts)[::-1]
        for agent in AGENTS:
            for name in order:
                result = run_worker(checkouts[name], ["throughput", agent, str(args.steps), str(round_)])
                rates[(agent, name)].append(result["rate"])
                paths[(agent, name)] = result["path"]
        print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    compile_seconds = {name: [] for name in checkouts}
    for round_ in range(args.compile_rounds):
        order = list(checkouts) if round_ % 2 == 0 else list(checkouts)[::-1]
        for name in order:
            with tempfile.TemporaryDirectory() as cache:
                cold = run_worker(checkouts[name], ["learn1000"], {"NUMBA_CACHE_DIR": cache})["seconds"]
                warm = run_worker(checkouts[name], ["learn1000"], {"NUMBA_CACHE_DIR": cache})["seconds"]
            compile_seconds[name].append((cold, warm))

    print(f"env steps/s, median of {args.rounds} interleaved rounds of {args.steps} steps (one torch thread):")
    for agent in AGENTS:
        before, after = (statistics.median(rates[(agent, name)]) for name in checkouts)
        print(f"  {agent:<13} before {before:8.0f}  after {after:8.0f}  after/before {after / before:5.2f}")
        for name in checkouts:
            rounds = ", ".join(f"{v:.0f}" for v in rates[(agent, name)])
            print(f"      {name:<6} [{paths[(agent, name)]}] rounds: {rounds}")
    print(f"learn(1000) from a fresh process, median of {args.compile_rounds} interleaved rounds (cold / warm cache):")
    medians = {}
    for name, pairs in compile_seconds.items():
        cold, warm = statistics.median(c for c, _ in pairs), statistics.median(w for _, w in pairs)
        medians[name] = cold - warm
        details = ", ".join(f"{c:.1f}/{w:.1f}" for c, w in pairs)
        print(
            f"  {name:<6} cold {cold:5.1f} s  warm {warm:5.1f} s  first-run compile {cold - warm:5.1f} s  ({details})"
        )
    print(f"  compile after/before: {medians['after'] / medians['before']:.2f}")


if __name__ == "__main__":
    main()
