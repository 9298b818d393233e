"""Rainbow-lite on the fast path: n-step returns, prioritized replay and dueling compute what the general path does.

The pairs below train from one state on the same minibatches (NumPy seeded alike before every ``train``): the
fast model through the compiled kernel (or its torch fallback), the other through ``_train_general`` and
autograd, sampling with the buffer's own ``sample``. Their memories come from LunarLander episodes cut at 80 steps,
so n-step transitions run into terminations, time limits and (in a full buffer) the newest row.
"""

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from fast_helpers import (
    assert_bit_identical_where_exact,
    assert_same_training_state,
    general_twin,
    seeded_runs,
    train_alike,
)
from gymnasium import spaces
from stable_baselines3.common.buffers import NStepReplayBuffer, ReplayBuffer
from stable_baselines3.common.torch_layers import FlattenExtractor

from lunar_sb3 import SoftUpdateDQN
from lunar_sb3.soft_dqn import compiled
from lunar_sb3.soft_dqn.policies import DuelingDQNPolicy, DuelingQNetwork
from lunar_sb3.soft_dqn.prioritized import PrioritizedNStepReplayBuffer, PrioritizedReplayBuffer

REPLAYS = {
    "n_step": (dict(n_steps=3), NStepReplayBuffer),
    "prioritized": (dict(prioritized_replay=True), PrioritizedReplayBuffer),
    "both": (dict(n_steps=3, prioritized_replay=True), PrioritizedNStepReplayBuffer),
}
ALL_REPLAYS = {"uniform": (dict(), ReplayBuffer), **REPLAYS}


def short_lander() -> gym.Env:
    """LunarLander with episodes cut at 80 steps: random play then ends in time limits and in crashes alike."""
    return gym.make("LunarLander-v2", max_episode_steps=80)


def filled_pair(replay: str, **kwargs) -> tuple[SoftUpdateDQN, SoftUpdateDQN]:
    """Two identical models (fast, general) whose replay memories (and priorities) are the same.

    3,000 transitions in a memory of 2,000: the buffer has wrapped, so n-step sequences also cross its end and run
    into row pos − 1, which ``NStepReplayBuffer`` treats as the end of the data.
    """
    options = {**ALL_REPLAYS[replay][0], "buffer_size": 2000, **kwargs}
    fast = SoftUpdateDQN("MlpPolicy", short_lander(), seed=0, learning_starts=3000, **options)
    fast.learn(3000)  # warm-up only: random actions, no gradient step
    plain = general_twin(fast, short_lander(), seed=0, **options)
    for model in (fast, plain):
        model._current_progress_remaining = 0.5  # prioritized replay's β = 0.4 + 0.6 · 0.5 = 0.7 in both
    buffer = fast.replay_buffer
    assert type(buffer) is ALL_REPLAYS[replay][1] and buffer.full and buffer.pos == 1000
    terminations = np.count_nonzero(buffer.dones * (1 - buffer.timeouts))
    assert terminations > 5 and np.count_nonzero(buffer.timeouts) > 5  # both kinds of episode end are in there
    assert fast.uses_fast_path and not plain.uses_fast_path
    return fast, plain


@pytest.mark.parametrize(
    "loss, double_q, max_grad_norm", [("mse", False, None), ("huber", True, 1.0)], ids=["mse", "huber-double-clip"]
)
@pytest.mark.parametrize("replay", list(REPLAYS))
def test_fast_step_equals_autograd_after_1000_steps(replay, loss, double_q, max_grad_norm):
    fast, plain = filled_pair(replay, loss=loss, double_q=double_q, max_grad_norm=max_grad_norm, tau=0.01)
    if compiled.enabled():  # the kernel (its torch fallback is tested below)
        assert fast._fast_trainer.gradient_step == "compiled"
    train_alike((fast, plain), 1000)
    assert_same_training_state(fast, plain)
    assert_bit_identical_where_exact(fast, plain)
    fast_loss, plain_loss = (model.logger.name_to_value["train/loss"] for model in (fast, plain))
    assert fast_loss == pytest.approx(plain_loss, rel=1e-5)
    if replay != "n_step":  # the priorities really moved apart: sampling was non-uniform for most of the run
        assert np.unique(fast.replay_buffer.sum_tree.leaves).size > 500


