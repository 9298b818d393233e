"""``package``: turn an rl-zoo3 run folder into a folder ready for the Hub, with no network.

The folder holds what rl-zoo3's Hub repos hold (see ``lunar_sb3.hub.files``) plus a landing evaluation of 100
greedy episodes on fixed seeds (``results.json``), an outcome chart, a landing GIF and a model card built from them.
It is written under a temporary name beside ``OUT_DIR`` and renamed at the end, so a failure leaves no half package.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from stable_baselines3.common.monitor import LoadMonitorResultsError, load_results

from lunar_sb3.evaluation import (
    ConfigLoader,
    evaluate_model,
    find_vec_normalize,
    load_model,
    load_vec_normalize,
    normalizing_config,
)
from lunar_sb3.hub.card import model_card
from lunar_sb3.hub.files import (
    CARD_FILE,
    CHART_FILE,
    CONFIG_FILES,
    GIF_FILE,
    HUB_VEC_NORMALIZE_FILE,
    METRICS_FILE,
    RESULTS_FILE,
    ZOO_ALGO,
    model_file_name,
    write_model_for_inference,
)
from lunar_sb3.landing_eval import BEST_MODEL_FILE, HISTORY_FILE
from lunar_sb3.outputs import OutputError, check_writable_folder, model_of_run, write_text_atomic
from lunar_sb3.pictures import landing_gif, outcome_chart
from lunar_sb3.version import __version__

EVAL_EPISODES = 100
EVAL_SEED = 0
"""Episode i of the package's evaluation resets with seed ``EVAL_SEED + i``: ``lunar_sb3.evaluate``'s defaults, so
``python -m lunar_sb3.evaluate`` on the pulled run reproduces ``results.json`` exactly. The robust preset selects
its best model on seeds 20,000 and up, so these episodes are new to it."""


def read_zoo_yaml(path: Path) -> dict[str, Any]:
    """``config.yml`` / ``args.yml`` as rl-zoo3 dumps them (an ``OrderedDict``), as a plain dict; no code runs."""
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=ConfigLoader)
    if not isinstance(data, dict):
        raise OutputError(f"{path} is not an rl-zoo3 {path.name} (expected a mapping, got {type(data).__name__})")
    return data


def check_out_dir(out_dir: Path) -> None:
    """``OUT_DIR`` must be new or an empty folder: a package mixed with older files would upload both."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"OUT_DIR {out_dir} is an existing file")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise OutputError(f"OUT_DIR {out_dir} is not empty: choose a new folder (a package holds only its own files)")
    check_writable_folder(out_dir)


def run_model(run: Path, env_id: str, load_best: bool = False) -> Path:
    """The model a run folder shares: the final ``<ENV>.zip``, or ``best_model.zip`` with ``load_best``."""
    model = run / BEST_MODEL_FILE if load_best else model_of_run(run, env_id)
    if not model.is_file():
        hint = "the robust preset's LandingEvalCallback saves it" if load_best else "saved when training ends"
        raise OutputError(f"run folder {run} holds no model {model.name} ({hint})")
    for name in CONFIG_FILES[:2]:
        if not (run / env_id / name).is_file():
            raise OutputError(f"run folder {run} has no {env_id}/{name}: not an rl-zoo3 run folder")
    return model


def training_facts(run: Path, env_id: str, model: Any) -> dict[str, Any]:
    """How long the run trained, from its Monitor files, and when the shared model was saved."""
    facts: dict[str, Any] = {"model_env_steps": int(model.num_timesteps)}
    try:
        monitor = load_results(str(run))
    except LoadMonitorResultsError:
        monitor = None
    if monitor is not None and len(monitor):
        facts.update(
            run_episodes=len(monitor),
            run_env_steps=int(monitor["l"].sum()),  # finished episodes; a cut-off last episode is not in the file
            run_wall_clock_s=round(float(monitor["t"].max()), 1),
        )
    command = run / env_id / "command.txt"
    if command.is_file():
        facts["command"] = command.read_text(encoding="utf-8").strip()
    history = run / HISTORY_FILE
    if history.is_file():
        best = json.loads(history.read_text(encoding="utf-8")).get("best")
        if best:
            facts["best_landing_evaluation"] = best
    return facts


