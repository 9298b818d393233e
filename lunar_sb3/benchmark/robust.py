"""``robust``: train K seeds with a preset through ``rl_zoo3.train``, as a user would, and test what they land.

Each seed is one ``python -m rl_zoo3.train --algo soft_dqn --env LunarLander-v2 -conf <conf> --seed S
-f <out>/logs/seed_S --eval-freq -1 --num-threads 1`` subprocess (its own log folder, so parallel runs never race
for a run number; ``--eval-freq -1`` because the preset's ``LandingEvalCallback`` does the evaluating). Then the
model ``--load-best`` would show (the run's ``best_model.zip``, else the final model) plays ``--eval-episodes``
greedy episodes on seeds 50,000 + 1,000·S + i, which no selection saw: the preset's ``LandingEvalCallback`` picks
the best model on seeds 20,000 + i and confirms it on 30,000 + i (i < 100), so for any S the test episodes are
disjoint from both.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch as th
from tqdm import tqdm

from lunar_sb3.benchmark.robust_report import aggregate, robust_table
from lunar_sb3.envs import LAB_ENV_ID
from lunar_sb3.evaluation import evaluate_model, load_model
from lunar_sb3.landing_eval import BEST_MODEL_FILE, HISTORY_FILE
from lunar_sb3.outputs import RUN_NAME, write_text_atomic
from lunar_sb3.pictures import outcome_chart

ROBUST_FILES = ("robust.json", "robust.md", "robust_outcomes.png")
"""What ``robust`` writes into ``--out`` (beside ``logs/``, the zoo's run folders)."""
RESULT_FILE = "result.json"
"""One seed's record, written into ``logs/seed_<S>`` when it is done: a repeated command resumes after it."""
TEST_SEED_BASE, TEST_SEED_STRIDE = 50_000, 1_000
"""Final-test episode i of training seed S is reset with seed 50,000 + 1,000·S + i (i < 1,000)."""
MAX_EVAL_EPISODES = TEST_SEED_STRIDE
QUICK_CALLBACK = (
    "[{'lunar_sb3.LandingEvalCallback': {'eval_freq': 1000, 'n_eval_episodes': 2, 'n_confirm_episodes': 2}}]"
)
"""``--quick``: evaluate every 1,000 steps on 2 episodes (confirm on 2), so that a 2,000-step run has a best model."""


def add_robust_parser(commands: Any) -> argparse.ArgumentParser:
    """The ``robust`` subcommand's options (``commands``: the benchmark's ``add_subparsers`` object)."""
    robust = commands.add_parser(
        "robust", help="train K seeds with a robust-lander preset via rl_zoo3.train, test them"
    )
    robust.add_argument("--seeds", type=int, default=5, help="training seeds (default 5)")
    robust.add_argument("--seed0", type=int, default=0, help="first seed (default 0)")
    robust.add_argument("--conf", help="hyperparameter YAML for rl_zoo3.train -conf (default: soft_dqn_robust.yml)")
    robust.add_argument("--max-steps", type=int, help="step cap per run, rl_zoo3.train -n (default: the YAML's)")
    robust.add_argument(
        "--eval-episodes",
        type=int,
        default=100,
        help=f"test episodes per seed, on seeds {TEST_SEED_BASE} + {TEST_SEED_STRIDE}·seed + i (default 100)",
    )
    robust.add_argument(
        "--params",
        nargs="+",
        default=[],
        metavar="KEY:VALUE",
        help="hyperparameters over the preset's, passed to rl_zoo3.train -params (e.g. n_steps:3 dueling:True)",
    )
    robust.add_argument(
        "--save-freq",
        type=int,
        help="also keep a model every N env steps (rl_zoo3.train --save-freq, models only), e.g. to act with "
        "several checkpoints afterwards (benchmark q-average)",
    )
    robust.add_argument("--jobs", type=int, default=1, help="runs in parallel (one core each)")
    robust.add_argument("--out", default="results/robust", help="folder for robust.json, robust.md, the PNG, logs/")
    robust.add_argument(
        "--quick", action="store_true", help="tiny budgets (-n 2000, 2 test episodes): checks the pipeline only"
    )
    return robust


def check_robust_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """One-line usage errors (exit status 2) before any training; fills in the defaults of ``--conf`` / ``--quick``."""
    from lunar_sb3.outputs import OutputError, check_writable_folder
    from lunar_sb3.presets import hyperparams_path

    if args.quick:
        args.max_steps, args.eval_episodes = 2_000, 2
    optional = tuple(option for option in ("max_steps", "save_freq") if getattr(args, option) is not None)
    for option in ("seeds", "eval_episodes", "jobs") + optional:
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1, got {getattr(args, option)}")
    if args.seed0 < 0:
        parser.error(f"--seed0 must be >= 0 (seeds are non-negative), got {args.seed0}")
    if args.eval_episodes > MAX_EVAL_EPISODES:
        parser.error(
            f"--eval-episodes must be <= {MAX_EVAL_EPISODES} (seed S tests on {TEST_SEED_BASE} + "
            f"{TEST_SEED_STRIDE}·S + i; more would overlap the next seed's episodes), got {args.eval_episodes}"
        )
    args.conf = args.conf or str(hyperparams_path("soft_dqn_robust.yml"))
    if not Path(args.conf).is_file():
        parser.error(f"--conf {args.conf}: no such file")
    try:
        check_writable_folder(args.out, ROBUST_FILES)  # before hours of training, not after
    except OutputError as error:
        parser.error(str(error))


def first_test_seed(seed: int) -> int:
    """The reset seed of final-test episode 0 for training seed ``seed``."""
    return TEST_SEED_BASE + TEST_SEED_STRIDE * seed


def train_command(
    conf: Path,
    seed: int,
    log_folder: Path,
    max_steps: int | None,
    quick: bool,
    params: list[str] | None = None,
    save_freq: int | None = None,
) -> list[str]:
    """The ``rl_zoo3.train`` command line of one seed, exactly as a user would type it."""
    command = [
        sys.executable, "-m", "rl_zoo3.train", "--algo", "soft_dqn", "--env", LAB_ENV_ID, "-conf", str(conf),
        "--seed", str(seed), "-f", str(log_folder), "--eval-freq", "-1", "--num-threads", "1",
    ]  # fmt: skip
    if max_steps is not None:
        command += ["-n", str(max_steps)]
    if save_freq is not None:
        command += ["--save-freq", str(save_freq)]
    params = [*(params or []), *([f"callback:{QUICK_CALLBACK}"] if quick else [])]
    if save_freq is not None:
        params.append("keep_replay_buffers:0")  # checkpoints to act with, not to resume from: 300k-step memories
    if params:
        command += ["-params", *params]
    return command


def newest_run(log_folder: Path) -> Path | None:
    """The run folder ``<log_folder>/soft_dqn/LunarLander-v2_<N>`` with the largest N (the one just trained)."""
    algo_folder = log_folder / "soft_dqn"
    runs = []
    for candidate in algo_folder.glob(f"{LAB_ENV_ID}_*"):
        match = RUN_NAME.fullmatch(candidate.name)
        if match and match["env_id"] == LAB_ENV_ID and candidate.is_dir():
            runs.append((int(match["run_id"]), candidate))
    return max(runs)[1] if runs else None


def robust_run(
    seed: int,
    conf: Path,
    out: Path,
    max_steps: int | None,
    eval_episodes: int,
    quick: bool,
    params: list[str] | None = None,
    save_freq: int | None = None,
) -> dict[str, Any]:
    """Train one seed in a zoo subprocess (wall time measured around it), then test its best (else final) model."""
    th.set_num_threads(1)
    log_folder = out / "logs" / f"seed_{seed}"
    log_folder.mkdir(parents=True, exist_ok=True)
    command = train_command(conf, seed, log_folder, max_steps, quick, params, save_freq)
    record: dict[str, Any] = {"seed": seed, "command": " ".join(command)}
    done = _read_history(log_folder / RESULT_FILE)
    if done.get("command") == record["command"] and "error" not in done:
        return done  # resumed: this seed trained and was tested by an earlier run of the same command
    run = newest_run(log_folder)
    if run is not None and (run / f"{LAB_ENV_ID}.zip").is_file() and _command_of(run) == " ".join(command[1:]):
        seconds = _training_seconds(run)  # trained by an earlier, interrupted run of the benchmark: test it only
    else:
        environment = {**os.environ, "MPLBACKEND": "Agg", "SDL_VIDEODRIVER": "dummy"}
        start = time.perf_counter()
        with open(log_folder / "train.log", "w", encoding="utf-8") as log:
            finished = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
        seconds = time.perf_counter() - start
        run = newest_run(log_folder)
        final = None if run is None else run / f"{LAB_ENV_ID}.zip"
        if finished.returncode != 0 or final is None or not final.is_file():
            lines = (log_folder / "train.log").read_text(encoding="utf-8", errors="replace").strip().splitlines()
            last = lines[-1].strip() if lines else "no output"  # the zoo's one-line error, or a traceback's last
            return {
                **record,
                "wall_seconds": round(seconds, 1),
                "error": f"rl_zoo3.train exited with {finished.returncode}: {last}",
            }
    record["wall_seconds"] = round(seconds, 1)
    final = run / f"{LAB_ENV_ID}.zip"
    best = run / BEST_MODEL_FILE
    tested = best if best.is_file() else final
    final_model = load_model(final)
    history = _read_history(run / HISTORY_FILE)
    model = final_model if tested == final else load_model(tested)
    result = evaluate_model(model, LAB_ENV_ID, n_episodes=eval_episodes, seed=first_test_seed(seed))
    returns = result["episodes"]["returns"]
    result_record = {
        **record,
        "run": str(run),
        "model": tested.name,
        "steps": int(final_model.num_timesteps),
        "episodes": int(getattr(final_model, "finished_episodes", 0)),
        "bar_met_at": history.get("bar_met_at"),
        "best_at": (history.get("best") or {}).get("timesteps"),
        "selection_evaluations": len(history.get("evaluations", [])),
        "selection": _kept_figures(history, "selection"),
        "confirmation": _kept_figures(history, "confirmation"),
        "test_seeds": [first_test_seed(seed), first_test_seed(seed) + eval_episodes - 1],
        "evaluation": {**result["summary"], "return_min": float(min(returns))},
        "returns": [round(r, 2) for r in returns],
    }
    write_text_atomic(log_folder / RESULT_FILE, json.dumps(result_record, indent=1) + "\n")
    return result_record


def _command_of(run: Path) -> str:
    """The command line the zoo saved for a run (``command.txt``) after the interpreter: to recognise a run of ours."""
    try:
        return (run / LAB_ENV_ID / "command.txt").read_text(encoding="utf-8").split(" ", 1)[1]
    except (OSError, IndexError):
        return ""


def _training_seconds(run: Path) -> float:
    """From the Monitor file's start time to the final model's write: a run's training time when nobody timed it."""
    monitor = next(run.glob("*.monitor.csv"))
    started = json.loads(monitor.read_text(encoding="utf-8").splitlines()[0].lstrip("#"))["t_start"]
    return (run / f"{LAB_ENV_ID}.zip").stat().st_mtime - started


def _kept_figures(history: dict[str, Any], which: str) -> dict[str, Any] | None:
    """The kept model's figures on its selection episodes, or on its confirmation episodes, from the history."""
    best = history.get("best") or {}
    record = next((e for e in history.get("evaluations", []) if e["timesteps"] == best.get("timesteps")), None)
    if which == "confirmation":
        record = best.get("confirmation")
    if not record:
        return None
    keys = ("score", "meets_bar", "return_mean", "return_std", "solved_share", "outcome_shares")
    return {key: record.get(key) for key in keys}


def _read_history(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def run_robust(args: argparse.Namespace) -> None:
    """``python -m lunar_sb3.benchmark robust``: train, test, write robust.json / robust.md / robust_outcomes.png."""
    out = Path(args.out).absolute()
    conf = Path(args.conf).absolute()
    seeds = list(range(args.seed0, args.seed0 + args.seeds))
    out.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [
            pool.submit(
                robust_run, seed, conf, out, args.max_steps, args.eval_episodes, args.quick, args.params, args.save_freq
            )
            for seed in seeds
        ]
        runs = [future.result() for future in tqdm(futures, desc="training runs", unit="run")]
    meta = {
        "command": "python -m lunar_sb3.benchmark " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "conf": str(conf),
        "params": list(args.params),
        "cpu_count": os.cpu_count(),
        "jobs": args.jobs,
        "eval_episodes": args.eval_episodes,
        "test_seeds": f"{TEST_SEED_BASE} + {TEST_SEED_STRIDE}·seed + i, i < {args.eval_episodes}",
        "quick": bool(args.quick),
    }
    table = robust_table(runs)
    done = [r for r in runs if "error" not in r]
    try:  # checked before training, but the disk may have filled up or the folder vanished since
        write_text_atomic(
            out / "robust.json", json.dumps({"meta": meta, "aggregate": aggregate(runs), "runs": runs}, indent=1) + "\n"
        )
        write_text_atomic(out / "robust.md", table + "\n")
        if done:
            chart = {f"seed {r['seed']}": r["evaluation"] for r in done}
            if len(done) > 1:
                chart["all seeds"] = [r["evaluation"] for r in done]
            outcome_chart(chart, out / "robust_outcomes.png", title=f"{conf.name}: greedy test episodes per seed")
    except OSError as error:
        print(table)
        sys.exit(f"python -m lunar_sb3.benchmark robust: error: cannot write the results into {out}: {error}")
    print(table)
    print(f"\nwrote {out / 'robust.json'}, {out / 'robust.md'}" + (f", {out / 'robust_outcomes.png'}" if done else ""))
    failed = [r for r in runs if "error" in r]
    if failed:
        sys.exit(
            f"python -m lunar_sb3.benchmark robust: error: {len(failed)} of {len(runs)} training runs failed "
            f"(see {out / 'logs'}/seed_<S>/train.log): " + "; ".join(f"seed {r['seed']}: {r['error']}" for r in failed)
        )
