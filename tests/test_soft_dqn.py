"""SoftUpdateDQN: the lab's defaults, its formulas, its persistence and its input checks."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.buffers import NStepReplayBuffer, ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import nn

from lunar_sb3 import SoftUpdateDQN

LAB_DEFAULTS = {
    "learning_rate": 1e-3,
    "buffer_size": 100_000,
    "batch_size": 64,
    "gamma": 0.995,
    "gradient_steps": 1,
    "learning_starts": 64,
    "tau": 1e-3,
    "target_update_interval": 4,
    "exploration_initial_eps": 1.0,
    "exploration_final_eps": 0.01,
    "exploration_decay": 0.995,
    "exploration_schedule_name": "episodic",
    "loss": "mse",
    "double_q": False,
    "max_grad_norm": None,
}


class FixedLengthEnv(gym.Env):
    """Episodes of exactly `length` steps, so the number of finished episodes is known in advance."""

    observation_space = gym.spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, length: int = 5) -> None:
        self.length = length
        self.t = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        self.t += 1
        obs = self.np_random.uniform(-1, 1, size=3).astype(np.float32)
        return obs, float(action), self.t >= self.length, False, {}


def mlp_forward(params: list[np.ndarray], x: np.ndarray) -> np.ndarray:
    """Q-values of a Linear/ReLU stack written out with numpy, independent of torch."""
    w1, b1, w2, b2, w3, b3 = params
    h1 = np.maximum(x @ w1.T + b1, 0)
    h2 = np.maximum(h1 @ w2.T + b2, 0)
    return h2 @ w3.T + b3


def numpy_params(net: nn.Module) -> list[np.ndarray]:
    return [p.detach().double().numpy() for p in net.parameters()]


def fixed_batch(n: int = 6, seed: int = 0) -> ReplayBufferSamples:
    rng = np.random.default_rng(seed)
    f = lambda a: th.as_tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
    return ReplayBufferSamples(
        observations=f(rng.normal(size=(n, 8))),
        actions=th.as_tensor(rng.integers(0, 4, size=(n, 1))),
        next_observations=f(rng.normal(size=(n, 8))),
        dones=f([[0], [1], [0], [0], [1], [0]][:n]),
        rewards=f(rng.normal(scale=10, size=(n, 1))),
        discounts=None,
    )


def test_defaults_are_the_lab():
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2")
    for name, value in LAB_DEFAULTS.items():
        assert getattr(model, name) == value, name
    assert model.train_freq.frequency == 4 and model.train_freq.unit.value == "step"
    assert model._stats_window_size == 100
    assert isinstance(model.policy.optimizer, th.optim.Adam)
    assert model.policy.optimizer.param_groups[0]["lr"] == 1e-3
    for net in (model.q_net.q_net, model.q_net_target.q_net):
        layers = list(net)
        assert [type(layer) for layer in layers] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
        assert [(layer.in_features, layer.out_features) for layer in layers[::2]] == [(8, 64), (64, 64), (64, 4)]
    # the target network starts as a copy of the Q-network
    for p, p_target in zip(model.q_net.parameters(), model.q_net_target.parameters(), strict=True):
        assert th.equal(p, p_target)


def test_policy_kwargs_still_override_the_network():
    model = SoftUpdateDQN("MlpPolicy", "CartPole-v1", policy_kwargs=dict(net_arch=[32], activation_fn=nn.Tanh))
    assert [type(layer) for layer in model.q_net.q_net] == [nn.Linear, nn.Tanh, nn.Linear]


def test_one_polyak_update_is_exact():
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", tau=0.3, seed=1)
    with th.no_grad():
        for p in model.q_net.parameters():
            p.add_(th.randn_like(p))
    online = [p.detach().clone() for p in model.q_net.parameters()]
    target = [p.detach().clone() for p in model.q_net_target.parameters()]
    model._due_target_updates = 1
    model._apply_due_target_updates()
    for w, w_old, w_new in zip(online, target, model.q_net_target.parameters(), strict=True):
        th.testing.assert_close(w_new, 0.3 * w + 0.7 * w_old, rtol=0, atol=1e-6)
    assert model.target_updates == 1 and model._due_target_updates == 0
    # the Q-network itself is untouched
    for w, p in zip(online, model.q_net.parameters(), strict=True):
        assert th.equal(w, p)


@pytest.mark.parametrize("n_envs, total", [(1, 1000), (4, 1024), (8, 1024)])
def test_target_update_cadence_counts_transitions(n_envs, total):
    env = make_vec_env(FixedLengthEnv, n_envs=n_envs, seed=0)
    model = SoftUpdateDQN("MlpPolicy", env, seed=0).learn(total)
    # one soft update at every multiple of C = 4 transitions after learning_starts = 64
    expected = total // 4 - 64 // 4
    assert model.num_timesteps == total
    assert model.target_updates + model._due_target_updates == expected
    assert model._due_target_updates == 0  # the last rollout ended with a gradient step
    assert model._n_updates == (total - 64) // (4 * n_envs)


def float64_params(net: nn.Module) -> list[np.ndarray]:
    return [p.detach().double().numpy().copy() for p in net.parameters()]


def assert_polyak(net: nn.Module, expected: list[np.ndarray]) -> None:
    """float32 weights against a float64 hand computation: a few float32 roundings of O(0.1-1) values apart."""
    for p, want in zip(net.parameters(), expected, strict=True):
        np.testing.assert_allclose(p.detach().double().numpy(), want, rtol=1e-6, atol=1e-7)


def lerp64(targets: list[np.ndarray], sources: list[np.ndarray], weight: float) -> list[np.ndarray]:
    """targets + weight·(sources − targets) in float64: weight τ is one application of the lab's rule."""
    return [t + weight * (s - t) for t, s in zip(targets, sources, strict=True)]


