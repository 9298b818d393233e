"""``q-average``: act with the mean Q-values of several checkpoints of one run, tested like ``robust``.

Why: one checkpoint's greedy policy swings between evaluations 25,000 steps apart (92 % landed, then 26 %), so the
kept model is partly a lucky draw. Averaging the Q-values of neighbouring checkpoints is an ensemble that costs
no training, only K forward passes per action. This measures whether it lands more often, on the runs a
``python -m lunar_sb3.benchmark robust --save-freq 25000`` trained and on the very test episodes it played.

Each variant writes ``<out>/<variant>/robust.json`` and ``robust.md`` in the ``robust`` format, so
``benchmark compare`` puts it beside the single-checkpoint results.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th

from lunar_sb3.benchmark.robust import first_test_seed
from lunar_sb3.benchmark.robust_report import aggregate, robust_table
from lunar_sb3.checkpoints import intact_checkpoints
from lunar_sb3.evaluation import evaluate_model, load_model
from lunar_sb3.landing_eval import BEST_MODEL_FILE
from lunar_sb3.outputs import OutputError, check_writable_folder, write_text_atomic

KEPT_NEIGHBOURS = "kept_pm1"
"""The variant averaging the kept model with the nearest checkpoints before and after it."""


class QAveragePolicy:
    """Greedy actions from the mean of several Q-networks' values (the ``predict`` that evaluation calls)."""

    def __init__(self, models: list[Any]) -> None:
        if not models:
            raise ValueError("QAveragePolicy needs at least one model")
        self.q_nets = [model.q_net for model in models]

    def q_values(self, observations: np.ndarray) -> th.Tensor:
        """Mean Q-values, shape (batch, actions), of a batch of raw observations."""
        batch = th.as_tensor(np.asarray(observations, dtype=np.float32))
        with th.no_grad():
            return th.stack([q_net(batch) for q_net in self.q_nets]).mean(dim=0)

    def predict(
        self, observation: np.ndarray, state: Any = None, episode_start: Any = None, deterministic: bool = True
    ):
        """SB3's ``predict`` signature, always greedy (an ensemble is for acting, not exploring)."""
        single = np.ndim(observation) == 1
        batch = np.asarray(observation)[None] if single else observation
        actions = self.q_values(batch).argmax(dim=1).numpy()
        return (actions[0] if single else actions), state


def add_q_average_parser(commands: Any) -> argparse.ArgumentParser:
    """The ``q-average`` subcommand's options."""
    parser = commands.add_parser("q-average", help="act with the mean Q of several checkpoints of robust runs")
    parser.add_argument("runs", help="a robust --save-freq output folder (holds robust.json)")
    parser.add_argument(
        "--last", type=int, nargs="+", default=[1, 3, 5], help="average the last K checkpoints, per K (default 1 3 5)"
    )
    parser.add_argument("--out", required=True, help="folder for one <variant>/robust.json per variant")
    return parser


def check_q_average_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """One-line usage errors before any evaluation."""
    if not (Path(args.runs) / "robust.json").is_file():
        parser.error(f"{args.runs}: no robust.json (run `benchmark robust --save-freq N --out {args.runs}` first)")
    if any(k < 1 for k in args.last):
        parser.error(f"--last takes counts >= 1, got {args.last}")
    try:
        check_writable_folder(args.out)  # before the evaluations, not after
    except OutputError as error:
        parser.error(str(error))


def variant_models(run: Path, best_at: int | None, last: list[int]) -> tuple[dict[str, list[Path]], list[str]]:
    """Per variant name, the model files whose Q-values it averages; and why a variant is missing, if one is."""
    saved = intact_checkpoints(run)
    variants: dict[str, list[Path]] = {}
    missing: list[str] = []
    for k in last:
        if len(saved) >= k:
            variants[f"last_{k}"] = [path for _, path in saved[-k:]]
        else:
            missing.append(f"last_{k}: only {len(saved)} checkpoints")
    kept = run / BEST_MODEL_FILE
    before = [path for steps, path in saved if best_at is not None and steps < best_at]
    after = [path for steps, path in saved if best_at is not None and steps > best_at]
    if best_at is None or not kept.is_file():
        missing.append(f"{KEPT_NEIGHBOURS}: no kept model")
    elif not (before and after):
        missing.append(
            f"{KEPT_NEIGHBOURS}: no checkpoint {'before' if not before else 'after'} the kept model ({best_at:,} steps)"
        )
    else:
        variants[KEPT_NEIGHBOURS] = [before[-1], kept, after[0]]
    return variants, missing


def run_q_average(args: argparse.Namespace) -> None:
    """Evaluate every variant on every seed's test episodes; write one robust-format result per variant."""
    th.set_num_threads(1)
    source = json.loads((Path(args.runs) / "robust.json").read_text(encoding="utf-8"))
    episodes = int(source["meta"]["eval_episodes"])
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for record in source["runs"]:
        if "error" in record:
            print(f"seed {record['seed']}: skipped, its training failed ({record['error']})", flush=True)
            continue
        run = Path(record["run"])
        if not run.is_dir():
            sys.exit(f"python -m lunar_sb3.benchmark q-average: error: seed {record['seed']}'s run {run} is gone")
        variants, missing = variant_models(run, record.get("best_at"), args.last)
        for reason in missing:
            print(f"seed {record['seed']}: no {reason}", flush=True)
        for name, files in variants.items():
            policy = QAveragePolicy([load_model(path) for path in files])
            result = evaluate_model(policy, n_episodes=episodes, seed=first_test_seed(record["seed"]))  # type: ignore[arg-type]
            returns = result["episodes"]["returns"]
            by_variant.setdefault(name, []).append(
                {
                    **{key: record[key] for key in ("seed", "steps", "wall_seconds", "run")},
                    "model": "mean Q of " + ", ".join(path.stem for path in files),
                    "bar_met_at": None,
                    "test_seeds": [first_test_seed(record["seed"]), first_test_seed(record["seed"]) + episodes - 1],
                    "evaluation": {**result["summary"], "return_min": float(min(returns))},
                    "returns": [round(r, 2) for r in returns],
                }
            )
            print(f"seed {record['seed']} {name}: {result['summary']['return_mean']:.1f}, "
                  f"landed {result['summary']['outcome_shares']['landed']:.0%}", flush=True)  # fmt: skip
    if not by_variant:
        sys.exit(f"python -m lunar_sb3.benchmark q-average: error: no checkpoints in the runs of {args.runs}")
    for name, runs in by_variant.items():
        folder = Path(args.out) / name
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "command": "python -m lunar_sb3.benchmark " + " ".join(sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d"),
            "source": str(Path(args.runs) / "robust.json"),
            "variant": name,
            "eval_episodes": episodes,
        }
        report = {"meta": meta, "aggregate": aggregate(runs), "runs": runs}
        write_text_atomic(folder / "robust.json", json.dumps(report, indent=1) + "\n")
        write_text_atomic(folder / "robust.md", robust_table(runs) + "\n")
        print(f"wrote {folder / 'robust.json'}")
