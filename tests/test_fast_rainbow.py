"""Rainbow-lite on the fast path: which configurations it takes, and the kernel's replay against SB3's.

How its numbers compare with autograd's is in test_compiled.py (one step, every configuration) and
test_fast_path.py (1,000 steps in lockstep, seeded training runs).
"""

import copy

import numpy as np
import pytest
from fast_helpers import assert_close, require_numba
from gymnasium import spaces
from stable_baselines3.common.buffers import NStepReplayBuffer, ReplayBuffer

from lunar_sb3 import SoftUpdateDQN
from lunar_sb3.soft_dqn import kernel
from lunar_sb3.soft_dqn.policies import DuelingDQNPolicy, DuelingQNetwork

REPLAYS = {
    "n_step": dict(n_steps=3),
    "prioritized": dict(prioritized_replay=True),
    "both": dict(n_steps=3, prioritized_replay=True),
}


@pytest.mark.parametrize("dueling", [False, True], ids=["plain", "dueling"])
@pytest.mark.parametrize("replay", list(REPLAYS))
def test_rainbow_options_use_the_fast_path(replay, dueling):
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", dueling=dueling, double_q=True, **REPLAYS[replay])
    assert model.uses_fast_path and model.fast_path_status == "fast path"


def test_a_dueling_policy_subclass_falls_back():
    """A subclass may combine V and A otherwise: only DuelingDQNPolicy itself is on the allow-list."""

    class MaxDuelingNetwork(DuelingQNetwork):
        def forward(self, obs):  # noqa: ANN001, ANN201
            value, advantages = self.value_and_advantages(obs)
            return value + advantages - advantages.max(dim=1, keepdim=True).values

    class MaxDuelingPolicy(DuelingDQNPolicy):
        def make_q_net(self) -> MaxDuelingNetwork:
            return MaxDuelingNetwork(**self._update_features_extractor(self.net_args, features_extractor=None))

    model = SoftUpdateDQN(MaxDuelingPolicy, "LunarLander-v2")
    assert model.dueling and not model.uses_fast_path and "MaxDuelingPolicy" in model.fast_path_status
    network_only = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", dueling=True)
    network_only.policy.q_net.__class__ = MaxDuelingNetwork
    network_only.learn(100)  # decided at every learn
    assert not network_only.uses_fast_path and "MaxDuelingNetwork" in network_only.fast_path_status


@pytest.mark.parametrize("swap", ["q_net", "q_net_target"])
def test_networks_other_than_the_policys_own_fall_back(swap):
    """A DQNPolicy holding a dueling network (or a target of another shape) is not what the kernel computes."""
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2")
    dueling = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", dueling=True)
    setattr(model.policy, swap, getattr(dueling.policy, swap))
    model.learn(100)
    assert not model.uses_fast_path and "DuelingQNetwork in a DQNPolicy" in model.fast_path_status


def test_a_target_network_shaped_otherwise_falls_back():
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2")
    model.policy.q_net_target = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", policy_kwargs=dict(net_arch=[32])).q_net
    model.learn(100)
    assert not model.uses_fast_path and "target network shaped unlike" in model.fast_path_status


def test_a_buffer_subclass_is_not_taken_for_its_base():
    """The allow-list is by exact type: a subclass may sample otherwise (here: plain γ instead of n-step)."""

    class OneStepNStepBuffer(NStepReplayBuffer):
        def _get_samples(self, batch_inds, env=None):  # noqa: ANN001, ANN202
            return ReplayBuffer._get_samples(self, batch_inds, env)

    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", replay_buffer_class=OneStepNStepBuffer)
    assert not model.uses_fast_path and "OneStepNStepBuffer" in model.fast_path_status


def test_the_lean_rollout_gives_new_transitions_the_maximum_priority():
    """Without this, the rows written by the fast rollout would keep priority 0 and never be replayed."""
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", seed=0, prioritized_replay=True, learning_starts=10_000)
    model.learn(500)
    assert model.uses_fast_path, model.fast_path_status
    buffer = model.replay_buffer
    leaves = buffer.sum_tree.leaves
    np.testing.assert_array_equal(leaves[:500], 1.0)  # max_priority 1 to the power α
    assert not leaves[500:].any()
    buffer.max_priority = 4.0
    model.learn(20, reset_num_timesteps=False)
    np.testing.assert_array_equal(leaves[500:520], 4.0**buffer.alpha)
    assert not leaves[520:].any()
    # every parent the float sum of its two children, as SumTree.update and SumTree.rebuild leave them
    rebuilt = copy.deepcopy(buffer.sum_tree)
    rebuilt.rebuild(leaves.copy())
    np.testing.assert_array_equal(buffer.sum_tree.tree, rebuilt.tree)