@pytest.mark.parametrize("replay", list(REPLAYS))
def test_several_gradient_steps_per_train(replay):
    """Several steps per ``train`` replay what the general path replays, step after step.

    Uniform n-step replay draws every minibatch first and trains on them in one kernel call; prioritized replay
    must draw each from the priorities the step before it set.
    """
    fast, plain = filled_pair(replay, tau=0.01)
    train_alike((fast, plain), 100, gradient_steps=3)
    assert fast._n_updates == plain._n_updates == 300
    assert_same_training_state(fast, plain)


@pytest.mark.parametrize("replay", list(REPLAYS))
def test_torch_fallback_equals_autograd(monkeypatch, replay):
    """LUNAR_SB3_NUMBA=0: the fast path's torch step, which samples with the buffer's own ``sample``."""
    monkeypatch.setenv(compiled.ENV_SWITCH, "0")
    fast, plain = filled_pair(replay, loss="huber", tau=0.01)
    assert fast._fast_trainer.compiled is None and fast._fast_trainer.gradient_step.startswith("torch (")
    train_alike((fast, plain), 200)
    assert_same_training_state(fast, plain)


@pytest.mark.parametrize(
    "replay, n_envs", [("n_step", 4), ("prioritized", 1), ("prioritized", 4), ("both", 1), ("both", 4)]
)
def test_seeded_runs_fill_identical_memories_and_priorities(replay, n_envs):
    """The lean rollout stores what ``buffer.add`` stores, new transitions included at the maximum priority."""

    fast, plain = seeded_runs(n_envs, **REPLAYS[replay][0])
    for name in ("num_timesteps", "finished_episodes", "_n_updates", "target_updates"):
        assert getattr(fast, name) == getattr(plain, name), name
    assert fast._n_updates > 900 // n_envs
    assert fast.exploration_rate == plain.exploration_rate < 0.5  # greedy actions were taken too
    for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
        np.testing.assert_array_equal(getattr(fast.replay_buffer, name), getattr(plain.replay_buffer, name), name)
    assert fast.replay_buffer.pos == plain.replay_buffer.pos
    assert_same_training_state(fast, plain)


@pytest.mark.parametrize("numba", ["1", "0"], ids=["compiled", "torch-step"])
def test_the_lean_rollout_gives_new_transitions_the_maximum_priority(monkeypatch, numba):
    """Without this, the rows written by the fast rollout would keep priority 0 and never be replayed."""
    monkeypatch.setenv(compiled.ENV_SWITCH, numba)
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", seed=0, prioritized_replay=True, learning_starts=10_000)
    model.learn(500)
    assert model.uses_fast_path
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


@pytest.mark.parametrize("dueling", [False, True], ids=["plain", "dueling"])
@pytest.mark.parametrize("replay", list(REPLAYS))
def test_rainbow_options_use_the_fast_path(replay, dueling):
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", dueling=dueling, double_q=True, **REPLAYS[replay][0])
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


# ---- dueling networks: the kernel's hand-derived backward through Q = V + A − mean A
@pytest.mark.parametrize("loss", ["mse", "huber"])
@pytest.mark.parametrize("double_q", [False, True], ids=["dqn", "double"])
def test_dueling_fast_step_equals_autograd_after_1000_steps(loss, double_q):
    fast, plain = filled_pair("uniform", dueling=True, loss=loss, double_q=double_q, tau=0.01)
    assert isinstance(fast.q_net, DuelingQNetwork) and isinstance(plain.q_net, DuelingQNetwork)
    if compiled.enabled():
        assert fast._fast_trainer.gradient_step == "compiled"
        assert fast._fast_trainer.compiled.dueling and list(fast._fast_trainer.compiled.dims) == [8, 64, 64, 5]
    train_alike((fast, plain), 1000)
    assert_same_training_state(fast, plain)
    assert_bit_identical_where_exact(fast, plain)
    # the heads really learnt apart: V is not just one more advantage
    with th.no_grad():
        value, advantages = fast.q_net.value_and_advantages(th.as_tensor(fast.replay_buffer.observations[:256, 0]))
    assert float(advantages.mean(dim=1).abs().max()) > 1e-3 and float(value.std()) > 1e-3


