"""``throughput``, ``threads`` and ``zoo``: env steps per second, always as ratios measured side by side."""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from tqdm import tqdm

from lunar_sb3.benchmark.agents import LABELS, SB3_LAB, agent_kwargs, make_lab_env
from lunar_sb3.envs import LAB_ENV_ID
from lunar_sb3.soft_dqn.jit import HAS_NUMBA
from lunar_sb3.soft_dqn.prioritized import PrioritizedReplayBuffer


def throughput_run(agent: str, steps: int, seed: int = 0, threads: int = 1, paths: dict | None = None) -> float:
    """Env steps/s of one agent on the lab's settings with ε fixed at 0.1 (so both act greedily 90 % of steps).

    ``paths``, if given, receives the agent's training path (SoftUpdateDQN's ``fast_path_status``).
    """
    th.set_num_threads(threads)
    algo_class, kwargs = agent_kwargs(agent)
    kwargs = {**kwargs, "exploration_initial_eps": 0.1, "exploration_final_eps": 0.1}
    model = algo_class("MlpPolicy", make_lab_env(seed), seed=seed, **kwargs)
    start = time.perf_counter()
    model.learn(steps)
    rate = steps / (time.perf_counter() - start)
    if paths is not None:
        paths[agent] = getattr(model, "fast_path_status", "SB3's own loop")
    return rate


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
    """Env steps/s of ``args.agents`` and of the bare env, interleaved; ratios to SoftUpdateDQN's defaults."""
    agents = list(dict.fromkeys(["soft_dqn", *args.agents]))  # the defaults are every ratio's reference
    rates: dict[str, list[float]] = {name: [] for name in [*agents, "bare_env"]}
    paths: dict[str, str] = {}
    for round_ in tqdm(range(args.rounds), desc="interleaved rounds"):
        for agent in agents:  # same process, one after the other: same machine load
            rates[agent].append(throughput_run(agent, args.steps, seed=round_, paths=paths))
        rates["bare_env"].append(bare_env_rate(args.steps, seed=round_))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    labels = {**LABELS, "bare_env": f"bare {LAB_ENV_ID}, random actions"}
    print(f"env steps/s, median of {args.rounds} interleaved rounds of {args.steps} steps (one torch thread):")
    for name, values in rates.items():
        rounds = ", ".join(f"{v:.0f}" for v in values)
        print(f"  {labels[name]:<36} {medians[name]:8.0f}   ({1e6 / medians[name]:6.1f} µs/step)   rounds: {rounds}")
    for agent in agents[1:]:
        ratio = medians[agent] / medians["soft_dqn"]
        print(f"  ratio {labels[agent]} ÷ SoftUpdateDQN (defaults): {ratio:.2f}   [{paths[agent]}]")
    if "sb3_dqn" in agents:
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


# ---------------------------------------------------------------------------------------------------------------
# Prioritized replay's cost per minibatch
# ---------------------------------------------------------------------------------------------------------------
def _filled_buffers(buffer_size: int, use_numba: bool, seed: int = 0) -> tuple[ReplayBuffer, PrioritizedReplayBuffer]:
    """A uniform and a prioritized buffer with LunarLander's spaces, full of random data and priorities."""
    observation_space = spaces.Box(-np.inf, np.inf, shape=(8,), dtype=np.float32)
    action_space = spaces.Discrete(4)
    rng = np.random.default_rng(seed)
    uniform = ReplayBuffer(buffer_size, observation_space, action_space, device="cpu")
    prioritized = PrioritizedReplayBuffer(buffer_size, observation_space, action_space, device="cpu")
    for buffer in (uniform, prioritized):
        buffer.observations[:] = rng.standard_normal(buffer.observations.shape, dtype=np.float32)
        buffer.next_observations[:] = rng.standard_normal(buffer.next_observations.shape, dtype=np.float32)
        buffer.actions[:] = rng.integers(0, 4, size=buffer.actions.shape)
        buffer.rewards[:] = rng.standard_normal(buffer.rewards.shape, dtype=np.float32)
        buffer.full = True
    prioritized.sum_tree.rebuild((np.abs(rng.standard_normal(buffer_size)) + 1e-6) ** prioritized.alpha)
    prioritized.max_priority = 5.0
    prioritized.use_numba = use_numba
    return uniform, prioritized


def prioritized_overhead(
    buffer_size: int = 1_000_000, batch_size: int = 64, rounds: int = 7, calls: int = 500
) -> dict[str, float]:
    """Microseconds per minibatch: SB3's uniform ``sample`` vs prioritized ``sample`` + ``update_priorities``.

    Measured side by side, interleaved in rounds, and the median round is reported, so that load from
    other processes affects both alike. Keys: ``uniform_us``, ``python_us``, ``python_overhead_us`` and, when
    Numba is available, ``numba_us``, ``numba_overhead_us``.
    """
    uniform, prioritized = _filled_buffers(buffer_size, use_numba=False)
    variants = {"uniform": None, "python": False}
    if HAS_NUMBA:
        variants["numba"] = True
    td_errors = np.random.default_rng(1).standard_normal(batch_size)

    def run(use_numba: bool | None) -> float:
        start = time.perf_counter()
        if use_numba is None:
            for _ in range(calls):
                uniform.sample(batch_size)
        else:
            prioritized.use_numba = use_numba
            for _ in range(calls):
                samples = prioritized.sample(batch_size)
                prioritized.update_priorities(samples.indices, td_errors)
        return (time.perf_counter() - start) / calls * 1e6

    for use_numba in variants.values():  # warm-up: compile, fault in pages
        run(use_numba)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, use_numba in variants.items():
            times[name].append(run(use_numba))
    result = {f"{name}_us": float(np.median(values)) for name, values in times.items()}
    for name in variants:
        if name != "uniform":
            result[f"{name}_overhead_us"] = result[f"{name}_us"] - result["uniform_us"]
    return result
