"""``peers``: the agents a learner would train instead, trained and tested here exactly like the robust preset.

Each run is ``python -m rl_zoo3.train --algo {dqn,qrdqn,ppo} --env LunarLander-v3 --seed S -f <out>/logs/seed_S
--eval-freq -1 --num-threads 1``: rl-zoo3's own tuned LunarLander hyperparameters (its yml files have an entry for
LunarLander-v3, not v2; ``lunar_sb3``'s LunarLander-v2 is v3's dynamics under the lab's name, so the episodes are
the same). Its final model (the zoo keeps no best model with ``--eval-freq -1``) plays the robust benchmark's test
episodes: greedy, reset with seeds 50,000 + 1,000·S + i, ended and labelled by ``LandingOutcome``.

Runs go seed-major (seed S of every agent, then S + 1), so a cut session still has all agents on the first seeds,
and each finished run is kept in ``<out>/runs/`` and skipped when the command is run again: the benchmark resumes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch as th
from sb3_contrib import QRDQN
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm

from lunar_sb3.benchmark.peers_report import PEER_ENV_ID, write_peers_results
from lunar_sb3.benchmark.robust import MAX_EVAL_EPISODES, TEST_SEED_BASE, TEST_SEED_STRIDE, first_test_seed
from lunar_sb3.evaluation import evaluate_model, find_vec_normalize, load_vec_normalize
from lunar_sb3.outputs import RUN_NAME, OutputError, check_writable_folder, write_text_atomic

PEERS: dict[str, tuple[type[BaseAlgorithm], str]] = {
    "dqn": (DQN, "SB3 DQN (rl-zoo3 hyperparameters)"),
    "qrdqn": (QRDQN, "sb3-contrib QR-DQN (rl-zoo3 hyperparameters)"),
    "ppo": (PPO, "SB3 PPO (rl-zoo3 hyperparameters)"),
}
"""zoo algo name: (the class its zips load with, the label reports use)."""
PEERS_FILES = ("peers.json", "peers.md", "peers_outcomes.png")
"""What ``peers`` writes into ``--out`` (beside ``logs/`` and ``runs/``)."""
DEFAULT_OURS = Path("results/robust/levers/n_steps_3_margin/robust.json")
"""The shipped robust preset on seeds 100-104, the peers' default seeds and test episodes."""


def add_peers_parser(commands: Any) -> argparse.ArgumentParser:
    """The ``peers`` subcommand's options (``commands``: the benchmark's ``add_subparsers`` object)."""
    peers = commands.add_parser("peers", help="rl-zoo3's DQN, QR-DQN and PPO on the robust benchmark's test episodes")
    peers.add_argument("--seeds", type=int, default=5, help="training seeds per agent (default 5)")
    peers.add_argument("--seed0", type=int, default=100, help="first seed (default 100, as the robust benchmark)")
    peers.add_argument(
        "--algos",
        nargs="+",
        choices=list(PEERS),
        default=list(PEERS),
        help="peers to train (default: all; the report also shows the others' runs kept in --out)",
    )
    peers.add_argument("--max-steps", type=int, help="step budget per run, rl_zoo3.train -n (default: the zoo's)")
    peers.add_argument(
        "--eval-episodes",
        type=int,
        default=100,
        help=f"test episodes per run, on seeds {TEST_SEED_BASE} + {TEST_SEED_STRIDE}·seed + i (default 100)",
    )
    peers.add_argument("--jobs", type=int, default=1, help="runs in parallel (one core each)")
    peers.add_argument("--out", default="results/peers", help="folder for peers.json, peers.md, the PNG, logs/, runs/")
    peers.add_argument(
        "--no-train",
        action="store_true",
        help="train nothing: write the three files from the runs kept so far (e.g. while a run is under way)",
    )
    peers.add_argument(
        "--ours",
        type=Path,
        default=DEFAULT_OURS,
        help=f"robust.json of our preset, shown beside the peers (default {DEFAULT_OURS}; skipped if absent)",
    )
    return peers


def check_peers_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """One-line usage errors (exit status 2) before any training."""
    from lunar_sb3.benchmark.ablation import STATS_EXTRA, stats_available

    if not stats_available():  # the report's IQM and intervals, hours after the training started
        parser.error(f"needs {STATS_EXTRA}")
    for option in ("seeds", "eval_episodes", "jobs") + (("max_steps",) if args.max_steps is not None else ()):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1, got {getattr(args, option)}")
    if args.seed0 < 0:
        parser.error(f"--seed0 must be >= 0 (seeds are non-negative), got {args.seed0}")
    if args.eval_episodes > MAX_EVAL_EPISODES:
        parser.error(f"--eval-episodes must be <= {MAX_EVAL_EPISODES} (more would overlap the next seed's episodes)")
    if args.ours.exists() and not args.ours.is_file():
        parser.error(f"--ours {args.ours}: not a file")
    try:
        check_writable_folder(args.out, PEERS_FILES)
    except OutputError as error:
        parser.error(str(error))