class ManyActions(gym.Env):
    """Random 8-dimensional observations, ``n`` actions, 20-step episodes: enough to train on."""

    def __init__(self, n: int) -> None:
        self.observation_space = spaces.Box(-1.0, 1.0, (8,), np.float32)
        self.action_space = spaces.Discrete(n)
        self.steps = 0

    def reset(self, *, seed=None, options=None):  # noqa: ANN001, ANN201
        super().reset(seed=seed)
        self.steps = 0
        return self.observation_space.sample(), {}

    def step(self, action):  # noqa: ANN001, ANN201
        self.steps += 1
        return self.observation_space.sample(), float(action == 0), False, self.steps >= 20, {}


@pytest.mark.skipif(not compiled.HAS_NUMBA, reason="numba is not installed")
@pytest.mark.parametrize("n_actions", range(2, 8))
def test_kernel_combines_dueling_heads_as_the_network_does(n_actions):
    """ATen sums a short row in 4 partial sums: the kernel's mean of A must follow it for every action count."""
    network = DuelingQNetwork(
        spaces.Box(-1.0, 1.0, (n_actions + 1,)),
        spaces.Discrete(n_actions),
        FlattenExtractor(spaces.Box(-1.0, 1.0, (n_actions + 1,))),
        n_actions + 1,
        net_arch=[],
    )
    with th.no_grad():  # q_net is then one Linear layer; made the identity, its outputs (the heads) are its inputs
        network.q_net[0].weight.copy_(th.eye(n_actions + 1))
        network.q_net[0].bias.zero_()
        heads = th.from_numpy(np.random.default_rng(n_actions).standard_normal((500, n_actions + 1)).astype(np.float32))
        assert th.equal(network.q_net(heads), heads)
        expected = network(heads).numpy()
    q = np.empty(500 * n_actions, np.float32)
    compiled._dueling_q(heads.numpy().ravel(), 500, n_actions, q)
    np.testing.assert_array_equal(q.reshape(500, n_actions), expected)
    assert compiled.dueling_mean_is_torchs(n_actions)


def test_a_dueling_mean_the_kernel_cannot_sum_alike_uses_the_torch_step():
    """9 actions: torch vectorises the row's sum; unless the check finds the kernel's order equal, torch's step runs."""
    model = SoftUpdateDQN("MlpPolicy", ManyActions(9), dueling=True, learning_starts=100, seed=0).learn(300)
    assert model.uses_fast_path and model._n_updates > 0
    if compiled.HAS_NUMBA and not compiled.dueling_mean_is_torchs(9):
        assert model._fast_trainer.gradient_step.startswith("torch (a dueling mean over 9 actions")


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


def test_rainbow_lite_fast_step_equals_autograd_after_1000_steps():
    """All of it at once: dueling, Double DQN, prioritized n-step replay, Huber, clipping."""
    fast, plain = filled_pair("both", dueling=True, double_q=True, loss="huber", max_grad_norm=10.0, tau=0.01)
    train_alike((fast, plain), 1000)
    assert_same_training_state(fast, plain)
    assert_bit_identical_where_exact(fast, plain)


@pytest.mark.parametrize("replay", ["uniform", "both"])
def test_dueling_torch_fallback_equals_autograd(monkeypatch, replay):
    monkeypatch.setenv(compiled.ENV_SWITCH, "0")
    fast, plain = filled_pair(replay, dueling=True, double_q=True, tau=0.01)
    assert fast._fast_trainer.compiled is None
    train_alike((fast, plain), 200)
    assert_same_training_state(fast, plain)


