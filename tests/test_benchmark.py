"""The benchmark and plotting tools run end to end (tiny budgets: they check the pipeline, not the results)."""

import json
import subprocess
import sys

import matplotlib.image
import pytest

from lunar_sb3.benchmark import solve_table
from lunar_sb3.plot import plot_learning_curve


def run(*args: str, cwd) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    return result


def test_solve_quick_writes_json_table_and_png(tmp_path):
    result = run("-m", "lunar_sb3.benchmark", "solve", "--quick", "--jobs", "2", "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads((tmp_path / "out" / "solve.json").read_text())
    runs = data["runs"]
    assert sorted((r["agent"], r["seed"]) for r in runs) == [
        ("sb3_dqn", 0),
        ("sb3_dqn", 1),
        ("soft_dqn", 0),
        ("soft_dqn", 1),
    ]
    for r in runs:
        assert r["steps"] >= 2000 and r["seconds"] > 0 and r["steps_per_second"] > 0
        assert len(r["curve"]["returns"]) == len(r["curve"]["timesteps"]) == r["episodes"] > 0
        assert r["evaluation"]["n_episodes"] == 2
    table = (tmp_path / "out" / "solve.md").read_text()
    assert "SoftUpdateDQN (defaults)" in table and "SB3 DQN, lab settings" in table and "0/2" in table
    assert "env steps/s" in table and "no seed solved by both" in table
    image = matplotlib.image.imread(tmp_path / "out" / "learning_curves.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.std() > 0


def test_solve_table_reports_medians_and_ratios():
    def fake(agent, seed, solved, episodes, seconds, sps):
        evaluation = {"return_mean": 250.0, "solved_share": 0.9, "outcome_shares": {"landed": 0.8}}
        return dict(
            agent=agent,
            seed=seed,
            solved=solved,
            episodes=episodes,
            steps=episodes * 300,
            seconds=seconds,
            steps_per_second=sps,
            evaluation=evaluation,
        )

    results = [fake("soft_dqn", s, True, 500 + 100 * s, 50.0 + s, 4000.0) for s in range(3)]
    results += [fake("sb3_dqn", s, s < 2, 700, 400.0, 1000.0) for s in range(3)]
    table = solve_table(results, ["soft_dqn", "sb3_dqn"])
    assert "| SoftUpdateDQN (defaults) | 3/3 | 600 (500–700) |" in table
    assert "| SB3 DQN, lab settings | 2/3 | 700 (700–700) |" in table
    assert "env steps/s 4.00×" in table
    assert "wall seconds to solve 0.13×" in table  # median of 50/400 and 51/400
    assert "env steps to solve 0.79× (2 seeds solved by both)" in table  # 500/700 and 600/700
    assert "| 90 % | 80 % |" in table


def test_throughput_mode_prints_both_rates_and_ratio(tmp_path):
    result = run("-m", "lunar_sb3.benchmark", "throughput", "--steps", "600", "--rounds", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "SoftUpdateDQN (defaults)" in result.stdout and "SB3 DQN, lab settings" in result.stdout
    assert "ratio SoftUpdateDQN ÷ SB3 DQN:" in result.stdout


def test_throughput_of_rainbow_components_names_their_training_path(tmp_path):
    args = ("throughput", "--steps", "300", "--rounds", "1", "--no-profile", "--agents", "dueling", "rainbow_lite")
    result = run("-m", "lunar_sb3.benchmark", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ratio + dueling ÷ SoftUpdateDQN (defaults):" in result.stdout
    assert "ratio rainbow-lite (all four) ÷ SoftUpdateDQN (defaults):" in result.stdout
    assert result.stdout.count("[fast path]") == 2 and "SB3 DQN" not in result.stdout


def test_threads_mode_runs_beside_a_busy_process_and_cleans_up(tmp_path):
    result = run("-m", "lunar_sb3.benchmark", "threads", "--steps", "300", "--rounds", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "beside one CPU-bound process" in result.stdout and "one torch thread" in result.stdout
    assert "ratio one thread ÷ default:" in result.stdout


def test_zoo_mode_reads_both_speeds(tmp_path):
    result = run("-m", "lunar_sb3.benchmark", "zoo", "--steps", "1000", "--rounds", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "ratio soft_dqn ÷ dqn:" in result.stdout


def test_plot_learning_curve_from_monitor_files(tmp_path):
    from stable_baselines3.common.env_util import make_vec_env

    from lunar_sb3 import SoftUpdateDQN

    SoftUpdateDQN("MlpPolicy", make_vec_env("CartPole-v1", seed=0, monitor_dir=str(tmp_path))).learn(3000)
    png = plot_learning_curve(tmp_path, tmp_path / "curve.png")
    image = matplotlib.image.imread(png)
    assert image.shape[2] in (3, 4) and image.std() > 0
    result = run("-m", "lunar_sb3.plot", str(tmp_path / "missing"), cwd=tmp_path)
    assert result.returncode == 2 and "no *.monitor.csv" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("argv", [["solve", "--seeds", "0"], ["solve", "--agents", "ppo"]])
def test_benchmark_rejects_bad_input(tmp_path, argv):
    result = run("-m", "lunar_sb3.benchmark", *argv, cwd=tmp_path)
    assert result.returncode == 2 and "error" in result.stderr and "Traceback" not in result.stderr


def _fake_run(agent: str, seed: int, steps: int, solved: bool = True) -> dict:
    shares = {name: 0.0 for name in ("landed", "landed_off_pad", "crashed", "out_of_bounds", "timeout")}
    return {
        "agent": agent,
        "seed": seed,
        "solved": solved,
        "episodes": 10,
        "steps": steps,
        "seconds": steps / 1000,
        "steps_per_second": 1000.0,
        "evaluation": {"return_mean": 100.0 + seed, "solved_share": 0.5, "outcome_shares": {**shares, "landed": 0.5}},
        "curve": {"returns": [0.0, 100.0, 200.0], "timesteps": [10, 20, steps]},
    }


def test_ablation_table_reports_iqm_intervals_and_probability_of_improvement():
    from lunar_sb3.benchmark.ablation import ablation_table, per_seed

    results = [_fake_run("soft_dqn", s, x) for s, x in enumerate([100_000, 200_000, 300_000, 400_000, 900_000])]
    results += [_fake_run("double", s, x) for s, x in enumerate([10_000, 20_000, 30_000, 40_000, 50_000])]
    results.append({**_fake_run("double", 5, 5_000), "solved": False})  # an unsolved run counts its budget
    assert per_seed(results, "double", max_steps=1_000_000)["steps"][-1] == 1_000_000
    table = ablation_table(results, ["soft_dqn", "double"], max_steps=1_000_000)
    defaults, double = table.splitlines()[2:]
    # IQM of five values: the mean of the middle three (25 % trimmed at each end)
    assert "| 5/5 | 300,000 [" in defaults and "| — |" in defaults
    assert "| 5/6 | 35,000 [" in double  # IQM of 10k..50k and 1M: mean of 20k, 30k, 40k, 50k
    assert "| 0.83 [" in double  # P(fewer steps): 25 of the 30 pairs (1M loses to every defaults run)


def test_ablation_quick_writes_its_files(tmp_path):
    out = tmp_path / "ablation"
    args = ("ablation", "--quick", "--seeds", "2", "--agents", "soft_dqn", "rainbow_lite", "--out", str(out))
    result = run("-m", "lunar_sb3.benchmark", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in ("solve.json", "ablation.md", "ablation_curves.png"):
        assert (out / name).stat().st_size > 0, name
    assert "rainbow-lite (all four)" in (out / "ablation.md").read_text()
