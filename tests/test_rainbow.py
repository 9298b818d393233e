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
    with th.no_grad():
        trunk = net.trunk[0]
        trunk.weight.copy_(th.tensor([[1.0] + [0.0] * 7, [0.0, 1.0] + [0.0] * 6, [-1.0] + [0.0] * 7]))
        trunk.bias.copy_(th.tensor([0.0, 0.5, 0.0]))
        net.value_head.weight.copy_(th.tensor([[2.0, 0.0, 1.0]]))
        net.value_head.bias.fill_(10.0)
        net.advantage_head.weight.copy_(th.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 1.0]]))
        net.advantage_head.bias.copy_(th.tensor([0.0, 0.0, 0.0, -4.0]))
    obs = th.tensor([[2.0, -3.0, 0, 0, 0, 0, 0, 0]])
    # hidden = relu([2, -2.5, -2]) = [2, 0, 0]; V = 2·2 + 10 = 14; A = [2, 0, 0, 2 − 4] = [2, 0, 0, −2], mean 0
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