def perturb(net: nn.Module, scale: float, seed: int) -> None:
    generator = th.Generator().manual_seed(seed)
    with th.no_grad():
        for p in net.parameters():
            p.add_(scale * th.randn(p.shape, generator=generator))


@pytest.mark.parametrize("k", [2, 5, 37])
def test_k_due_polyak_updates_are_exact(k):
    """k updates with a constant Q-network: w⁻_k = w + (1 − τ)^k·(w⁻_0 − w), i.e. k applications of the lab's rule."""
    tau = 0.3
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", tau=tau, seed=1)
    perturb(model.q_net, 0.1, seed=k)
    online, target = float64_params(model.q_net), float64_params(model.q_net_target)
    model._due_target_updates = k
    model._apply_due_target_updates()
    # w⁻_k = w + (1 − τ)^k·(w⁻_0 − w), written as a lerp from w towards w⁻_0
    assert_polyak(model.q_net_target, lerp64(online, target, (1 - tau) ** k))
    # the same by iterating the lab's rule w⁻ ← τ·w + (1 − τ)·w⁻ k times
    iterated = target
    for _ in range(k):
        iterated = lerp64(iterated, online, tau)
    assert_polyak(model.q_net_target, iterated)
    assert model.target_updates == k and model._due_target_updates == 0
    for p, w in zip(model.q_net.parameters(), online, strict=True):  # the Q-network itself is untouched
        assert np.array_equal(p.detach().double().numpy(), w)


def test_polyak_updates_follow_a_changing_q_network():
    """Updates due at different times use the Q-network of their time: the order of the float64 recursion matters."""
    tau = 0.2
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", tau=tau, seed=2)
    expected = float64_params(model.q_net_target)
    for round_, k in enumerate([1, 3, 2, 4]):
        perturb(model.q_net, 0.1, seed=100 + round_)  # what a gradient step does between two updates
        online = float64_params(model.q_net)
        for _ in range(k):
            expected = lerp64(expected, online, tau)
        model._due_target_updates = k
        model._apply_due_target_updates()
        assert_polyak(model.q_net_target, expected)
    assert model.target_updates == 1 + 3 + 2 + 4


def test_due_target_updates_follow_the_gradient_step():
    """In ``train`` the soft updates come after the gradient step, so they pull towards the *updated* Q-network."""
    tau = 0.3
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", tau=tau, seed=0, learning_starts=500)
    model.learn(500)  # warm-up only: fills the memory, no gradient step and no due update yet
    assert model._n_updates == 0 and model.target_updates == 0 and model._due_target_updates == 0
    before_step, target = float64_params(model.q_net), float64_params(model.q_net_target)
    model._due_target_updates = 3
    model.train(gradient_steps=1, batch_size=64)
    after_step = float64_params(model.q_net)
    assert max(np.abs(a - b).max() for a, b in zip(after_step, before_step, strict=True)) > 1e-4  # the step moved
    weight = 1 - (1 - tau) ** 3
    assert_polyak(model.q_net_target, lerp64(target, after_step, weight))
    stale = lerp64(target, before_step, weight)
    with pytest.raises(AssertionError):
        assert_polyak(model.q_net_target, stale)
    assert model.target_updates == 3 and model._due_target_updates == 0