def _write_metrics(run: Path, destination: Path) -> list[str]:
    """``train_eval_metrics.zip`` as rl-zoo3's ``push_to_hub`` makes it (evaluations.npz, monitor CSVs), plus the
    robust preset's landing-evaluation history."""
    members = sorted(run.glob("*.csv"))
    members += [run / name for name in ("evaluations.npz", HISTORY_FILE) if (run / name).is_file()]
    with zipfile.ZipFile(destination, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for member in members:
            archive.write(member, arcname=member.name)
    return [member.name for member in members]


def build_package(
    run: Path,
    env_id: str,
    out_dir: Path,
    *,
    load_best: bool = False,
    n_episodes: int = EVAL_EPISODES,
    seed: int = EVAL_SEED,
    gif_seeds: Sequence[int] | None = None,
    repo_id: str | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Write the package of ``run`` into ``out_dir`` and return its ``results.json`` content.

    :raises OutputError: for a run folder without a model or configs, or an unusable ``out_dir``
    :raises ValueError: for a model that cannot be loaded or statistics that do not fit
    """
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    model_path = run_model(run, env_id, load_best)
    model = load_model(model_path)
    stats = find_vec_normalize(model_path, env_id)
    if stats is None and (config := normalizing_config(model_path, env_id)) is not None:
        raise ValueError(f"{config} says the model was trained on normalized observations, but the run has no stats")
    vec_normalize = None if stats is None else load_vec_normalize(stats, env_id)
    config = read_zoo_yaml(run / env_id / "config.yml")
    args = read_zoo_yaml(run / env_id / "args.yml")
    gif_seeds = list(gif_seeds) if gif_seeds is not None else [seed + i for i in range(min(3, n_episodes))]

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".partial"))
    try:
        model_file = model_file_name(env_id)
        write_model_for_inference(model_path, staging / model_file)
        for name in CONFIG_FILES[:2]:
            shutil.copyfile(run / env_id / name, staging / name)
        env_kwargs = args.get("env_kwargs") or {}
        (staging / CONFIG_FILES[2]).write_text(yaml.safe_dump(dict(env_kwargs)), encoding="utf-8")
        metrics = _write_metrics(run, staging / METRICS_FILE)
        if stats is not None:
            shutil.copyfile(stats, staging / HUB_VEC_NORMALIZE_FILE)

        log(f"evaluating {model_path} on {n_episodes} greedy episodes (seeds {seed}..{seed + n_episodes - 1}) ...")
        evaluation = evaluate_model(model, env_id, n_episodes, seed, vec_normalize)
        summary = evaluation["summary"]
        results = {
            # the keys huggingface_sb3 writes into results.json, so tools that read them still do
            "mean_reward": summary["return_mean"],
            "std_reward": summary["return_std"],
            "is_deterministic": True,
            "n_eval_episodes": n_episodes,
            "eval_datetime": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "algo": ZOO_ALGO,
            "env_id": env_id,
            "model_class": type(model).__name__,
            "model_file": model_file,
            "source_model": model_path.name,
            "eval_seeds": [seed, seed + n_episodes - 1],
            "summary": summary,
            "episodes": evaluation["episodes"],
            "training": training_facts(run, env_id, model),
            "train_eval_metrics": metrics,
            "vec_normalize": stats is not None,
            "lunar_sb3_version": __version__,
        }
        outcome_chart(
            {f"{type(model).__name__}": summary},
            staging / CHART_FILE,
            title=f"{env_id}: {n_episodes} greedy episodes (seeds {seed}..{seed + n_episodes - 1}), "
            f"mean return {summary['return_mean']:.1f}",
        )
        results["gif_episodes"] = landing_gif(model, env_id, gif_seeds, staging / GIF_FILE, vec_normalize=vec_normalize)
        write_text_atomic(staging / RESULTS_FILE, json.dumps(results, indent=1) + "\n")
        write_text_atomic(staging / CARD_FILE, model_card(results, model, config, repo_id))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(staging, 0o777 & ~umask)  # mkdtemp's 0o700 would hide the package from other users
        if out_dir.is_dir():
            out_dir.rmdir()  # checked empty above
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return results
