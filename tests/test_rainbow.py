"""Rainbow-lite options of SoftUpdateDQN: dueling networks (and, below, their combinations)."""

import numpy as np
import pytest
import torch as th

from lunar_sb3 import SoftUpdateDQN
from lunar_sb3.soft_dqn.policies import DuelingDQNPolicy, DuelingQNetwork


def test_dueling_q_is_value_plus_centred_advantage_by_hand():
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", dueling=True, policy_kwargs=dict(net_arch=[3]))
    net = model.q_net
    assert isinstance(net, DuelingQNetwork) and isinstance(model.policy, DuelingDQNPolicy)
    trunk, heads = net.q_net[0], net.q_net[2]  # net_arch [3]: Linear(8, 3), ReLU, Linear(3, 1 + 4)
    assert (heads.in_features, heads.out_features) == (3, 5)
    with th.no_grad():
        trunk.weight.copy_(th.tensor([[1.0] + [0.0] * 7, [0.0, 1.0] + [0.0] * 6, [-1.0] + [0.0] * 7]))
        trunk.bias.copy_(th.tensor([0.0, 0.5, 0.0]))
        # row 0: the value head; rows 1-4: the advantage head
        heads.weight.copy_(th.tensor([[2.0, 0, 1.0], [1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 1.0]]))
        heads.bias.copy_(th.tensor([10.0, 0.0, 0.0, 0.0, -4.0]))
    obs = th.tensor([[2.0, -3.0, 0, 0, 0, 0, 0, 0]])
    # hidden = relu([2, -2.5, -2]) = [2, 0, 0]; V = 2·2 + 10 = 14; A = [2, 0, 0, 2 − 4] = [2, 0, 0, −2], mean 0
    value, advantages = net.value_and_advantages(obs)
    np.testing.assert_allclose(value.detach().numpy(), [[14.0]])
    np.testing.assert_allclose(advantages.detach().numpy(), [[2.0, 0.0, 0.0, -2.0]])
    np.testing.assert_allclose(net(obs).detach().numpy(), [[16.0, 14.0, 14.0, 12.0]])
    # a non-zero mean is subtracted: A = [3, 1, 1, −1] (bias +1 each), mean 1, Q unchanged
    with th.no_grad():
        heads.bias[1:] += 1.0
    np.testing.assert_allclose(net(obs).detach().numpy(), [[16.0, 14.0, 14.0, 12.0]])
    assert model.predict(obs.numpy()[0], deterministic=True)[0] == 0


def test_dueling_is_saved_and_trains(tmp_path):
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", dueling=True, seed=0, learning_starts=0).learn(400)
    assert model._n_updates == 100
    model.save(tmp_path / "m")
    loaded = SoftUpdateDQN.load(tmp_path / "m")
    assert loaded.dueling and isinstance(loaded.policy, DuelingDQNPolicy)
    obs = np.zeros((3, 8), dtype=np.float32)
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    for p, q in zip(model.policy.parameters(), loaded.policy.parameters(), strict=True):
        th.testing.assert_close(p, q, rtol=0, atol=0)


def test_dueling_needs_the_mlp_policy():
    with pytest.raises(ValueError, match="dueling=True needs policy 'MlpPolicy'"):
        SoftUpdateDQN("CnnPolicy", "LunarLander-v2", dueling=True)


def prioritized_model(loss: str = "mse", **kwargs) -> SoftUpdateDQN:
    """A prioritized model whose memory holds 500 LunarLander transitions with distinct priorities."""
    model = SoftUpdateDQN(
        "MlpPolicy", "LunarLander-v2", seed=1, prioritized_replay=True, loss=loss, learning_starts=10_000, **kwargs
    )
    model.learn(500)  # warm-up only: random actions, no gradient step
    buffer = model.replay_buffer
    leaves = np.arange(500)
    buffer.update_priorities(leaves, np.random.default_rng(0).exponential(5.0, size=500))
    return model


@pytest.mark.parametrize("loss", ["mse", "huber"])
def test_prioritized_loss_is_importance_weighted_by_hand(loss):
    model = prioritized_model(loss)
    model.replay_buffer.beta = 0.7
    np.random.seed(3)
    batch = model.replay_buffer.sample(16)
    tree = model.replay_buffer.sum_tree
    p = tree.leaves[batch.indices]
    weights = (p / tree.total) ** -0.7
    np.testing.assert_allclose(batch.weights.numpy().ravel(), weights / weights.max(), rtol=1e-5)
    with th.no_grad():
        q = model.q_net(batch.observations).gather(1, batch.actions.long()).numpy().ravel().astype(np.float64)
        next_q = model.q_net_target(batch.next_observations).max(dim=1).values.numpy().astype(np.float64)
    y = batch.rewards.numpy().ravel() + 0.995 * (1 - batch.dones.numpy().ravel()) * next_q
    delta = q - y
    per_sample = delta**2 if loss == "mse" else np.where(np.abs(delta) < 1, 0.5 * delta**2, np.abs(delta) - 0.5)
    got_loss, got_delta = model.td_loss_and_errors(batch)
    np.testing.assert_allclose(got_delta.numpy().ravel(), delta, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(float(got_loss), np.mean(weights / weights.max() * per_sample), rtol=1e-4)
    assert not np.isclose(float(got_loss), np.mean(per_sample), rtol=1e-2)  # the weights matter here


def test_priorities_become_td_errors_after_the_gradient_step():
    model = prioritized_model()
    np.random.seed(5)
    batch = model.replay_buffer.sample(32)
    _, delta = model.td_loss_and_errors(batch)  # δ before the step: what the step's own forward computes
    np.random.seed(5)  # the same minibatch inside train()
    model._train_general(gradient_steps=1, batch_size=32)
    leaves = model.replay_buffer.sum_tree.leaves
    expected = (np.abs(delta.numpy().ravel().astype(np.float64)) + 1e-6) ** 0.6
    np.testing.assert_allclose(leaves[batch.indices], expected, rtol=1e-5)


def test_beta_is_annealed_to_one_over_training():
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", prioritized_replay=True, learning_starts=0, seed=0)
    model.learn(400)
    assert model.replay_buffer.beta == pytest.approx(0.4 + 0.6 * (396 / 400), abs=0.01)


def test_prioritized_with_a_custom_buffer_is_refused():
    from stable_baselines3.common.buffers import ReplayBuffer

    with pytest.raises(ValueError, match="prioritized_replay=True brings its own replay buffer"):
        SoftUpdateDQN("MlpPolicy", "LunarLander-v2", prioritized_replay=True, replay_buffer_class=ReplayBuffer)


def test_zoo_trains_all_rainbow_options_and_saves_them(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0"}
    command = [sys.executable, "-m", "rl_zoo3.train", "--algo", "soft_dqn", "--env", "LunarLander-v2", "-n", "2000"]
    command += ["-f", "logs", "--eval-freq", "-1", "-params", "dueling:True", "prioritized_replay:True", "n_steps:3"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    model = SoftUpdateDQN.load(tmp_path / "logs" / "soft_dqn" / "LunarLander-v2_1" / "LunarLander-v2.zip")
    assert model.dueling and model.prioritized_replay and model.n_steps == 3
    assert isinstance(model.policy, DuelingDQNPolicy) and model.num_timesteps == 2000