@pytest.mark.parametrize("loss", ["mse", "huber"])
@pytest.mark.parametrize("double_q", [False, True])
def test_td_target_and_loss_match_a_hand_computation(loss, double_q):
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", loss=loss, double_q=double_q, seed=3)
    with th.no_grad():  # make the two networks differ, so double_q matters
        for p in model.q_net_target.parameters():
            p.add_(0.5 * th.randn_like(p))
    batch = fixed_batch()
    obs, next_obs = batch.observations.double().numpy(), batch.next_observations.double().numpy()
    rewards, dones = batch.rewards.double().numpy()[:, 0], batch.dones.double().numpy()[:, 0]
    actions = batch.actions.numpy()[:, 0]
    q_target_next = mlp_forward(numpy_params(model.q_net_target), next_obs)
    if double_q:
        greedy = mlp_forward(numpy_params(model.q_net), next_obs).argmax(axis=1)
        next_value = q_target_next[np.arange(6), greedy]
    else:
        next_value = q_target_next.max(axis=1)
    y = rewards + 0.995 * next_value * (1 - dones)
    q_sa = mlp_forward(numpy_params(model.q_net), obs)[np.arange(6), actions]
    error = q_sa - y
    if loss == "mse":
        expected_loss = np.mean(error**2)
    else:
        expected_loss = np.mean(np.where(np.abs(error) < 1, 0.5 * error**2, np.abs(error) - 0.5))

    y_model = model.td_target(batch.rewards, batch.next_observations, batch.dones, model.gamma)
    np.testing.assert_allclose(y_model.numpy()[:, 0], y, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(float(model.td_loss(batch).detach()), expected_loss, rtol=1e-5)
    # terminal transitions do not bootstrap: the model's target is exactly the batch's reward there
    terminal = batch.dones[:, 0] == 1
    assert terminal.any() and (~terminal).any()
    assert th.equal(y_model[terminal, 0], batch.rewards[terminal, 0])
    assert not th.allclose(y_model[~terminal, 0], batch.rewards[~terminal, 0], atol=1e-3)


def test_td_loss_uses_the_per_sample_n_step_discounts():
    """With n-step replay each sample carries its own γⁿ (shorter at episode ends); plain γ would give another loss."""
    gamma = 0.9
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", gamma=gamma, seed=0)
    with th.no_grad():  # bootstrapped values ≈ 20, so γ instead of γⁿ would move the targets by several units
        model.q_net_target.q_net[-1].bias.add_(20.0)
    discounts = np.array([gamma**3, gamma**3, gamma**2, gamma, gamma**3, gamma**2])
    batch = fixed_batch()._replace(discounts=th.as_tensor(discounts[:, None], dtype=th.float32))
    rewards, dones = batch.rewards.double().numpy()[:, 0], batch.dones.double().numpy()[:, 0]
    next_value = mlp_forward(numpy_params(model.q_net_target), batch.next_observations.double().numpy()).max(axis=1)
    q_sa = mlp_forward(numpy_params(model.q_net), batch.observations.double().numpy())
    q_sa = q_sa[np.arange(6), batch.actions.numpy()[:, 0]]

    def mse(discount: np.ndarray | float) -> float:
        return float(np.mean((q_sa - (rewards + discount * next_value * (1 - dones))) ** 2))

    expected, with_plain_gamma = mse(discounts.astype(np.float32)), mse(gamma)
    assert abs(expected - with_plain_gamma) > 1.0  # the check below can tell the two apart
    np.testing.assert_allclose(float(model.td_loss(batch).detach()), expected, rtol=1e-5)
    y = model.td_target(batch.rewards, batch.next_observations, batch.dones, batch.discounts)
    expected_y = rewards + discounts.astype(np.float32) * next_value * (1 - dones)
    np.testing.assert_allclose(y.numpy()[:, 0], expected_y, rtol=1e-5, atol=1e-4)


class LossRecorder(Logger):
    """A silent logger that keeps every ``train/loss`` value recorded during training."""

    def __init__(self) -> None:
        super().__init__(folder=None, output_formats=[])
        self.losses: list[float] = []

    def record(self, key, value, exclude=None):  # type: ignore[no-untyped-def]
        if key == "train/loss":
            self.losses.append(float(value))
        super().record(key, value, exclude)


def test_n_step_training_on_lunar_lander():
    """``n_steps=3`` trains on SB3's NStepReplayBuffer, whose samples carry γ³ (γ or γ² where an episode ends)."""
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", n_steps=3, seed=0)
    recorder = LossRecorder()
    model.set_logger(recorder)
    model.learn(500)
    buffer = model.replay_buffer
    assert type(buffer) is NStepReplayBuffer and buffer.n_steps == 3 and buffer.gamma == model.gamma == 0.995
    assert model._n_updates == (500 - 64) // 4
    assert len(recorder.losses) == model._n_updates and np.all(np.isfinite(recorder.losses))
    np.random.seed(0)
    discounts = buffer.sample(1000).discounts.numpy()[:, 0].astype(np.float64)
    steps = np.log(discounts) / np.log(model.gamma)  # the n of each γⁿ
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)
    assert set(np.round(steps).astype(int)) <= {1, 2, 3}
    assert not np.allclose(discounts, model.gamma)
    assert np.mean(np.round(steps) == 3) > 0.9  # full 3-step returns, except near episode ends


