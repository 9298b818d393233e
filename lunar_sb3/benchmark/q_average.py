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
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch as th

from lunar_sb3.benchmark.robust import aggregate, first_test_seed, robust_table
from lunar_sb3.evaluation import evaluate_model, load_model
from lunar_sb3.landing_eval import BEST_MODEL_FILE
from lunar_sb3.outputs import write_text_atomic

CHECKPOINT = re.compile(r"rl_model_(?P<steps>\d+)_steps\.zip")
KEPT_NEIGHBOURS = "kept_pm1"
"""The variant averaging the kept model with the checkpoints one ``--save-freq`` before and after it."""


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


def checkpoints(run: Path) -> list[tuple[int, Path]]:
    """A run's complete ``--save-freq`` checkpoints, (env steps, path), oldest first."""
    found = []
    for path in run.glob("rl_model_*_steps.zip"):
        match = CHECKPOINT.fullmatch(path.name)
        if match and path.with_suffix(".complete").is_file():
            found.append((int(match["steps"]), path))
    return sorted(found)


def variant_models(run: Path, best_at: int | None, last: list[int]) -> dict[str, list[Path]]:
    """Per variant name, the model files whose Q-values it averages."""
    saved = checkpoints(run)
    variants = {f"last_{k}": [path for _, path in saved[-k:]] for k in last if len(saved) >= k}
    by_steps = dict(saved)
    if best_at is not None and (run / BEST_MODEL_FILE).is_file():
        step = saved[1][0] - saved[0][0] if len(saved) > 1 else None
        around = [by_steps.get(best_at - step), run / BEST_MODEL_FILE, by_steps.get(best_at + step)] if step else []
        if all(around):
            variants[KEPT_NEIGHBOURS] = around  # type: ignore[assignment]
    return variants


def run_q_average(args: argparse.Namespace) -> None:
    """Evaluate every variant on every seed's test episodes; write one robust-format result per variant."""
    th.set_num_threads(1)
    source = json.loads((Path(args.runs) / "robust.json").read_text(encoding="utf-8"))
    episodes = int(source["meta"]["eval_episodes"])
    by_variant: dict[str, list[dict[str, Any]]] = {}
    for record in source["runs"]:
        if "error" in record:
            continue
        run = Path(record["run"])
        for name, files in variant_models(run, record.get("best_at"), args.last).items():
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
