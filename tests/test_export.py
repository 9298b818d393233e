"""The exported greedy policy acts like ``model.predict(deterministic=True)``, with nothing but its runtime.

Oracles: SB3's own ``predict`` on 10,000 observations from real episodes, a 100-episode evaluation with SB3 against
the same episodes played by ONNX Runtime, and, for the dueling network, Q = V + A − mean A computed in NumPy from the
network's two heads. Q-values are compared to 1e-4; an action may differ only where the two best Q-values are
within 1e-4 of each other (float32 sums in another order), and the tests say how often that happened.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from lunar_sb3 import SoftUpdateDQN
from lunar_sb3.evaluate import evaluate_model
from lunar_sb3.export import GreedyPolicy, example_observations, export_onnx, export_torchscript
from lunar_sb3.export import main as export_main

ort = pytest.importorskip("onnxruntime", reason="the export extra (pip install -e '.[export]') is not installed")
onnx = pytest.importorskip("onnx", reason="the export extra (pip install -e '.[export]') is not installed")

ENV_ID = "LunarLander-v2"
SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "rl-trained-agents" / "soft_dqn" / f"{ENV_ID}_1" / f"{ENV_ID}.zip"
N_OBSERVATIONS = 10_000
NEAR_TIE = 1e-4


class OnnxLander:
    """``predict`` backed by an ONNX Runtime session, so ``evaluate_model`` can drive the exported file."""

    def __init__(self, path: Path) -> None:
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> tuple[np.ndarray, None]:
        """Greedy actions for one observation or a batch of them (evaluate_model plays its episodes side by side)."""
        obs = np.asarray(obs, dtype=np.float32)
        actions = [
            int(self.session.run(None, {"obs": row.reshape(1, -1)})[1][0]) for row in obs.reshape(-1, obs.shape[-1])
        ]
        return (np.asarray(actions) if obs.ndim > 1 else actions[0]), None


@pytest.fixture(scope="module")
def shipped() -> SoftUpdateDQN:
    return SoftUpdateDQN.load(SHIPPED_MODEL, device="cpu")


@pytest.fixture(scope="module")
def observations(shipped: SoftUpdateDQN) -> np.ndarray:
    """10,000 observations of real episodes: the shipped lander flying, with a random action 30 % of the time so
    the states are not only those of perfect landings."""
    env = gym.make(ENV_ID)
    rng = np.random.default_rng(0)
    seen: list[np.ndarray] = []
    seed = 0
    while len(seen) < N_OBSERVATIONS:
        obs, _ = env.reset(seed=seed)
        seed += 1
        done = False
        while not done and len(seen) < N_OBSERVATIONS:
            seen.append(obs)
            action = env.action_space.sample() if rng.random() < 0.3 else shipped.predict(obs, deterministic=True)[0]
            obs, _, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
    env.close()
    return np.asarray(seen, dtype=np.float32)


def assert_same_greedy_actions(actions: np.ndarray, expected: np.ndarray, q_values: np.ndarray) -> int:
    """Equal actions except at near-ties of the expected Q-values; returns the number of near-tie differences."""
    top_two = np.sort(q_values, axis=1)[:, -2:]
    differ = actions != expected
    assert not np.any(differ & (top_two[:, 1] - top_two[:, 0] >= NEAR_TIE)), np.flatnonzero(differ)[:10]
    assert differ.sum() <= len(actions) // 1000, f"{differ.sum()} near-tie differences in {len(actions)}"
    return int(differ.sum())


def exported(model: SoftUpdateDQN, folder: Path, vec_normalize: VecNormalize | None = None) -> tuple[Path, Path]:
    policy = GreedyPolicy(model, vec_normalize)
    example = example_observations(model)
    return (
        export_onnx(policy, example, folder / "lander.onnx", {"env_id": ENV_ID}),
        export_torchscript(policy, example, folder / "lander.pt"),
    )


def run_both(onnx_path: Path, torchscript_path: Path, obs: np.ndarray) -> tuple[tuple, tuple]:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_q, onnx_actions = session.run(None, {"obs": obs})
    with torch.no_grad():
        ts_q, ts_actions = torch.jit.load(str(torchscript_path))(torch.as_tensor(obs))
    return (onnx_q, onnx_actions), (ts_q.numpy(), ts_actions.numpy())


@pytest.fixture(scope="module")
def shipped_exports(shipped: SoftUpdateDQN, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("export")
    onnx_path, torchscript_path = folder / "lander.onnx", folder / "lander.pt"
    argv = [str(SHIPPED_MODEL), "--onnx", str(onnx_path), "--torchscript", str(torchscript_path)]
    assert export_main(argv) == 0
    return onnx_path, torchscript_path


def test_plain_export_chooses_predicts_actions(
    shipped: SoftUpdateDQN, shipped_exports: tuple[Path, Path], observations: np.ndarray
) -> None:
    expected = shipped.predict(observations, deterministic=True)[0]
    with torch.no_grad():
        q_reference = shipped.q_net(torch.as_tensor(observations)).numpy()
    (onnx_q, onnx_actions), (ts_q, ts_actions) = run_both(*shipped_exports, observations)
    assert onnx_actions.dtype == np.int64 and onnx_actions.shape == (N_OBSERVATIONS,)
    np.testing.assert_allclose(onnx_q, q_reference, rtol=0, atol=NEAR_TIE)
    np.testing.assert_allclose(ts_q, q_reference, rtol=0, atol=NEAR_TIE)
    assert_same_greedy_actions(onnx_actions, expected, q_reference)
    assert_same_greedy_actions(ts_actions, expected, q_reference)
    assert len(set(expected.tolist())) == 4  # the observations exercise every action


def test_onnx_driven_evaluation_reports_the_same_returns(
    shipped: SoftUpdateDQN, shipped_exports: tuple[Path, Path]
) -> None:
    reference = evaluate_model(shipped, ENV_ID, n_episodes=100, seed=0)
    played = evaluate_model(OnnxLander(shipped_exports[0]), ENV_ID, n_episodes=100, seed=0)
    assert played["episodes"]["outcomes"] == reference["episodes"]["outcomes"]
    np.testing.assert_array_equal(played["episodes"]["returns"], reference["episodes"]["returns"])
    assert played["summary"] == reference["summary"]


def test_dueling_export_combines_value_and_advantages_in_the_graph(observations: np.ndarray, tmp_path: Path) -> None:
    model = SoftUpdateDQN(
        "MlpPolicy", ENV_ID, dueling=True, learning_starts=200, seed=3, policy_kwargs=dict(net_arch=[32, 32])
    )
    model.learn(1500)
    onnx_path, torchscript_path = exported(model, tmp_path)
    assert any(node.op_type == "ReduceMean" for node in onnx.load(str(onnx_path)).graph.node)
    with torch.no_grad():
        value, advantages = (
            x.double().numpy() for x in model.q_net.value_and_advantages(torch.as_tensor(observations))
        )
    q_oracle = value + advantages - advantages.mean(axis=1, keepdims=True)  # Q = V + A − mean A, in float64
    expected = model.predict(observations, deterministic=True)[0]
    for q_values, actions in run_both(onnx_path, torchscript_path, observations):
        np.testing.assert_allclose(q_values, q_oracle, rtol=0, atol=1e-5)
        assert_same_greedy_actions(actions, expected, q_oracle)


def test_vecnormalize_statistics_are_baked_into_the_graph(observations: np.ndarray, tmp_path: Path) -> None:
    vec_normalize = VecNormalize(DummyVecEnv([lambda: gym.make(ENV_ID)]), norm_reward=False)
    vec_normalize.seed(0)
    vec_normalize.reset()
    for _ in range(300):
        vec_normalize.step(np.array([vec_normalize.action_space.sample()]))
    vec_normalize.training = False
    model = SoftUpdateDQN("MlpPolicy", vec_normalize, seed=0)
    onnx_path, torchscript_path = exported(model, tmp_path, vec_normalize)
    normalized = vec_normalize.normalize_obs(observations).astype(np.float32)
    assert not np.allclose(normalized, observations)
    expected = model.predict(normalized, deterministic=True)[0]
    with torch.no_grad():
        q_reference = model.q_net(torch.as_tensor(normalized)).numpy()
    for q_values, actions in run_both(onnx_path, torchscript_path, observations):  # raw observations in
        np.testing.assert_allclose(q_values, q_reference, rtol=0, atol=NEAR_TIE)
        assert_same_greedy_actions(actions, expected, q_reference)


@pytest.mark.parametrize(
    "argv, expected",
    [
        ([str(SHIPPED_MODEL)], "nothing to write"),
        (["no_such_model.zip", "--onnx", "x.onnx"], "no such model file"),
        (["--onnx", "x.onnx"], "nothing to export"),
        ([str(SHIPPED_MODEL), "--onnx", "no_such_folder/x.onnx"], "folder no_such_folder does not exist"),
        (["-f", "no_such_logs", "--onnx", "x.onnx"], "no folder no_such_logs/soft_dqn"),
        ([str(SHIPPED_MODEL.parent), "--load-best", "--onnx", "x.onnx"], "holds no model best_model.zip"),
    ],
)
def test_bad_input_gets_one_line(argv: list[str], expected: str, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as raised:
        export_main(argv)
    message = str(raised.value.code)
    assert expected in message and "\n" not in message and message.startswith("python -m lunar_sb3.export: error:")
    assert not list(tmp_path.iterdir())


def test_a_file_that_is_not_a_model_gets_one_line(tmp_path: Path) -> None:
    (tmp_path / "empty.zip").write_bytes(b"")
    with pytest.raises(SystemExit) as raised:
        export_main([str(tmp_path / "empty.zip"), "--onnx", str(tmp_path / "x.onnx")])
    assert "is an empty file" in str(raised.value.code) and not (tmp_path / "x.onnx").exists()


def test_docs_landing_needs_only_gymnasium_and_onnxruntime(shipped: SoftUpdateDQN) -> None:
    """docs/sharing.md's example plays the shipped lander's ONNX file on LunarLander-v3: the same episodes as SB3's
    model on the lab's LunarLander-v2, with neither torch, SB3 nor lunar_sb3 imported."""
    repo = SHIPPED_MODEL.parents[3]
    snippet = (repo / "docs" / "sharing.md").read_text().split("```python\n")[-1].split("```")[0]
    assert "onnxruntime" in snippet and "LunarLander-v3" in snippet
    heavy = "('torch', 'stable_baselines3', 'lunar_sb3')"
    probe = f"import sys; print('imported:', [m for m in {heavy} if m in sys.modules])"
    env = {**os.environ, "LUNAR_SB3_AUTOLOAD": "0"}
    proc = subprocess.run(
        [sys.executable, "-c", snippet + "\n" + probe], cwd=repo, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    reference = evaluate_model(shipped, ENV_ID, n_episodes=3, seed=0)["episodes"]["returns"]
    expected = [f"seed {seed}: return {episode_return:.1f}" for seed, episode_return in enumerate(reference)]
    assert proc.stdout.splitlines() == [*expected, "imported: []"]
