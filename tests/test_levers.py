"""The lever measurements of the robust lander: ``robust --save-freq``, ``q-average`` and ``compare``.

``QAveragePolicy`` is checked by exact arithmetic on networks whose output is their last bias, and against the
model's own ``predict``; the three benchmark commands run as real subprocesses with tiny budgets; ``compare``'s
figures are checked on hand-made results whose answers are known.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th

from lunar_sb3 import LandingEvalCallback, SoftUpdateDQN
from lunar_sb3.benchmark.compare import compare
from lunar_sb3.benchmark.q_average import KEPT_NEIGHBOURS, QAveragePolicy, variant_models
from lunar_sb3.evaluation import GOAL, evaluate_model, load_model

ENV_ID = "LunarLander-v2"
TIMEOUT = 600


def python(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=TIMEOUT)  # fmt: skip


def check(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"{' '.join(proc.args)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def model_with_bias(bias: list[float], **kwargs: Any) -> SoftUpdateDQN:
    """A model whose Q-values are ``bias`` for every observation (last layer's weights zeroed)."""
    model = SoftUpdateDQN("MlpPolicy", ENV_ID, learning_starts=10**9, buffer_size=100, seed=0, **kwargs)
    last = [m for m in model.q_net.modules() if isinstance(m, th.nn.Linear)][-1]
    with th.no_grad():
        last.weight.zero_()
        last.bias.copy_(th.tensor(bias))
    return model


def test_the_policy_averages_q_values_it_does_not_vote() -> None:
    """Two models prefer action 0 by a little, one prefers action 1 by a lot: a vote says 0, the mean Q says 1."""
    a, b, c = (model_with_bias(bias) for bias in ([3, 2, 0, 0], [3, 2, 0, 0], [-10, 2, 0, 0]))
    observations = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    assert list(QAveragePolicy([a, b]).predict(observations)[0]) == [0] * 5
    assert list(QAveragePolicy([a, b, c]).predict(observations)[0]) == [1] * 5
    th.testing.assert_close(QAveragePolicy([a, b, c]).q_values(observations)[0], th.tensor([-4 / 3, 2.0, 0.0, 0.0]))
    action, state = QAveragePolicy([a, c]).predict(observations[0])  # one observation in, one action out
    assert np.ndim(action) == 0 and action == 1 and state is None
    with pytest.raises(ValueError, match="at least one model"):
        QAveragePolicy([])


@pytest.mark.parametrize("kwargs", [{}, {"dueling": True}], ids=["plain", "dueling"])
def test_one_model_acts_like_its_own_predict(kwargs: dict[str, Any]) -> None:
    model = SoftUpdateDQN("MlpPolicy", ENV_ID, learning_starts=10**9, buffer_size=100, seed=1, **kwargs)
    observations = np.random.default_rng(1).normal(size=(200, 8)).astype(np.float32)
    actions, _ = model.predict(observations, deterministic=True)
    assert (QAveragePolicy([model]).predict(observations)[0] == actions).all()


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.zip"
    SoftUpdateDQN("MlpPolicy", ENV_ID, learning_starts=10**9, buffer_size=100, seed=0).save(path)
    return path


def fake_run(folder: Path, saved_model: Path, steps: list[int], kept: bool = True) -> Path:
    """A run folder with intact checkpoints at ``steps`` (copies of one model, each with its marker)."""
    folder.mkdir()
    for n in steps:
        (folder / f"rl_model_{n}_steps.zip").write_bytes(saved_model.read_bytes())
        (folder / f"rl_model_{n}_steps.complete").touch()
    if kept:
        (folder / "best_model.zip").write_bytes(saved_model.read_bytes())
    return folder


def test_the_kept_models_neighbours_are_the_nearest_checkpoints(tmp_path: Path, saved_model: Path) -> None:
    """Checkpoints every 10k, evaluations every 25k, one checkpoint missing: the nearest before and after, not ±25k."""
    run = fake_run(tmp_path / "run", saved_model, [100_000, 110_000, 130_000, 140_000])
    variants, missing = variant_models(run, 125_000, [1, 3, 5])
    assert [p.name for p in variants[KEPT_NEIGHBOURS]] == [
        "rl_model_110000_steps.zip", "best_model.zip", "rl_model_130000_steps.zip"
    ]  # fmt: skip
    assert [p.name for p in variants["last_3"]] == [f"rl_model_{n}_steps.zip" for n in (110_000, 130_000, 140_000)]
    assert missing == ["last_5: only 4 checkpoints"]
    (run / "rl_model_140000_steps.complete").unlink()  # a checkpoint whose writing never finished does not count
    assert [p.name for p in variant_models(run, 125_000, [1])[0]["last_1"]] == ["rl_model_130000_steps.zip"]


def test_a_kept_model_at_the_last_checkpoint_has_no_neighbours_and_says_so(tmp_path: Path, saved_model: Path) -> None:
    run = fake_run(tmp_path / "run", saved_model, [25_000, 50_000])
    variants, missing = variant_models(run, 50_000, [1])
    assert KEPT_NEIGHBOURS not in variants and missing == [
        f"{KEPT_NEIGHBOURS}: no checkpoint after the kept model (50,000 steps)"
    ]
    no_kept = fake_run(tmp_path / "no_kept", saved_model, [25_000, 50_000], kept=False)
    assert variant_models(no_kept, None, [1])[1] == [f"{KEPT_NEIGHBOURS}: no kept model"]


def test_robust_save_freq_then_q_average_then_compare(tmp_path: Path) -> None:
    """The lever pipeline as run for results/robust: checkpoints without memories, the last one replayed exactly."""
    check(python("-m", "lunar_sb3.benchmark", "robust", "--quick", "--seeds", "1", "--seed0", "4",
                 "--save-freq", "1000", "--out", "runs", cwd=tmp_path))  # fmt: skip
    source = json.loads((tmp_path / "runs" / "robust.json").read_text())
    run = Path(source["runs"][0]["run"])
    assert "--save-freq 1000" in source["runs"][0]["command"]
    assert sorted(p.name for p in run.glob("rl_model_*_steps.zip")) == [
        "rl_model_1000_steps.zip",
        "rl_model_2000_steps.zip",
    ]
    assert not list(run.glob("*replay_buffer*"))  # checkpoints to act with, not to resume from

    check(python("-m", "lunar_sb3.benchmark", "q-average", "runs", "--last", "1", "2", "--out", "qa", cwd=tmp_path))
    last_1 = json.loads((tmp_path / "qa" / "last_1" / "robust.json").read_text())["runs"][0]
    last_2 = json.loads((tmp_path / "qa" / "last_2" / "robust.json").read_text())["runs"][0]
    assert last_1["model"] == "mean Q of rl_model_2000_steps"
    assert last_2["model"] == "mean Q of rl_model_1000_steps, rl_model_2000_steps"
    final = load_model(run / f"{ENV_ID}.zip")  # the 2,000-step checkpoint is the final model
    alone = evaluate_model(final, ENV_ID, n_episodes=2, seed=last_1["test_seeds"][0])
    assert last_1["returns"] == [round(r, 2) for r in alone["episodes"]["returns"]]

    proc = check(python("-m", "lunar_sb3.benchmark", "compare", "preset=runs/robust.json",
                        "last2=qa/last_2/robust.json", "--out", "cmp", cwd=tmp_path))  # fmt: skip
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| preset |" in table and "| last2 |" in table and "0/1" in table and table in proc.stdout
    assert (tmp_path / "cmp" / "compare_outcomes.png").stat().st_size > 1000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compare", "preset", "--out", "o"], "expected LABEL=PATH"),
        (["compare", "a=missing.json", "b=missing.json", "--out", "o"], "a=missing.json: no such file"),
        (["compare", "a=r.json", "--out", "o"], "at least one result to compare"),
        (["compare", "a=r.json", "a=r.json", "--out", "o"], "label 'a' given twice"),
        (["compare", "a=r.json", "b=r.json", "--out", "r.json"], "is an existing file"),
        (["compare", "a|b=r.json", "b=r.json", "--out", "o"], "no '|'"),
        (["q-average", "nowhere", "--out", "o"], "nowhere: no robust.json"),
        (["robust", "--save-freq", "0"], "--save-freq must be >= 1"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "r.json").write_text("{}")
    proc = python("-m", "lunar_sb3.benchmark", *args, cwd=tmp_path)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def write_result(path: Path, per_seed: dict[int, tuple[float, float, float]]) -> Path:
    """A robust.json whose seeds have (mean return, landed share, crashed share); every episode returns the mean."""
    runs = []
    for seed, (mean, landed, crashed) in per_seed.items():
        shares = {"landed": landed, "landed_off_pad": 0.0, "crashed": crashed, "out_of_bounds": 0.0}
        shares["timeout"] = 1.0 - landed - crashed
        evaluation = {"return_mean": mean, "solved_share": 1.0 if mean >= 200 else 0.0, "outcome_shares": shares}
        record = {"evaluation": evaluation, "returns": [mean] * 4, "test_seeds": [seed, seed + 3]}
        runs.append({"seed": seed, "steps": 1000 * seed, "wall_seconds": 10.0 * seed, **record})
    runs.append({"seed": 99, "error": "rl_zoo3.train exited with 1"})
    path.write_text(json.dumps({"meta": {}, "runs": runs}))
    return path


def test_compare_counts_the_goal_per_seed_on_shared_seeds_only(tmp_path: Path) -> None:
    baseline = write_result(tmp_path / "a.json", {1: (272, 0.99, 0.0), 2: (275, 0.97, 0.0), 3: (280, 1.0, 0.0)})
    lever = write_result(tmp_path / "b.json", {1: (271, 0.99, 0.0), 2: (290, 1.0, 0.01), 4: (300, 1.0, 0.0)})
    report = compare({"preset": baseline, "lever": lever})
    assert report["seeds"] == [1, 2]  # seed 3 and 4 trained in one result only, seed 99 failed
    assert report["dropped_seeds"] == {"preset": [3], "lever": [4]}
    assert report["rows"]["preset"]["goal_met_seeds"] == [1]  # seed 2: 97 % landed
    assert report["rows"]["lever"]["goal_met_seeds"] == [1]  # seed 2: a crash
    assert report["rows"]["preset"]["worst_seed"] == 2 and report["rows"]["lever"]["worst_seed"] == 1
    assert report["rows"]["lever"]["return_mean"] == pytest.approx((271 + 290) / 2)
    assert (report["rows"]["lever"]["steps_median"], report["rows"]["lever"]["wall_seconds_median"]) == (1500, 15)
    assert report["rows"]["preset"]["p_return_better"] is None
    # landed 0.99 vs the baseline's (0.99, 0.97): a tie (½) and a win; 1.0 vs both: two wins; 3.5 of 4 pairs
    assert report["rows"]["lever"]["p_landed_better"][0] == pytest.approx(0.875)


def test_compare_refuses_results_it_cannot_compare(tmp_path: Path) -> None:
    baseline = write_result(tmp_path / "a.json", {1: (272, 0.99, 0.0)})
    other = json.loads(baseline.read_text())
    other["runs"][0]["test_seeds"] = [0, 99]  # the same training seed, tested on other episodes
    (tmp_path / "b.json").write_text(json.dumps(other))
    with pytest.raises(ValueError, match="seed 1 was tested on different episodes"):
        compare({"a": baseline, "b": tmp_path / "b.json"})
    (tmp_path / "c.json").write_text("{}")
    with pytest.raises(ValueError, match="c.json: not a robust.json"):
        compare({"a": baseline, "c": tmp_path / "c.json"})
    proc = python("-m", "lunar_sb3.benchmark", "compare", "a=a.json", "c=c.json", "--out", "o", cwd=tmp_path)
    assert proc.returncode == 1 and "c.json: not a robust.json" in proc.stderr and "Traceback" not in proc.stderr


def test_the_goal_is_the_landing_callbacks_default_bar() -> None:
    assert LandingEvalCallback().stop_bar() == GOAL


def test_robust_md_names_the_goal_and_worst_seed(tmp_path: Path) -> None:
    from lunar_sb3.benchmark.robust_report import goal_line

    runs = json.loads(write_result(tmp_path / "r.json", {1: (272, 0.99, 0.0), 2: (275, 0.97, 0.0)}).read_text())
    line = goal_line(runs["runs"])  # the failed seed 99 is left out
    assert line.startswith("Goal (mean >= 270, >= 98 % landed and >= 200, no crash) met on 1 of 2 seeds; worst seed 2")
    assert "landed 97%" in line and "mean return 273.5 [272.0, 275.0]" in line


def test_without_rliable_the_reports_say_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """robust's report still writes its goal line (after hours of training); compare and peers refuse up front."""
    import argparse

    from lunar_sb3.benchmark import ablation
    from lunar_sb3.benchmark.compare import parse_results
    from lunar_sb3.benchmark.robust_report import goal_line

    monkeypatch.setattr(ablation, "stats_available", lambda: False)
    runs = json.loads(write_result(tmp_path / "r.json", {1: (272, 0.99, 0.0)}).read_text())["runs"]
    line = goal_line(runs)
    assert "met on 1 of 1 seeds" in line and line.endswith(
        'needs the stats extra (rliable): pip install -e ".[stats]".'
    )
    parser = argparse.ArgumentParser(prog="compare")
    with pytest.raises(SystemExit):
        parse_results(parser, [f"a={tmp_path / 'r.json'}", f"b={tmp_path / 'r.json'}"], str(tmp_path / "o"))