@pytest.mark.parametrize("full", [False, True], ids=["filling", "full"])
@pytest.mark.parametrize("n_step", [0, 1, 3, 10, 150])
def test_gather_is_sb3s_get_samples(n_step, full):
    """n_step = 0 is ``ReplayBuffer._get_samples``, n ≥ 1 ``NStepReplayBuffer._get_samples`` with n steps.

    Everything but the n-step return is a copy and must be equal; the return is a float32 sum (NumPy sums it
    pairwise for n >= 8, the kernel in order), within 1e-6 of its size.
    """
    require_numba()
    size, n_envs, batch, gamma = 400, 3, 256, 0.97
    observation_space = spaces.Box(-np.inf, np.inf, shape=(5,), dtype=np.float32)
    if n_step == 0:
        buffer = ReplayBuffer(size * n_envs, observation_space, spaces.Discrete(4), device="cpu", n_envs=n_envs)
    else:  # (SB3 divides the size among the envs)
        buffer = NStepReplayBuffer(
            size * n_envs, observation_space, spaces.Discrete(4), "cpu", n_envs, n_steps=n_step, gamma=gamma
        )
    assert buffer.buffer_size == size
    rng = np.random.default_rng(n_step)
    buffer.observations[:] = rng.standard_normal(buffer.observations.shape, dtype=np.float32)
    buffer.next_observations[:] = rng.standard_normal(buffer.next_observations.shape, dtype=np.float32)
    buffer.actions[:] = rng.integers(0, 4, size=buffer.actions.shape)
    buffer.rewards[:] = rng.standard_normal(buffer.rewards.shape) * 10.0 ** rng.integers(-3, 3, buffer.rewards.shape)
    buffer.dones[:] = rng.random(buffer.dones.shape) < (0.01 if n_step == 150 else 0.15)
    buffer.timeouts[:] = buffer.dones * (rng.random(buffer.dones.shape) < 0.5)  # a time limit is also a done
    buffer.full, buffer.pos = (True, 123) if full else (False, 300)
    rows = rng.integers(0, size if full else buffer.pos, size=batch)
    rows[:4] = [buffer.pos - 1, buffer.pos - 2, size - 1, 0]  # the newest rows, and across the buffer's end
    np.random.seed(0)
    envs = np.random.randint(0, n_envs, size=batch)  # what _get_samples draws below
    timeouts_before = buffer.timeouts.copy()  # SB3 marks the newest row as a timeout while it samples
    np.random.seed(0)
    expected = buffer._get_samples(rows)

    obs, next_obs = np.empty((batch, 5), np.float32), np.empty((batch, 5), np.float32)
    taken = np.empty(batch, np.int64)
    rewards, dones, discounts = np.empty(batch, np.float32), np.empty(batch, np.float32), np.empty(batch, np.float32)
    settings = kernel.Settings(
        *(0.99, 1e-3, 0.9, 0.999, 1e-8, 0.0, -1.0, False, False, False),
        n_step=n_step,
        last_valid=(buffer.pos - 1) % size,  # what FastTrainer passes: the newest row
        reward_discounts=gamma ** np.arange(n_step, dtype=np.float32),
        target_discounts=gamma ** np.arange(n_step + 1, dtype=np.float32),
    )
    replay = kernel.Replay(*(getattr(buffer, name) for name in kernel.Replay._fields))
    kernel.gather(replay, rows, envs, settings, (obs, taken, next_obs, rewards, dones, discounts))
    # the kernel only reads the memory (it handles the newest row itself), and SB3 put its temporary mark back
    np.testing.assert_array_equal(buffer.timeouts, timeouts_before)
    np.testing.assert_array_equal(obs, expected.observations.numpy())
    np.testing.assert_array_equal(taken, expected.actions.numpy()[:, 0])
    np.testing.assert_array_equal(next_obs, expected.next_observations.numpy())
    assert_close(rewards, expected.rewards.numpy()[:, 0], 1e-6, "n-step returns")
    np.testing.assert_array_equal(dones, expected.dones.numpy()[:, 0])
    if n_step == 0:
        assert expected.discounts is None and np.all(discounts == np.float32(0.99))
    else:
        np.testing.assert_array_equal(discounts, expected.discounts.numpy()[:, 0])
        assert n_step == 1 or len(np.unique(discounts)) > 1  # some transitions were cut short by an episode end