def train_command(algo: str, seed: int, log_folder: Path, max_steps: int | None) -> list[str]:
    """The ``rl_zoo3.train`` command line of one run, exactly as a user would type it."""
    command = [
        sys.executable, "-m", "rl_zoo3.train", "--algo", algo, "--env", PEER_ENV_ID, "--seed", str(seed),
        "-f", str(log_folder), "--eval-freq", "-1", "--num-threads", "1",
    ]  # fmt: skip
    return command + (["-n", str(max_steps)] if max_steps is not None else [])


def newest_run(log_folder: Path, algo: str) -> Path | None:
    """The run folder ``<log_folder>/<algo>/LunarLander-v3_<N>`` with the largest N (the one just trained)."""
    runs = []
    for candidate in (log_folder / algo).glob(f"{PEER_ENV_ID}_*"):
        match = RUN_NAME.fullmatch(candidate.name)
        if match and match["env_id"] == PEER_ENV_ID and candidate.is_dir():
            runs.append((int(match["run_id"]), candidate))
    return max(runs)[1] if runs else None


def run_file(out: Path, algo: str, seed: int) -> Path:
    return out / "runs" / f"{algo}_seed_{seed}.json"


def _settings(max_steps: int | None, eval_episodes: int) -> dict[str, Any]:
    return {"max_steps": max_steps, "eval_episodes": eval_episodes}


