"""The peers benchmark (rl-zoo3's DQN, QR-DQN and PPO on the robust benchmark's test episodes) and the outcome chart
of any results file.

The benchmark runs in a real subprocess with a tiny budget (``-n 1000``: QR-DQN does not learn yet, PPO does one
rollout of 16 × 1024 steps), because the zoo command line is the point. Its test episodes are replayed by a bare
gymnasium loop on the lab's LunarLander-v2 id, so the recorded returns are checked against code that shares nothing
with ``evaluate_model`` and the v2/v3 naming.
"""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from PIL import Image
from sb3_contrib import QRDQN
from stable_baselines3 import PPO

from lunar_sb3 import SoftUpdateDQN
from lunar_sb3.benchmark.peers_report import agent_summaries
from lunar_sb3.landing import OUTCOMES
from lunar_sb3.pictures import results_by_agent

TIMEOUT = 600  # seconds per subprocess: generous, the machine is small and shared
QUICK = ["--seeds", "1", "--seed0", "3", "--algos", "qrdqn", "ppo", "--max-steps", "1000", "--eval-episodes", "2"]
SHARES = {"landed": 0.9, "landed_off_pad": 0.0, "crashed": 0.05, "out_of_bounds": 0.0, "timeout": 0.05}


def python(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "MPLBACKEND": "Agg", "SDL_VIDEODRIVER": "dummy"}
    environment.pop("LUNAR_SB3_AUTOLOAD", None)
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=environment, capture_output=True, text=True, timeout=TIMEOUT
    )