class EpisodeEndRecorder(BaseCallback):
    """Remembers (buffer row, env, terminal observation, truncated?) of every episode end the rollout reports."""

    def __init__(self) -> None:
        super().__init__()
        self.ends: list[tuple[int, int, np.ndarray, bool]] = []

    def _on_step(self) -> bool:
        for env_index, (done, info) in enumerate(zip(self.locals["dones"], self.locals["infos"], strict=True)):
            if done:
                terminal = np.array(info["terminal_observation"], copy=True)
                self.ends.append((self.n_calls - 1, env_index, terminal, bool(info["TimeLimit.truncated"])))
        return True


def test_time_limit_truncation_through_the_fast_rollout():
    """Episodes cut by a TimeLimit are stored with their last observation and are not bootstrapped as terminal."""
    env = DummyVecEnv([lambda: Monitor(gym.make("LunarLander-v2", max_episode_steps=20))])
    model = SoftUpdateDQN("MlpPolicy", env, seed=0)
    recorder = EpisodeEndRecorder()
    model.learn(300, callback=recorder)
    assert model.uses_fast_path  # the lean rollout loop stored these transitions
    buffer, rows = model.replay_buffer, 300
    assert buffer.pos == rows and not buffer.full

    # 20 steps are far too few to land or crash: every episode was truncated, at rows 19, 39, ..., 299
    truncated_rows = list(range(19, rows, 20))
    assert [(row, env_index, truncated) for row, env_index, _, truncated in recorder.ends] == [
        (row, 0, True) for row in truncated_rows
    ]
    assert [e["l"] for e in model.ep_info_buffer] == [20] * 15
    assert np.flatnonzero(buffer.dones[:rows, 0]).tolist() == truncated_rows
    assert np.flatnonzero(buffer.timeouts[:rows, 0]).tolist() == truncated_rows

    # s′ of a truncated row is the episode's terminal observation, not the reset observation that follows it
    for row, _, terminal_obs, _ in recorder.ends:
        np.testing.assert_array_equal(buffer.next_observations[row, 0], terminal_obs)
        reset_obs = buffer.observations[row + 1, 0] if row + 1 < rows else model._last_obs[0]
        assert not np.allclose(buffer.next_observations[row, 0], reset_obs, atol=1e-3)
    within_episodes = np.array([row for row in range(rows - 1) if row not in truncated_rows])
    np.testing.assert_array_equal(buffer.next_observations[within_episodes], buffer.observations[within_episodes + 1])

    # the done that enters the TD target, dones·(1 − timeouts), is 0 for them: they bootstrap from s′
    samples = buffer._get_samples(np.array(truncated_rows))  # SB3's sampling, on exactly the truncated rows
    assert samples.dones.sum() == 0
    np.testing.assert_array_equal(samples.next_observations.numpy(), buffer.next_observations[truncated_rows, 0])
    # and the fast trainer's own sampling (same random calls as SB3's) agrees
    np.random.seed(3)
    indices = np.random.randint(0, rows, size=512)
    np.random.seed(3)
    _, _, next_obs, dones, _ = model._fast_trainer.sample(512)
    np.testing.assert_array_equal(next_obs.numpy(), buffer.next_observations[indices, 0])
    assert buffer.dones[indices, 0].sum() > 0  # truncated rows were drawn...
    assert float(dones.sum()) == 0.0  # ...and none of them counts as terminal