def test_dueling_greedy_actions_match_torch():
    model, _ = filled_pair("uniform", dueling=True)
    train_alike((model,), 200)
    observations = np.random.default_rng(1).standard_normal((2000, 8)).astype(np.float32)
    with th.no_grad():
        expected = model.q_net(th.from_numpy(observations)).argmax(dim=1).numpy()
    assert np.unique(expected).size == 4  # all four actions are someone's best: the comparison can tell them apart
    trainer = model._fast_trainer
    np.testing.assert_array_equal(trainer.greedy_actions(observations), expected)
    np.testing.assert_array_equal(trainer.greedy_actions(observations[:1]), expected[:1])
    np.testing.assert_array_equal(trainer.q_net.greedy_actions(observations), expected)  # the NumPy fallback


@pytest.mark.parametrize("replay", ["uniform", "both"])
def test_dueling_seeded_runs_agree_on_both_paths(replay):
    fast, plain = seeded_runs(1, dueling=True, **ALL_REPLAYS[replay][0])
    assert fast.uses_fast_path and not plain.uses_fast_path
    assert fast.exploration_rate == plain.exploration_rate < 0.5  # greedy actions were taken too
    for name in ("observations", "actions", "rewards", "dones"):
        np.testing.assert_array_equal(getattr(fast.replay_buffer, name), getattr(plain.replay_buffer, name), name)
    assert_same_training_state(fast, plain)


def test_a_buffer_subclass_is_not_taken_for_its_base():
    """The allow-list is by exact type: a subclass may sample otherwise (here: plain γ instead of n-step)."""

    class OneStepNStepBuffer(NStepReplayBuffer):
        def _get_samples(self, batch_inds, env=None):  # noqa: ANN001, ANN202
            return ReplayBuffer._get_samples(self, batch_inds, env)

    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", replay_buffer_class=OneStepNStepBuffer)
    assert not model.uses_fast_path and "OneStepNStepBuffer" in model.fast_path_status


# ---- the kernel's gather against SB3's own, bit for bit
@pytest.mark.skipif(not compiled.HAS_NUMBA, reason="numba is not installed")
@pytest.mark.parametrize("full", [False, True], ids=["filling", "full"])
@pytest.mark.parametrize("n_step", [0, 1, 3, 10, 150])
def test_gather_is_sb3s_get_samples(n_step, full):
    """n_step = 0 is ``ReplayBuffer._get_samples``, n ≥ 1 ``NStepReplayBuffer._get_samples`` with n steps.

    10 and 150 steps take NumPy's other summation orders (8 accumulators; halves) for the n-step returns.
    """
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
    np.random.seed(0)
    expected = buffer._get_samples(rows)
    timeouts_before = buffer.timeouts.copy()

    obs, next_obs = np.empty(batch * 5, np.float32), np.empty(batch * 5, np.float32)
    taken = np.empty(batch, np.int64)
    rewards, dones, discounts = (np.empty(batch, np.float32) for _ in range(3))
    tables = (gamma ** np.arange(n_step, dtype=np.float32), gamma ** np.arange(n_step + 1, dtype=np.float32))
    compiled.gather_minibatch(
        *(buffer.observations, buffer.actions, buffer.next_observations),
        *(buffer.rewards, buffer.dones, buffer.timeouts, rows, envs),
        *(n_step, (buffer.pos - 1) % size, *tables, 0.99),
        *(obs, next_obs, taken, rewards, dones, discounts, np.empty(max(n_step, 1), np.float32)),
    )
    np.testing.assert_array_equal(buffer.timeouts, timeouts_before)  # SB3's temporary mark was reverted
    np.testing.assert_array_equal(obs.reshape(batch, 5), expected.observations.numpy())
    np.testing.assert_array_equal(taken, expected.actions.numpy()[:, 0])
    np.testing.assert_array_equal(next_obs.reshape(batch, 5), expected.next_observations.numpy())
    np.testing.assert_array_equal(rewards, expected.rewards.numpy()[:, 0])
    np.testing.assert_array_equal(dones, expected.dones.numpy()[:, 0])
    if n_step == 0:
        assert expected.discounts is None and np.all(discounts == np.float32(0.99))
    else:
        np.testing.assert_array_equal(discounts, expected.discounts.numpy()[:, 0])
        assert n_step == 1 or len(np.unique(discounts)) > 1  # some transitions were cut short by an episode end
