"""``python -m lunar_sb3.evaluate``: a real subprocess on a freshly trained model, and its user errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from stable_baselines3 import DQN

from lunar_sb3 import SoftUpdateDQN
from lunar_sb3.evaluate import evaluate_model, load_model
from lunar_sb3.landing import OUTCOMES

SUMMARY_KEYS = {
    "env_id",
    "n_episodes",
    "seed",
    "return_mean",
    "return_std",
    "solved_share",
    "outcome_shares",
    "length_mean",
    "main_engine_fires_mean",
    "side_engine_fires_mean",
}
EPISODE_KEYS = {"returns", "lengths", "outcomes", "main_engine_fires", "side_engine_fires"}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny trained SoftUpdateDQN, an SB3 DQN for the same env, a CartPole DQN and a corrupt "zip"."""
    folder = tmp_path_factory.mktemp("models")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        SoftUpdateDQN("MlpPolicy", "LunarLander-v2", learning_starts=64, seed=0).learn(500).save(folder / "soft.zip")
        DQN("MlpPolicy", "LunarLander-v2", buffer_size=1000, seed=0).save(folder / "dqn.zip")
        DQN("MlpPolicy", "CartPole-v1", buffer_size=1000, seed=0).save(folder / "cartpole.zip")
    finally:
        torch.set_num_threads(threads)
    (folder / "corrupt.zip").write_bytes(bytes(range(256)) * 8)
    return {path.stem: path for path in folder.iterdir()}


def run_cli(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lunar_sb3.evaluate", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def first_run(
    models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("run1") / "out.json"
    return run_cli(models["soft"], "-n", "3", "--seed", "0", "--json", out, cwd=out.parent), out


def test_cli_prints_the_table_and_writes_json(first_run: tuple[subprocess.CompletedProcess, Path]) -> None:
    done, out = first_run
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "(SoftUpdateDQN) on LunarLander-v2: 3 greedy episodes, seeds 0..2" in done.stdout
    for row in ("return", "return >= 200", *OUTCOMES, "episode length", "main engine fires", "side engine fires"):
        assert f"\n  {row} " in done.stdout, row

    report = json.loads(out.read_text())
    assert report["model_class"] == "SoftUpdateDQN"
    summary, episodes = report["summary"], report["episodes"]
    assert set(summary) == SUMMARY_KEYS and set(episodes) == EPISODE_KEYS
    assert all(len(values) == 3 for values in episodes.values())
    assert set(summary["outcome_shares"]) == set(OUTCOMES) and set(episodes["outcomes"]) <= set(OUTCOMES)
    assert summary["return_mean"] == pytest.approx(sum(episodes["returns"]) / 3)
    assert sum(summary["outcome_shares"].values()) == pytest.approx(1)
    assert summary["length_mean"] == pytest.approx(sum(episodes["lengths"]) / 3)
    assert f"{summary['return_mean']:.1f} ± {summary['return_std']:.1f}" in done.stdout


def test_same_seed_same_json(
    models: dict[str, Path], first_run: tuple[subprocess.CompletedProcess, Path], tmp_path: Path
) -> None:
    _, first = first_run
    again = run_cli(models["soft"], "-n", "3", "--seed", "0", "--json", tmp_path / "out.json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "out.json").read_text() == first.read_text()


def test_episode_i_uses_seed_plus_i(
    models: dict[str, Path], first_run: tuple[subprocess.CompletedProcess, Path]
) -> None:
    """In-process evaluation from seed 1 replays the CLI's episodes 1 and 2 exactly."""
    _, out = first_run
    cli_returns = json.loads(out.read_text())["episodes"]["returns"]
    shifted = evaluate_model(load_model(models["soft"]), n_episodes=2, seed=1)
    assert shifted["episodes"]["returns"] == cli_returns[1:]
    assert cli_returns[0] != cli_returns[1]  # episodes do differ, so the equality above means something


def test_load_model_picks_the_class_from_the_zip(models: dict[str, Path]) -> None:
    assert type(load_model(models["soft"])) is SoftUpdateDQN
    assert type(load_model(models["dqn"])) is DQN
    result = evaluate_model(load_model(models["dqn"]), n_episodes=1)
    assert result["summary"]["n_episodes"] == 1 and len(result["episodes"]["outcomes"]) == 1


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "no such model file"),
        ("corrupt", "is not a Stable-Baselines3 model zip"),
        ("cartpole", "observation space Box(shape=(4,)"),
        ("unknown env", "unknown env id 'NoSuchEnv-v0'"),
    ],
)
def test_bad_input_exits_with_one_clear_line(case: str, expected: str, models: dict[str, Path], tmp_path: Path) -> None:
    args = {
        "missing": [tmp_path / "missing.zip"],
        "corrupt": [models["corrupt"]],
        "cartpole": [models["cartpole"]],
        "unknown env": [models["soft"], "--env", "NoSuchEnv-v0"],
    }[case]
    done = run_cli(*args, "-n", "1", "--json", tmp_path / "out.json", cwd=tmp_path)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("python -m lunar_sb3.evaluate: error: ") and expected in lines[0]
    assert done.stdout == "" and not (tmp_path / "out.json").exists()


def test_episodes_played_side_by_side_are_the_episodes_played_one_by_one() -> None:
    """evaluate_model batches the greedy actions of all running episodes: same episodes as greedy_episode's loop."""
    import gymnasium as gym

    from lunar_sb3 import LandingOutcome, SoftUpdateDQN
    from lunar_sb3.evaluate import evaluate_model
    from lunar_sb3.landing import greedy_episode

    shipped = Path(__file__).parent.parent / "rl-trained-agents" / "soft_dqn" / "LunarLander-v2_1"
    model = SoftUpdateDQN.load(shipped / "LunarLander-v2.zip")
    batched = evaluate_model(model, "LunarLander-v2", n_episodes=8, seed=123)["episodes"]
    env = LandingOutcome(gym.make("LunarLander-v2"))
    one_by_one = [greedy_episode(model, env, 123 + i) for i in range(8)]
    assert batched["returns"] == [episode_return for episode_return, _, _ in one_by_one]
    assert batched["lengths"] == [length for _, length, _ in one_by_one]
    assert batched["outcomes"] == [info["outcome"] for _, _, info in one_by_one]