def test_truncation_is_not_termination():
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", seed=0)
    assert isinstance(model.replay_buffer, ReplayBuffer) and model.replay_buffer.handle_timeout_termination
    obs = np.zeros((1, 8), dtype=np.float32)
    model.replay_buffer.add(obs, obs, np.array([1]), np.array([1.0]), np.array([True]), [{"TimeLimit.truncated": True}])
    assert model.replay_buffer.sample(4).dones.sum() == 0


def test_epsilon_decays_once_per_finished_episode():
    model = SoftUpdateDQN("MlpPolicy", FixedLengthEnv(length=5), seed=0)
    model.learn(5 * 37)
    assert model.finished_episodes == 37
    assert model.exploration_rate == pytest.approx(0.995**37, rel=1e-12)
    model.finished_episodes = 2000  # 0.995^2000 ≈ 4e-5: the floor applies
    assert model._scheduled_exploration_rate() == 0.01


class ExplorationRecorder(BaseCallback):
    """Records (timesteps, finished episodes, ε) at every step; the last two were both set by the previous step."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, int, float]] = []

    def _on_step(self) -> bool:
        self.seen.append((self.model.num_timesteps, self.model.finished_episodes, self.model.exploration_rate))
        return True


def test_epsilon_is_exact_all_along_the_episodic_schedule():
    """ε = max(0.01, 0.995^k) after exactly k episodes, to float precision, before and after the floor (k = 919)."""
    recorder = ExplorationRecorder()
    model = SoftUpdateDQN("MlpPolicy", FixedLengthEnv(length=1), seed=0).learn(1000, callback=recorder)
    by_episodes = {episodes: eps for _, episodes, eps in recorder.seen}
    assert sorted(by_episodes) == list(range(1000))  # one-step episodes: k = 0 .. 999 all seen
    for k, eps in by_episodes.items():
        assert eps == pytest.approx(max(0.01, 0.995**k), rel=1e-12, abs=0), k
    assert by_episodes[500] == pytest.approx(0.0815719, rel=1e-6)  # mid-schedule, far above the floor
    assert by_episodes[918] == pytest.approx(0.995**918, rel=1e-12) and 0.995**918 > 0.01
    assert by_episodes[919] == 0.01 and 0.995**919 < 0.01  # the floor, exactly
    assert model.finished_episodes == 1000 and model.exploration_rate == 0.01


def test_epsilon_counts_episodes_of_every_env():
    env = make_vec_env(lambda: FixedLengthEnv(length=5), n_envs=4, seed=0)
    model = SoftUpdateDQN("MlpPolicy", env, seed=0).learn(4 * 5 * 10)
    assert model.finished_episodes == 40
    assert model.exploration_rate == pytest.approx(0.995**40, rel=1e-12, abs=0)


def test_linear_exploration_schedule_stays_available():
    """SB3's linear schedule: ε = 1 + (0.01 − 1)·(t / T) / fraction until t = fraction·T, then 0.01, at every step."""
    total = 400
    for fraction in (0.5, 1.0):
        recorder = ExplorationRecorder()
        model = SoftUpdateDQN(
            "MlpPolicy", FixedLengthEnv(), exploration_schedule="linear", exploration_fraction=fraction, seed=0
        ).learn(total, callback=recorder)
        for timesteps, _, eps in recorder.seen[1:]:
            done = (timesteps - 1) / total  # ε seen at a step was set after the previous one
            expected = 0.01 if done > fraction else 1.0 + (0.01 - 1.0) * done / fraction
            assert eps == pytest.approx(expected, rel=1e-9, abs=1e-12), (fraction, timesteps)
        assert model.exploration_rate == pytest.approx(0.01, rel=1e-9)  # t = T: the end of the schedule
    middle = {timesteps: eps for timesteps, _, eps in recorder.seen}[201]  # fraction 1.0, t = 200
    assert middle == pytest.approx(0.505, rel=1e-9)


