"""``compare``: robust-format results side by side against a baseline, with IQM, bootstrap CIs and the goal per seed.

The lever measurements of the robust lander each train the same seeds with one change to the preset; this puts
them in one table: IQM over seeds (95 % stratified-bootstrap CI, rliable) of the mean return and of the landed
share, the probability that a seed of the lever beats a seed of the baseline, the pooled outcome shares and on how
many seeds the goal holds (the ``LandingEvalCallback`` defaults: mean >= 270, >= 98 % landed, >= 98 % >= 200, no
crash). Only seeds that every result trained are compared, so an unfinished lever cannot look better by omission.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from lunar_sb3.benchmark import ablation
from lunar_sb3.benchmark.ablation import STATS_EXTRA, iqm_with_ci, probability_of_improvement
from lunar_sb3.benchmark.robust_report import worst_run
from lunar_sb3.evaluation import GOAL, meets_bar
from lunar_sb3.outputs import OutputError, check_writable_folder, write_text_atomic
from lunar_sb3.pictures import outcome_chart

COMPARE_FILES = ("compare.json", "compare.md", "compare_outcomes.png")


def add_compare_parser(commands: Any) -> argparse.ArgumentParser:
    """The ``compare`` subcommand's options."""
    parser = commands.add_parser("compare", help="robust-format results side by side: IQM, CIs, goal per seed")
    parser.add_argument(
        "results", nargs="+", metavar="LABEL=PATH", help="a label and a robust.json (the first is the baseline)"
    )
    parser.add_argument("--out", required=True, help="folder for compare.json, compare.md, compare_outcomes.png")
    return parser


def parse_results(parser: argparse.ArgumentParser, pairs: list[str], out: str) -> dict[str, Path]:
    """{label: robust.json} from LABEL=PATH arguments; one-line errors for malformed or missing ones, or for an
    ``out`` folder that cannot take the results."""
    if not ablation.stats_available():
        parser.error(f"needs {STATS_EXTRA}")
    results: dict[str, Path] = {}
    for pair in pairs:
        label, sep, path = pair.partition("=")
        if not sep or not label or not path:
            parser.error(f"{pair!r}: expected LABEL=PATH, e.g. preset=results/robust/v2/robust.json")
        if label in results:
            parser.error(f"label {label!r} given twice")
        if "|" in label:
            parser.error(f"label {label!r}: no '|' (it would break the markdown table)")
        if not Path(path).is_file():
            parser.error(f"{label}={path}: no such file")
        results[label] = Path(path)
    if len(results) < 2:
        parser.error("give a baseline and at least one result to compare with it")
    try:
        check_writable_folder(out, COMPARE_FILES)
    except OutputError as error:
        parser.error(str(error))
    return results


def seed_runs(path: Path) -> dict[int, dict[str, Any]]:
    """{seed: run record} of the seeds that trained and were tested; ValueError naming the file if it is not one."""
    try:
        runs = json.loads(path.read_text(encoding="utf-8"))["runs"]
        return {r["seed"]: r for r in runs if "error" not in r and r["evaluation"]}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a robust.json of `benchmark robust` ({type(error).__name__}: {error})") from None


def compare(results: dict[str, Path]) -> dict[str, Any]:
    """Per label: IQM [CI] of return and landed share, P(improvement) over the first label, pooled shares, goal."""
    runs = {label: seed_runs(path) for label, path in results.items()}
    seeds = sorted(set.intersection(*(set(r) for r in runs.values())))
    if not seeds:
        raise ValueError("the results share no trained seed")
    for seed in seeds:
        episodes = {label: runs[label][seed].get("test_seeds") for label in results}
        if len({str(e) for e in episodes.values()}) > 1:
            raise ValueError(f"seed {seed} was tested on different episodes: {episodes}")
    dropped = {label: sorted(set(r) - set(seeds)) for label, r in runs.items() if set(r) - set(seeds)}
    baseline = next(iter(results))
    per_seed = {
        quantity: {
            label: np.array([pick(runs[label][s]["evaluation"]) for s in seeds], dtype=float) for label in results
        }
        for quantity, pick in (
            ("return", lambda e: e["return_mean"]),
            ("landed", lambda e: e["outcome_shares"]["landed"]),
        )
    }
    iqm = {quantity: iqm_with_ci(values) for quantity, values in per_seed.items()}
    better = {
        quantity: probability_of_improvement(values, baseline, lower_is_better=False)
        for quantity, values in per_seed.items()
    }
    rows: dict[str, Any] = {}
    for label in results:
        evaluations = [runs[label][s]["evaluation"] for s in seeds]
        returns = np.concatenate([runs[label][s]["returns"] for s in seeds]).astype(float)
        goal_met = [s for s, e in zip(seeds, evaluations, strict=True) if meets_bar(e, **GOAL)]
        worst = worst_run([runs[label][s] for s in seeds])["seed"]
        rows[label] = {
            "source": str(results[label]),
            "return_iqm": list(iqm["return"][label]),
            "landed_iqm": list(iqm["landed"][label]),
            "p_return_better": None if label == baseline else list(better["return"][label]),
            "p_landed_better": None if label == baseline else list(better["landed"][label]),
            "return_mean": float(returns.mean()),
            "return_std": float(returns.std()),
            "solved_share": float(np.mean([e["solved_share"] for e in evaluations])),
            "outcome_shares": {
                name: float(np.mean([e["outcome_shares"][name] for e in evaluations]))
                for name in evaluations[0]["outcome_shares"]
            },
            "goal_met_seeds": goal_met,
            "steps_median": float(np.median([runs[label][s]["steps"] for s in seeds])),
            "wall_seconds_median": float(np.median([runs[label][s]["wall_seconds"] for s in seeds])),
            "worst_seed": worst,
            "evaluations": evaluations,
        }
    return {"baseline": baseline, "seeds": seeds, "dropped_seeds": dropped, "goal": GOAL, "rows": rows}


