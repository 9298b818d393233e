"""SoftUpdateDQN: the lab's defaults, its formulas, its persistence and its input checks."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.type_aliases import ReplayBufferSamples
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


def test_target_moves_towards_q_network_only_by_polyak():
    """After training, target = Polyak average: it differs from both its start and the Q-network."""
    model = SoftUpdateDQN("MlpPolicy", FixedLengthEnv(), seed=0, learning_starts=64)
    start = [p.detach().clone() for p in model.q_net_target.parameters()]
    model.learn(200)
    for p0, p_target, p in zip(start, model.q_net_target.parameters(), model.q_net.parameters(), strict=True):
        assert not th.equal(p0, p_target)
        # with τ = 1e-3 and 34 updates the target has moved only a few percent of the way
        assert (p_target - p0).abs().max() < (p - p0).abs().max()


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
    np.testing.assert_allclose(float(model.td_loss(batch)), expected_loss, rtol=1e-5)
    # terminal transitions do not bootstrap
    np.testing.assert_allclose(y[dones == 1], rewards[dones == 1])


def test_n_step_discounts_are_used():
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", seed=0)
    batch = fixed_batch()._replace(discounts=th.full((6, 1), 0.5))
    next_value = mlp_forward(numpy_params(model.q_net_target), batch.next_observations.double().numpy()).max(axis=1)
    expected = batch.rewards.numpy()[:, 0] + 0.5 * next_value * (1 - batch.dones.numpy()[:, 0])
    y = model.td_target(batch.rewards, batch.next_observations, batch.dones, batch.discounts)
    np.testing.assert_allclose(y.numpy()[:, 0], expected, rtol=1e-5, atol=1e-5)


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


def test_epsilon_counts_episodes_of_every_env():
    env = make_vec_env(lambda: FixedLengthEnv(length=5), n_envs=4, seed=0)
    model = SoftUpdateDQN("MlpPolicy", env, seed=0).learn(4 * 5 * 10)
    assert model.finished_episodes == 40
    assert model.exploration_rate == pytest.approx(0.995**40)


def test_linear_exploration_schedule_stays_available():
    model = SoftUpdateDQN(
        "MlpPolicy", FixedLengthEnv(), exploration_schedule="linear", exploration_fraction=0.5, seed=0
    ).learn(400)
    assert model.exploration_rate == pytest.approx(0.01)  # past the fraction: the final value
    model = SoftUpdateDQN("MlpPolicy", FixedLengthEnv(), exploration_schedule="linear", exploration_fraction=1.0)
    model.learn(400)
    assert model.exploration_rate == pytest.approx(1.0 + (0.01 - 1.0) * model.num_timesteps / 400, abs=1e-2)


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