def test_save_load_continue_keeps_epsilon_and_episode_count(tmp_path):
    model = SoftUpdateDQN("MlpPolicy", FixedLengthEnv(length=5), seed=0).learn(500)
    model.save(tmp_path / "model")
    loaded = SoftUpdateDQN.load(tmp_path / "model", env=FixedLengthEnv(length=5))
    assert loaded.finished_episodes == model.finished_episodes == 100
    assert loaded.exploration_rate == model.exploration_rate == pytest.approx(0.995**100)
    loaded.learn(300, reset_num_timesteps=False)
    assert loaded.num_timesteps == 800
    assert loaded.finished_episodes == 160
    assert loaded.exploration_rate == pytest.approx(0.995**160)
    # A fresh learn() call (what `rl_zoo3.train -i` does) continues the decay too
    loaded.learn(60)
    assert loaded.finished_episodes == 172
    assert loaded.exploration_rate == pytest.approx(0.995**172)


def test_load_restores_every_hyperparameter(tmp_path):
    custom = dict(
        learning_rate=5e-4,
        buffer_size=5000,
        learning_starts=100,
        batch_size=32,
        tau=0.01,
        gamma=0.99,
        target_update_interval=8,
        exploration_decay=0.99,
        exploration_final_eps=0.05,
        loss="huber",
        double_q=True,
        max_grad_norm=10.0,
    )
    SoftUpdateDQN("MlpPolicy", "LunarLander-v2", **custom).save(tmp_path / "custom")
    loaded = SoftUpdateDQN.load(tmp_path / "custom")
    for name, value in custom.items():
        assert getattr(loaded, name) == value, name
    SoftUpdateDQN("MlpPolicy", "LunarLander-v2").save(tmp_path / "lab")
    loaded = SoftUpdateDQN.load(tmp_path / "lab")
    for name, value in LAB_DEFAULTS.items():
        assert getattr(loaded, name) == value, name


def test_same_seed_same_parameters():
    def run() -> list[th.Tensor]:
        model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", seed=42).learn(600)
        return [p.detach().clone() for p in model.policy.parameters()]

    first, second = run(), run()
    for a, b in zip(first, second, strict=True):
        assert th.equal(a, b)


@pytest.mark.parametrize(
    "kwargs, parameter",
    [
        (dict(tau=0.0), "tau"),
        (dict(tau=1.5), "tau"),
        (dict(target_update_interval=0), "target_update_interval"),
        (dict(target_update_interval=2.5), "target_update_interval"),
        (dict(exploration_decay=0.0), "exploration_decay"),
        (dict(exploration_decay=1.01), "exploration_decay"),
        (dict(exploration_initial_eps=1.2), "exploration_initial_eps"),
        (dict(exploration_final_eps=-0.1), "exploration_final_eps"),
        (dict(exploration_initial_eps=0.1, exploration_final_eps=0.2), "exploration_final_eps"),
        (dict(exploration_fraction=2.0), "exploration_fraction"),
        (dict(loss="l1"), "loss"),
        (dict(exploration_schedule="cosine"), "exploration_schedule"),
        (dict(max_grad_norm=0), "max_grad_norm"),
    ],
)
def test_bad_input_raises_a_clear_value_error(kwargs, parameter):
    with pytest.raises(ValueError, match=rf"{parameter}=.* must be"):
        SoftUpdateDQN("MlpPolicy", "CartPole-v1", **kwargs)


def test_non_discrete_actions_keep_sb3_error():
    with pytest.raises(AssertionError, match="only supports"):
        SoftUpdateDQN("MlpPolicy", "Pendulum-v1")


@pytest.mark.parametrize("n_envs", [1, 4])
def test_short_learn_on_lunar_lander(n_envs):
    env = make_vec_env("LunarLander-v3", n_envs=n_envs, seed=0)
    model = SoftUpdateDQN("MlpPolicy", env, seed=0).learn(800)
    assert model.num_timesteps == 800
    assert model._n_updates > 0 and model.target_updates > 0
    action, _ = model.predict(env.observation_space.sample()[None], deterministic=True)
    assert action.shape == (1,) and 0 <= action[0] < 4