def check(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"{' '.join(proc.args)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def evaluation(return_mean: float, landed: float) -> dict[str, Any]:
    shares = {**dict.fromkeys(OUTCOMES, 0.0), "landed": landed, "timeout": 1.0 - landed}
    return {
        "return_mean": return_mean,
        "outcome_shares": shares,
        "main_engine_fires_mean": 100.0,
        "side_engine_fires_mean": 50.0,
        "length_mean": 300.0,
    }


def fake_robust(folder: Path) -> Path:
    """A robust.json with two seeds, shaped like ``benchmark robust`` writes it."""
    run = {"wall_seconds": 200.0, "steps": 500_000, "returns": [250.0, 270.0], "evaluation": evaluation(260, 1.0)}
    runs = [{**run, "seed": seed} for seed in (3, 4)]
    path = folder / "robust.json"
    path.write_text(json.dumps({"meta": {"conf": "hyperparams/soft_dqn_robust.yml"}, "runs": runs}))
    return path


@pytest.fixture(scope="module")
def quick_peers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    """``benchmark peers`` with QR-DQN and PPO, one seed, ``-n 1000``, two test episodes, beside a robust.json."""
    folder = tmp_path_factory.mktemp("peers")
    ours = fake_robust(folder)
    done = check(python("-m", "lunar_sb3.benchmark", "peers", *QUICK, "--out", "out", "--ours", str(ours), cwd=folder))
    return folder, json.loads((folder / "out" / "peers.json").read_text()), done.stdout


def test_peers_train_through_the_zoo_and_test_on_the_robust_benchmarks_episodes(quick_peers) -> None:
    folder, data, _ = quick_peers
    qrdqn, ppo = data["runs"]  # seed-major, each seed in the order dqn, qrdqn, ppo
    for run, algo, cls in ((qrdqn, "qrdqn", "QRDQN"), (ppo, "ppo", "PPO")):
        assert run["algo"] == algo and run["seed"] == 3 and run["model_class"] == cls
        assert f"-m rl_zoo3.train --algo {algo} --env LunarLander-v3 --seed 3 " in run["command"]
        assert run["command"].endswith("--eval-freq -1 --num-threads 1 -n 1000")
        assert run["test_seeds"] == [53_000, 53_001] and run["wall_seconds"] > 0
        assert len(run["episodes"]["returns"]) == 2 and set(run["episodes"]["outcomes"]) <= set(OUTCOMES)
        assert run["evaluation"]["n_episodes"] == 2 and run["evaluation"]["seed"] == 53_000
    assert ppo["steps"] == 16 * 1024  # the zoo's 16 envs × n_steps 1024: one whole rollout
    assert 1000 <= qrdqn["steps"] < 2000
    assert list(data["agents"]) == [
        "robust preset (soft_dqn_robust)",
        "sb3-contrib QR-DQN (rl-zoo3 hyperparameters)",
        "SB3 PPO (rl-zoo3 hyperparameters)",
    ]
    table = (folder / "out" / "peers.md").read_text()
    assert "| robust preset (soft_dqn_robust) | 2 | 260.0 [260.0, 260.0] | 100.0 % [100.0, 100.0] |" in table
    assert "| ppo | 3 | 16,384 |" in table
    with Image.open(folder / "out" / "peers_outcomes.png") as image:
        assert image.format == "PNG" and image.width > 300


def test_recorded_returns_are_what_each_model_plays_with_its_own_class(quick_peers) -> None:
    """Replayed by hand on LunarLander-v2 (v3's dynamics under the lab's id): the same episodes, the same returns."""
    _, data, _ = quick_peers
    for run, cls in zip(data["runs"], (QRDQN, PPO), strict=True):
        model = cls.load(Path(run["run"]) / "LunarLander-v3.zip", device="cpu")
        env = gym.make("LunarLander-v2")
        returns = []
        for seed in range(run["test_seeds"][0], run["test_seeds"][1] + 1):
            obs, _ = env.reset(seed=seed)
            total, done = 0.0, False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(model.predict(obs, deterministic=True)[0])
                total, done = total + float(reward), terminated or truncated
            returns.append(total)
        assert returns == pytest.approx(run["episodes"]["returns"], abs=0.006)  # kept to 2 decimals


def test_peers_resume_keeps_finished_runs_and_retests_a_trained_one(quick_peers) -> None:
    folder, data, stdout = quick_peers
    assert "0 of 2 runs kept" in stdout
    (folder / "out" / "runs" / "ppo_seed_3.json").unlink()  # cut after PPO's training, before its test was kept
    command = ["-m", "lunar_sb3.benchmark", "peers", *QUICK, "--out", "out", "--ours", "robust.json"]
    report = check(python(*command, "--no-train", cwd=folder))  # the files from what is kept, nothing trained
    assert "1 of 2 runs kept; --no-train: not training ppo seed 3" in report.stdout
    assert "**Partial: 1 of 2 runs finished so far.**" in (folder / "out" / "peers.md").read_text()
    assert [r["algo"] for r in json.loads((folder / "out" / "peers.json").read_text())["runs"]] == ["qrdqn"]
    done = check(python(*command, cwd=folder))
    assert "1 of 2 runs kept from earlier calls; 1 to train" in done.stdout
    assert sorted(p.name for p in (folder / "out" / "logs" / "seed_3" / "ppo").iterdir()) == ["LunarLander-v3_1"]
    again = json.loads((folder / "out" / "peers.json").read_text())
    for run in again["runs"] + data["runs"]:
        run.pop("test_seconds")  # the only thing measured again
    assert again["runs"] == data["runs"]  # the same training record (wall time included) and the same test
    command.remove("ppo")  # --algos qrdqn: PPO's kept run is still reported
    report = check(python(*command, "--no-train", cwd=folder))
    assert "1 kept runs of peers not in --algos are reported too" in report.stdout
    assert [r["algo"] for r in json.loads((folder / "out" / "peers.json").read_text())["runs"]] == ["qrdqn", "ppo"]


def test_agent_summaries_iqm_and_pooled_figures() -> None:
    runs = [
        {
            "algo": "ppo",
            "label": "PPO",
            "seed": s,
            "wall_seconds": 10.0 * s,
            "steps": 1000,
            "episodes": {"returns": [mean - 1, mean + 1]},
            "evaluation": evaluation(mean, landed),
        }
        for s, (mean, landed) in enumerate([(5, 0.2), (1, 1.0), (3, 0.6), (2, 0.4), (4, 0.8)])
    ]
    (label, s), *_ = agent_summaries(runs, []).items()
    assert label == "PPO" and s["seeds"] == [0, 1, 2, 3, 4] and s["episodes"] == 10
    assert s["return_iqm"][0] == pytest.approx(3.0)  # the middle half of 1..5 (rliable trims 25 % each side)
    assert s["return_iqm"][1] <= 3.0 <= s["return_iqm"][2] and 1.0 <= s["return_iqm"][1]
    assert s["landed_iqm"][0] == pytest.approx(0.6)
    pooled = np.array([m + d for m in (5, 1, 3, 2, 4) for d in (-1, 1)], dtype=float)
    assert s["return_mean"] == pytest.approx(pooled.mean()) and s["return_std"] == pytest.approx(pooled.std())
    assert s["wall_seconds_median"] == 20.0 and s["outcome_shares"]["landed"] == pytest.approx(0.6)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--eval-episodes", "1001"], "--eval-episodes must be <= 1000"),
        (["--seeds", "0"], "--seeds must be >= 1, got 0"),
        (["--max-steps", "0"], "--max-steps must be >= 1, got 0"),
        (["--seed0", "-1"], "--seed0 must be >= 0"),
        (["--out", "a_file"], "output folder a_file is an existing file"),
    ],
)
def test_peers_rejects_bad_input_in_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "a_file").write_text("")
    done = python("-m", "lunar_sb3.benchmark", "peers", *args, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("python -m lunar_sb3.benchmark peers: error: ") and message in line


# ---------------------------------------------------------------------------------------------- pictures chart
def test_chart_reads_the_evaluation_json_that_evaluate_writes(tmp_path: Path) -> None:
    """Issue 18: ``pictures chart OUT.png evaluation.json`` answered ``KeyError: 'runs'``."""
    SoftUpdateDQN("MlpPolicy", "LunarLander-v2", seed=0).save(tmp_path / "model.zip")
    check(python("-m", "lunar_sb3.evaluate", "model.zip", "-n", "2", "--json", "evaluation.json", cwd=tmp_path))
    written = json.loads((tmp_path / "evaluation.json").read_text())
    grouped = results_by_agent([tmp_path / "evaluation.json", fake_robust(tmp_path)])
    assert list(grouped) == ["model.zip", "robust preset (soft_dqn_robust)"]  # evaluate saved the path it was given
    assert grouped["model.zip"] == [written["summary"]]
    check(python("-m", "lunar_sb3.pictures", "chart", "c.png", "evaluation.json", "robust.json", cwd=tmp_path))
    with Image.open(tmp_path / "c.png") as image:
        assert image.format == "PNG" and image.width > 300


def test_chart_names_what_it_accepts_for_any_other_json(tmp_path: Path) -> None:
    (tmp_path / "other.json").write_text(json.dumps({"episodes": [1, 2]}))
    done = python("-m", "lunar_sb3.pictures", "chart", "c.png", "other.json", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr and not (tmp_path / "c.png").exists()
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("python -m lunar_sb3.pictures chart: error: other.json is not a results file: expected ")
    assert "evaluation.json" in line and "peers.json" in line


def test_chart_groups_peers_json_by_each_runs_label(tmp_path: Path) -> None:
    runs = [{"algo": "ppo", "label": "PPO (zoo)", "evaluation": {"outcome_shares": SHARES}}] * 2
    runs.append({"algo": "dqn", "label": "DQN (zoo)", "error": "rl_zoo3.train exited with 1: boom"})
    (tmp_path / "peers.json").write_text(json.dumps({"meta": {}, "runs": runs}))
    grouped = results_by_agent([tmp_path / "peers.json"])
    assert list(grouped) == ["PPO (zoo)"] and len(grouped["PPO (zoo)"]) == 2  # the failed run has no bar