def compare_markdown(report: dict[str, Any]) -> str:
    """The table a reader looks at."""
    seeds = report["seeds"]

    def interval(values: list[float], fmt: str) -> str:
        return f"{fmt.format(values[0])} [{fmt.format(values[1])}, {fmt.format(values[2])}]"

    lines = [
        f"Seeds {', '.join(map(str, seeds))} (those every result trained); baseline: {report['baseline']}. IQM over "
        "seeds with 95 % stratified-bootstrap CIs (rliable); P(better): chance a seed of the row beats a seed of the "
        "baseline. Goal per seed: mean >= 270, >= 98 % landed, >= 98 % of episodes >= 200, no crash.",
        *[
            f"Left out of {label}: seeds {', '.join(map(str, dropped))} (not in every result)."
            for label, dropped in report["dropped_seeds"].items()
        ],
        "",
        "| result | IQM mean return | P(return better) | IQM landed | P(landed better) | return mean ± std | ≥ 200 "
        "| landed | crashed | timeout | goal met on | worst seed (landed) | env steps (median) | wall s (median) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for label, row in report["rows"].items():
        shares = row["outcome_shares"]
        worst = row["evaluations"][seeds.index(row["worst_seed"])]["outcome_shares"]["landed"]
        lines.append(
            f"| {label} | {interval(row['return_iqm'], '{:.1f}')} "
            f"| {'—' if row['p_return_better'] is None else interval(row['p_return_better'], '{:.2f}')} "
            f"| {interval([100 * v for v in row['landed_iqm']], '{:.1f}')} % "
            f"| {'—' if row['p_landed_better'] is None else interval(row['p_landed_better'], '{:.2f}')} "
            f"| {row['return_mean']:.1f} ± {row['return_std']:.1f} | {row['solved_share']:.0%} "
            f"| {shares['landed']:.1%} | {shares['crashed']:.1%} | {shares['timeout']:.1%} "
            f"| {len(row['goal_met_seeds'])}/{len(seeds)} | {row['worst_seed']} ({worst:.0%}) "
            f"| {row['steps_median']:,.0f} | {row['wall_seconds_median']:.0f} |"
        )
    return "\n".join(lines)


def run_compare(args: argparse.Namespace, results: dict[str, Path]) -> None:
    """``python -m lunar_sb3.benchmark compare``: write compare.json, compare.md and one outcome chart."""
    out = Path(args.out)
    try:
        report = compare(results)
    except ValueError as error:
        sys.exit(f"python -m lunar_sb3.benchmark compare: error: {error}")
    out.mkdir(parents=True, exist_ok=True)
    report["meta"] = {
        "command": "python -m lunar_sb3.benchmark " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
    }
    table = compare_markdown(report)
    write_text_atomic(out / "compare.json", json.dumps(report, indent=1) + "\n")
    write_text_atomic(out / "compare.md", table + "\n")
    chart = {label: row["evaluations"] for label, row in report["rows"].items()}
    outcome_chart(
        chart,
        out / "compare_outcomes.png",
        title=f"greedy test episodes, seeds {report['seeds'][0]}–{report['seeds'][-1]}",
    )
    print(table)
    print(f"\nwrote {out / 'compare.json'}, {out / 'compare.md'}, {out / 'compare_outcomes.png'}")
