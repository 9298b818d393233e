"""The fast path trains as the general (autograd, SB3 rollout) path does, keeps SB3's contracts, and steps aside.

Over many steps float32 rounding differences grow (the two paths sum in different orders), so the long runs are
compared to looser tolerances than one step (test_compiled.py): 1e-5 of each tensor's size after 1,000 gradient
steps on the same minibatches, 1e-4 after 3,000-step training runs that also choose their actions themselves.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from fast_helpers import (
    RAINBOW_LITE,
    assert_same_td_errors,
    assert_same_training_state,
    general_twin,
    require_numba,
    seeded_runs,
    train_alike,
)
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import configure
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from lunar_sb3 import SoftUpdateDQN
from lunar_sb3.soft_dqn import fast_path, jit, kernel
from lunar_sb3.soft_dqn.prioritized import PrioritizedReplayBuffer

LOCKSTEP_RTOL = 1e-5  # after 1,000 gradient steps on the same minibatches
SEEDED_RUN_RTOL = 1e-4  # after 3,000-step training runs


def filled_pair(seed: int = 0, **kwargs) -> tuple[SoftUpdateDQN, SoftUpdateDQN]:
    """Two identical models (fast, general) whose replay memories hold the same LunarLander transitions."""
    require_numba()
    fast = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", seed=seed, learning_starts=3000, **kwargs)
    fast.learn(3000)  # warm-up only: random actions, no gradient step
    plain = general_twin(fast, "LunarLander-v2", seed=seed, **kwargs)
    assert fast.uses_fast_path and not plain.uses_fast_path
    return fast, plain


@pytest.mark.parametrize(
    "options",
    [dict(), dict(loss="huber", double_q=True, max_grad_norm=1.0), RAINBOW_LITE],
    ids=["defaults", "huber+double+clipping", "rainbow-lite"],
)
def test_lockstep_1000_steps_on_the_same_minibatches(options):
    """Both paths train on the same 1,000 minibatches and stay within 1e-5.

    Prioritized replay draws its next minibatch from the priorities the last step set; a last-bit difference in
    one priority can move a draw across a leaf boundary, after which the two runs replay different transitions
    and drift apart. So after each step the fast model's tree takes the general one's priorities (and each step's
    priorities are compared before that, to the same tolerance): both are then fed the same minibatches.
    """
    fast, plain = filled_pair(tau=0.01, **options)
    prioritized = isinstance(fast.replay_buffer, PrioritizedReplayBuffer)
    for call in range(1000):
        train_alike((fast, plain), 1, first_seed=call)
        if prioritized:
            assert_same_td_errors(fast.replay_buffer, plain.replay_buffer, LOCKSTEP_RTOL, f"|δ| of step {call}")
            fast.replay_buffer.sum_tree.tree[:] = plain.replay_buffer.sum_tree.tree
            fast.replay_buffer.max_priority = plain.replay_buffer.max_priority
    assert_same_training_state(fast, plain, rtol=LOCKSTEP_RTOL)


@pytest.mark.parametrize("options", [dict(), RAINBOW_LITE], ids=["defaults", "rainbow-lite"])
@pytest.mark.parametrize("n_envs", [1, 4])
def test_seeded_runs_agree_on_both_paths(n_envs, options):
    require_numba()
    fast, plain = seeded_runs(n_envs, **options)
    assert fast._n_updates > 700 // n_envs
    for name in ("num_timesteps", "finished_episodes", "_episode_num", "_n_updates", "target_updates"):
        assert getattr(fast, name) == getattr(plain, name), name
    assert fast.exploration_rate == plain.exploration_rate < 0.5  # greedy actions were taken too
    for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
        np.testing.assert_array_equal(getattr(fast.replay_buffer, name), getattr(plain.replay_buffer, name), name)
    assert fast.replay_buffer.pos == plain.replay_buffer.pos
    assert [e["r"] for e in fast.ep_info_buffer] == [e["r"] for e in plain.ep_info_buffer]
    assert_same_training_state(fast, plain, rtol=SEEDED_RUN_RTOL)


def numpy_q(net: nn.Module, x: np.ndarray) -> np.ndarray:
    """Q-values of a Linear/ReLU stack in float64 NumPy, independent of both training paths."""
    linears = [layer for layer in net.q_net if isinstance(layer, nn.Linear)]
    for i, layer in enumerate(linears):
        x = x @ layer.weight.detach().double().numpy().T + layer.bias.detach().double().numpy()
        if i < len(linears) - 1:
            x = np.maximum(x, 0)
    return x


def test_n_step_gradient_step_uses_the_per_sample_discounts():
    """Whichever path ``n_steps=3`` trains on, its loss is the one with the sampled γⁿ, not with plain γ.

    The loss of a gradient step is computed before the step, from the minibatch that ``replay_buffer.sample``
    draws for the same NumPy seed (both paths sample with SB3's random calls), so it can be recomputed by hand.
    """
    gamma = 0.9
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", seed=0, n_steps=3, gamma=gamma, learning_starts=2000)
    model.learn(2000)  # warm-up only: fills the n-step memory, no gradient step
    assert model._n_updates == 0
    with th.no_grad():  # bootstrapped values ≈ 50, so γ instead of γ³ moves every target by ≈ 8
        model.q_net_target.q_net[-1].bias.add_(50.0)

    np.random.seed(11)
    batch = model.replay_buffer.sample(256)
    discounts = batch.discounts.double().numpy()[:, 0]
    assert np.any(np.isclose(discounts, gamma**3)) and not np.allclose(discounts, gamma)
    rewards, dones = batch.rewards.double().numpy()[:, 0], batch.dones.double().numpy()[:, 0]
    next_value = numpy_q(model.q_net_target, batch.next_observations.double().numpy()).max(axis=1)
    q_sa = numpy_q(model.q_net, batch.observations.double().numpy())[np.arange(256), batch.actions.numpy()[:, 0]]

    def mse(discount: np.ndarray | float) -> float:
        return float(np.mean((q_sa - (rewards + discount * next_value * (1 - dones))) ** 2))

    with_discounts, with_plain_gamma = mse(discounts), mse(gamma)
    assert abs(with_discounts - with_plain_gamma) > 0.1 * with_discounts  # the two candidates are far apart

    np.random.seed(11)
    model.train(gradient_steps=1, batch_size=256)
    loss = model.logger.name_to_value["train/loss"]
    assert loss == pytest.approx(with_discounts, rel=1e-5)


class CountingCallback(BaseCallback):
    def __init__(self, stop_at: int | None = None) -> None:
        super().__init__()
        self.stop_at = stop_at
        self.dones_seen = 0

    def _on_step(self) -> bool:
        self.dones_seen += int(np.sum(self.locals["dones"]))
        return self.n_calls != self.stop_at


@pytest.mark.parametrize("n_envs", [1, 4])
def test_callback_sees_every_step_and_can_stop(n_envs):
    model = SoftUpdateDQN("MlpPolicy", make_vec_env("LunarLander-v2", n_envs=n_envs, seed=0), seed=0)
    assert model.uses_fast_path
    counter = CountingCallback()
    model.learn(1200, callback=counter)
    assert counter.n_calls == 1200 // n_envs
    assert counter.dones_seen == model.finished_episodes
    stopper = CountingCallback(stop_at=101)
    model.learn(1200, callback=stopper)
    assert stopper.n_calls == 101 and model.num_timesteps == 101 * n_envs


def test_progress_bar_and_logger_keys(tmp_path, capsys):
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", seed=0)
    model.set_logger(configure(str(tmp_path), ["csv"]))
    model.learn(3000, progress_bar=True, log_interval=1)
    header = (tmp_path / "progress.csv").read_text().splitlines()[0].split(",")
    for key in ("train/loss", "train/n_updates", "rollout/exploration_rate", "rollout/ep_rew_mean", "time/fps"):
        assert key in header, key
    assert "3,000/3,000" in capsys.readouterr().out.replace("\u2009", "")


class TinyExtractor(BaseFeaturesExtractor):
    def __init__(self, observation_space: gym.Space) -> None:
        super().__init__(observation_space, features_dim=16)
        self.linear = nn.Linear(observation_space.shape[0], 16)

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return th.tanh(self.linear(observations))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(policy_kwargs=dict(features_extractor_class=TinyExtractor)),
        dict(policy_kwargs=dict(optimizer_class=th.optim.SGD)),
        dict(optimize_memory_usage=True, replay_buffer_kwargs=dict(handle_timeout_termination=False)),
        dict(policy_kwargs=dict(activation_fn=nn.Tanh)),
    ],
    ids=["features_extractor", "optimizer", "replay_buffer", "activation"],
)
def test_uncovered_configurations_fall_back_and_still_learn(kwargs, capsys):
    model = SoftUpdateDQN("MlpPolicy", "CartPole-v1", seed=0, verbose=1, **kwargs)
    assert not model.uses_fast_path
    start_states = th.as_tensor(np.stack([gym.make("CartPole-v1").reset(seed=s)[0] for s in range(64)]))

    def mean_q() -> float:
        with th.no_grad():
            return float(model.q_net(start_states).mean())

    # CartPole pays +1 per step: learning first shows as Q(s, ·) rising from ~0 towards the returns (>= 1)
    before = mean_q()
    model.learn(1500)
    assert "general path" in capsys.readouterr().out  # the fallback is said where training starts
    assert model._n_updates > 300 and model.target_updates > 300
    assert mean_q() > before + 0.5


def test_fast_path_is_reported(capsys):
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", verbose=2)
    assert model.uses_fast_path
    model.learn(10)
    assert "training on the fast path" in capsys.readouterr().out


def test_tensorboard_gets_the_training_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", seed=0, tensorboard_log=str(tmp_path))
    assert model.uses_fast_path
    model.learn(3000, tb_log_name="run", log_interval=1)
    (run_dir,) = tmp_path.iterdir()
    events = EventAccumulator(str(run_dir))
    events.Reload()
    scalars = events.Tags()["scalars"]
    for key in ("train/loss", "rollout/exploration_rate", "rollout/ep_rew_mean"):
        assert key in scalars, scalars
    assert len(events.Scalars("train/loss")) > 1


# ---- one fallback: SB3's general path, saying why ----------------------------------------------------------------
def assert_trains_on_the_general_path(model: SoftUpdateDQN, reason: str, capsys) -> None:
    model.learn(300)
    assert not model.uses_fast_path and model.fast_path_status == f"general path ({reason})"
    assert f"training on the general path ({reason})" in capsys.readouterr().out
    assert model._n_updates == 59 and model.target_updates == 59  # (300 − 64) // 4 steps on autograd


def test_numba_switched_off_trains_on_the_general_path(monkeypatch, capsys):
    monkeypatch.setenv(jit.ENV_SWITCH, "0")
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", seed=0, verbose=1)
    assert_trains_on_the_general_path(model, "LUNAR_SB3_NUMBA=0", capsys)
    assert model.replay_buffer.__class__.__name__ == "ReplayBuffer"


def test_without_numba_trains_on_the_general_path(monkeypatch, capsys):
    monkeypatch.setattr(jit, "HAS_NUMBA", False)
    monkeypatch.setattr(jit, "IMPORT_ERROR", "ImportError: No module named 'numba'")
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", seed=0, verbose=1, prioritized_replay=True)
    assert_trains_on_the_general_path(model, "numba cannot be imported (ImportError: No module named 'numba')", capsys)


def test_a_compile_failure_is_not_a_crash(monkeypatch, capsys):
    """Whatever Numba raises while building the kernel, ``learn`` trains on the general path and says why."""
    require_numba()

    def broken(*args):
        raise RuntimeError("LLVM ERROR: something went wrong\nmore details")

    monkeypatch.setattr(fast_path, "compile_error", None)  # restored after the test, like the kernel
    monkeypatch.setattr(kernel, "train_steps", broken)
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", seed=0, verbose=1)
    reason = "the compiled training step failed to build (RuntimeError: LLVM ERROR: something went wrong)"
    assert_trains_on_the_general_path(model, reason, capsys)


class TrainingStart(BaseCallback):
    """Notes, when training starts, whether the kernel is already compiled and how long that took."""

    def _on_training_start(self) -> None:
        self.compiled = len(kernel.train_steps.signatures) > 0 and len(kernel.greedy_actions.signatures) > 0
        self.compile_seconds = self.model.fast_path_compile_seconds

    def _on_step(self) -> bool:
        return True


@pytest.mark.parametrize("warm", [False, True])
def test_compiling_is_announced_and_done_before_training_starts(monkeypatch, capsys, warm):
    """One line before a first-run compile; the compile happens in ``_setup_learn``, outside the callbacks' clocks."""
    require_numba()
    monkeypatch.setattr(fast_path.FastTrainer, "cache_is_warm", staticmethod(lambda: warm))
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", seed=0, verbose=1)
    start = TrainingStart()
    model.learn(100, callback=start)
    lines = [line for line in capsys.readouterr().out.splitlines() if "compiling" in line]
    assert lines == ([] if warm else ["SoftUpdateDQN: compiling the training step (first run only, ~10 s)..."])
    assert start.compiled and start.compile_seconds > 0
    assert model.fast_path_compile_seconds == start.compile_seconds


def test_fast_path_compile_seconds_is_not_saved(tmp_path):
    require_numba()
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", seed=0).learn(100)
    model.save(tmp_path / "m")
    loaded = SoftUpdateDQN.load(tmp_path / "m")
    assert not hasattr(loaded, "fast_path_compile_seconds")