def finished_run(out: Path, algo: str, seed: int, max_steps: int | None, eval_episodes: int) -> dict | None:
    """A run kept by an earlier call with the same budget and test episodes, or None (then it is (re)done)."""
    try:
        record = json.loads(run_file(out, algo, seed).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    same = all(record.get(key) == value for key, value in _settings(max_steps, eval_episodes).items())
    return record if same and "error" not in record else None


def peer_run(algo: str, seed: int, out: Path, max_steps: int | None, eval_episodes: int) -> dict[str, Any]:
    """Train one run in a zoo subprocess (wall time measured around it), test its final model, keep the record.

    A run whose training finished but whose test was cut keeps its training record (``<algo>_train.json`` in
    ``<out>/logs/seed_<S>``) and is only tested again, so its wall time stays that of its one training.
    """
    th.set_num_threads(1)
    log_folder = out / "logs" / f"seed_{seed}"
    log_folder.mkdir(parents=True, exist_ok=True)
    trained_file = log_folder / f"{algo}_train.json"
    record: dict[str, Any] | None = None
    try:
        record = json.loads(trained_file.read_text(encoding="utf-8"))
        if record.get("max_steps") != max_steps or not Path(record["run"]).is_dir():
            record = None
    except (OSError, ValueError, KeyError):
        record = None
    if record is None:
        command = train_command(algo, seed, log_folder, max_steps)
        environment = {**os.environ, "MPLBACKEND": "Agg", "SDL_VIDEODRIVER": "dummy", "OMP_NUM_THREADS": "1"}
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        start = time.perf_counter()
        with open(log_folder / f"{algo}_train.log", "w", encoding="utf-8") as log:
            finished = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
        seconds = time.perf_counter() - start
        record = {
            "algo": algo,
            "label": PEERS[algo][1],
            "seed": seed,
            "max_steps": max_steps,
            "command": " ".join(command),
            "started_utc": started,
            "wall_seconds": round(seconds, 1),
        }
        run = newest_run(log_folder, algo)
        final = None if run is None else run / f"{PEER_ENV_ID}.zip"
        if finished.returncode != 0 or final is None or not final.is_file():
            text = (log_folder / f"{algo}_train.log").read_text(encoding="utf-8", errors="replace").strip()
            last = text.splitlines()[-1].strip() if text else "no output"
            record = {**record, "eval_episodes": eval_episodes}
            record["error"] = f"rl_zoo3.train exited with {finished.returncode}: {last}"
            write_text_atomic(run_file(out, algo, seed), json.dumps(record, indent=1) + "\n")
            return record
        record["run"] = str(run)
        write_text_atomic(trained_file, json.dumps(record, indent=1) + "\n")
    record = {**record, **evaluate_run(algo, seed, Path(record["run"]), eval_episodes)}
    write_text_atomic(run_file(out, algo, seed), json.dumps(record, indent=1) + "\n")
    return record


def evaluate_run(algo: str, seed: int, run: Path, eval_episodes: int) -> dict[str, Any]:
    """The final model of ``run``, loaded with its own class, on the test episodes of ``seed``."""
    model_path = run / f"{PEER_ENV_ID}.zip"
    model = PEERS[algo][0].load(model_path, device="cpu", custom_objects={"verbose": 0})
    stats = find_vec_normalize(model_path, PEER_ENV_ID)  # none of the three normalizes today; a future yml may
    vec_normalize = None if stats is None else load_vec_normalize(stats, PEER_ENV_ID)
    start = time.perf_counter()
    result = evaluate_model(
        model, PEER_ENV_ID, n_episodes=eval_episodes, seed=first_test_seed(seed), vec_normalize=vec_normalize
    )
    episodes = result["episodes"]
    return {
        "eval_episodes": eval_episodes,
        "model": model_path.name,
        "model_class": type(model).__name__,
        "steps": int(model.num_timesteps),
        "test_seeds": [first_test_seed(seed), first_test_seed(seed) + eval_episodes - 1],
        "test_seconds": round(time.perf_counter() - start, 1),
        "evaluation": {**result["summary"], "return_min": float(min(episodes["returns"]))},
        "episodes": {**episodes, "returns": [round(r, 2) for r in episodes["returns"]]},
    }


def run_peers(args: argparse.Namespace) -> None:
    """``python -m lunar_sb3.benchmark peers``: train what is not kept yet, test, write the three files after each."""
    out = Path(args.out).absolute()
    (out / "runs").mkdir(parents=True, exist_ok=True)
    seeds = range(args.seed0, args.seed0 + args.seeds)
    order = [(algo, seed) for seed in seeds for algo in dict.fromkeys(args.algos)]  # seed-major: all agents first
    runs: dict[tuple[str, int], dict[str, Any]] = {}
    todo = []
    for algo, seed in order:
        kept = finished_run(out, algo, seed, args.max_steps, args.eval_episodes)
        if kept is None:
            todo.append((algo, seed))
        else:
            runs[(algo, seed)] = kept
    kept_count = len(runs)
    others = [(algo, seed) for seed in seeds for algo in PEERS if algo not in args.algos]
    for algo, seed in others:  # reported, not trained: e.g. a slow peer left to a later call
        kept = finished_run(out, algo, seed, args.max_steps, args.eval_episodes)
        if kept is not None:
            runs[(algo, seed)] = kept
    if len(runs) > kept_count:
        print(f"{len(runs) - kept_count} kept runs of peers not in --algos are reported too", flush=True)
    if args.no_train:
        print(
            f"{kept_count} of {len(order)} runs kept; --no-train: not training "
            + (", ".join(f"{algo} seed {seed}" for algo, seed in todo) or "anything (all are kept)"),
            flush=True,
        )
        todo = []
    else:
        print(f"{kept_count} of {len(order)} runs kept from earlier calls; {len(todo)} to train", flush=True)
    meta = {
        "command": "python -m lunar_sb3.benchmark " + " ".join(a for a in sys.argv[1:] if a != "--no-train"),
        "runs_planned": len(order) + sum(key in runs for key in others),
        "env_id": PEER_ENV_ID,
        "cpu_count": os.cpu_count(),
        "torch": th.__version__,
        "jobs": args.jobs,
        "max_steps": args.max_steps,
        "eval_episodes": args.eval_episodes,
        "test_seeds": f"{TEST_SEED_BASE} + {TEST_SEED_STRIDE}·seed + i, i < {args.eval_episodes}",
    }

    def publish() -> None:
        ordered = [runs[(algo, seed)] for seed in seeds for algo in PEERS if (algo, seed) in runs]
        write_peers_results(out, {**meta, "date": time.strftime("%Y-%m-%d")}, ordered, args.ours)

    if runs:
        publish()
    elif args.no_train:
        sys.exit(f"python -m lunar_sb3.benchmark peers: error: --no-train: no finished run kept in {out / 'runs'}")
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(peer_run, a, s, out, args.max_steps, args.eval_episodes): (a, s) for a, s in todo}
        for future in as_completed(futures):
            record = future.result()
            runs[futures[future]] = record
            status = record.get("error") or (
                f"{record['evaluation']['return_mean']:.1f} mean, "
                f"{100 * record['evaluation']['outcome_shares']['landed']:.0f} % landed, {record['wall_seconds']:.0f} s"
            )
            print(f"{time.strftime('%H:%M:%S')} {record['algo']} seed {record['seed']}: {status}", flush=True)
            publish()
    failed = [r for r in runs.values() if "error" in r]
    print(f"wrote {out / 'peers.json'}, {out / 'peers.md'}, {out / 'peers_outcomes.png'}")
    if failed:
        sys.exit(
            f"python -m lunar_sb3.benchmark peers: error: {len(failed)} of {len(runs)} runs failed (see "
            f"{out / 'logs'}/seed_<S>/<algo>_train.log): "
            + "; ".join(f"{r['algo']} seed {r['seed']}: {r['error']}" for r in failed)
        )
