"""Proportional prioritized replay: the sum tree's sums, the sampling law, the IS weights, and SB3 compatibility."""

import math

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from scipy import stats
from stable_baselines3 import DQN
from stable_baselines3.common.buffers import NStepReplayBuffer, ReplayBuffer
from stable_baselines3.common.save_util import load_from_pkl, save_to_pkl

from lunar_sb3.benchmark import speed
from lunar_sb3.soft_dqn import prioritized
from lunar_sb3.soft_dqn.prioritized import (
    PrioritizedNStepReplayBuffer,
    PrioritizedReplayBuffer,
    PrioritizedReplayBufferSamples,
    SumTree,
)

OBS_SPACE = spaces.Box(-np.inf, np.inf, shape=(8,), dtype=np.float32)
ACTION_SPACE = spaces.Discrete(4)

# The sum tree's one set of kernels, compiled and as plain Python (its fallback without Numba)
BACKENDS = [
    pytest.param(False, id="python"),
    pytest.param(True, id="numba", marks=pytest.mark.skipif(not prioritized.HAS_NUMBA, reason="no numba")),
]


@pytest.fixture(params=BACKENDS)
def use_numba(request: pytest.FixtureRequest) -> bool:
    return request.param


def make_buffer(
    buffer_size: int, use_numba: bool, n_envs: int = 1, cls: type = PrioritizedReplayBuffer, **kwargs
) -> PrioritizedReplayBuffer:
    buffer = cls(buffer_size, OBS_SPACE, ACTION_SPACE, device="cpu", n_envs=n_envs, **kwargs)
    buffer.use_numba = use_numba
    return buffer


def add_row(buffer: PrioritizedReplayBuffer, ids: np.ndarray, done=None, truncated=None) -> None:
    """One row of n_envs transitions whose observation, reward and action encode ``ids`` (e.g. the leaf)."""
    n = buffer.n_envs
    ids = np.asarray(ids, dtype=np.float32)
    done = np.zeros(n, dtype=np.float32) if done is None else np.asarray(done, dtype=np.float32)
    truncated = np.zeros(n, dtype=bool) if truncated is None else np.asarray(truncated, dtype=bool)
    obs = np.repeat(ids[:, None], 8, axis=1)
    infos = [{"TimeLimit.truncated": bool(t)} for t in truncated]
    buffer.add(obs, obs + 1000.0, ids.astype(np.int64) % 4, ids, done, infos)


def fill(buffer: PrioritizedReplayBuffer, rows: int) -> None:
    for _ in range(rows):
        row = buffer.pos
        add_row(buffer, row * buffer.n_envs + np.arange(buffer.n_envs))


def assert_tree_consistent(tree: SumTree) -> None:
    """Every parent is exactly the float sum of its children, padding leaves are 0, prefix sums match cumsum."""
    t = tree.tree
    np.testing.assert_array_equal(t[1 : tree.capacity], t[2 : 2 * tree.capacity : 2] + t[3 : 2 * tree.capacity : 2])
    assert not t[tree.capacity + tree.n_leaves :].any()
    leaves = tree.leaves
    assert tree.total == pytest.approx(math.fsum(leaves), rel=1e-12)
    exclusive_cumsum = np.concatenate(([0.0], np.cumsum(leaves)[:-1]))
    np.testing.assert_allclose(tree.prefix_sum(np.arange(tree.n_leaves)), exclusive_cumsum, rtol=1e-9, atol=0)


# --------------------------------------------------------------------------------------------------------------
# Sum tree
# --------------------------------------------------------------------------------------------------------------
def test_sum_tree_sums_exact_after_many_updates(use_numba: bool) -> None:
    rng = np.random.default_rng(0)
    tree = SumTree(1000)  # not a power of two: padding leaves must stay empty
    for _ in range(300):
        leaves = rng.integers(0, 1000, size=64)  # with repeats
        tree.update(leaves, 10.0 ** rng.uniform(-6, 3, size=64), use_numba=use_numba)
    assert_tree_consistent(tree)


def test_sum_tree_find_lands_in_the_leaf_interval(use_numba: bool) -> None:
    rng = np.random.default_rng(1)
    tree = SumTree(777)
    tree.update(np.arange(777), rng.uniform(0.0, 2.0, size=777) * (rng.random(777) > 0.2), use_numba=use_numba)
    values = rng.uniform(0.0, tree.total, size=5000)
    leaves = tree.find(values, use_numba=use_numba)
    prefix = tree.prefix_sum(leaves)
    assert (tree.leaves[leaves] > 0).all()  # zero-priority leaves are never found
    assert (prefix <= values * (1 + 1e-12)).all()
    assert (values < (prefix + tree.leaves[leaves]) * (1 + 1e-12)).all()
    # The end of the range (rounding can put a value there) still lands on a leaf with mass.
    last = tree.find(np.array([tree.total, np.nextafter(tree.total, 0.0)]), use_numba=use_numba)
    assert (tree.leaves[last] > 0).all()
    small = SumTree(4)
    small.update(np.arange(4), np.array([1.0, 2.0, 0.0, 0.0]), use_numba=use_numba)  # half filled
    np.testing.assert_array_equal(
        small.find(np.array([0.0, 0.999, 1.0, 2.999, 3.0]), use_numba=use_numba), [0, 0, 1, 1, 1]
    )


@pytest.mark.skipif(not prioritized.HAS_NUMBA, reason="no numba")
def test_compiled_and_python_kernels_identical() -> None:
    rng = np.random.default_rng(2)
    trees = {backend: SumTree(100_003) for backend in (False, True)}
    for _ in range(50):
        leaves = rng.integers(0, 100_003, size=64)
        priorities = rng.random(64) ** 3
        for backend, tree in trees.items():
            tree.update(leaves, priorities, use_numba=backend)
        np.testing.assert_array_equal(trees[False].tree, trees[True].tree)
        uniforms = rng.random(64)
        numpy_leaves, numpy_priorities = trees[False].sample(uniforms, use_numba=False)
        numba_leaves, numba_priorities = trees[True].sample(uniforms, use_numba=True)
        np.testing.assert_array_equal(numpy_leaves, numba_leaves)
        np.testing.assert_array_equal(numpy_priorities, numba_priorities)
        values = rng.uniform(0, trees[False].total, size=64)
        np.testing.assert_array_equal(trees[False].find(values, False), trees[True].find(values, True))

    # The same through the buffer: same seed, same minibatches, weights and priorities.
    buffers = {backend: make_buffer(300, backend) for backend in (False, True)}
    results = {}
    for backend, buffer in buffers.items():
        np.random.seed(3)
        fill(buffer, 200)
        history = []
        for _ in range(30):
            samples = buffer.sample(32)
            buffer.update_priorities(samples.indices, np.random.standard_normal(32))
            history.append((samples.indices, samples.weights.numpy()))
        results[backend] = history
    for (numpy_indices, numpy_weights), (numba_indices, numba_weights) in zip(*results.values(), strict=True):
        np.testing.assert_array_equal(numpy_indices, numba_indices)
        np.testing.assert_array_equal(numpy_weights, numba_weights)
    np.testing.assert_array_equal(buffers[False].sum_tree.tree, buffers[True].sum_tree.tree)


def test_bad_leaf_index_raises(use_numba: bool) -> None:
    buffer = make_buffer(10, use_numba)
    fill(buffer, 5)
    with pytest.raises(IndexError):
        buffer.update_priorities(np.array([10]), np.array([1.0]))
    with pytest.raises(IndexError):
        buffer.update_priorities(np.array([-1]), np.array([1.0]))
    with pytest.raises(ValueError, match="finite"):
        buffer.update_priorities(np.array([0]), np.array([np.nan]))
    with pytest.raises(ValueError, match="indices"):
        buffer.update_priorities(np.array([0, 1]), np.array([1.0]))


# --------------------------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"alpha": -0.1}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"beta": -0.01}, "beta"),
        ({"beta": 1.5}, "beta"),
        ({"priority_epsilon": 0.0}, "priority_epsilon"),
        ({"priority_epsilon": -1e-3}, "priority_epsilon"),
    ],
)
def test_bad_parameters_raise(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        make_buffer(10, False, **kwargs)


def test_beta_is_settable_and_checked() -> None:
    buffer = make_buffer(10, False)
    buffer.beta = 1.0
    assert buffer.beta == 1.0
    buffer.beta = 1.003  # an annealing schedule overshooting the end of training: full correction
    assert buffer.beta == 1.0
    with pytest.raises(ValueError, match="beta"):
        buffer.beta = -0.01
    with pytest.raises(ValueError, match="beta"):
        buffer.beta = float("nan")


def test_unsupported_options() -> None:
    with pytest.raises(NotImplementedError):
        make_buffer(10, False, optimize_memory_usage=True, handle_timeout_termination=False)
    with pytest.raises(TypeError):
        make_buffer(10, False, n_steps=3)  # the n-step variant is its own class


def test_empty_buffer_cannot_be_sampled() -> None:
    with pytest.raises(ValueError, match="empty"):
        make_buffer(10, False).sample(4)


# --------------------------------------------------------------------------------------------------------------
# Sampling law, weights, priorities of new transitions
# --------------------------------------------------------------------------------------------------------------
def test_sampling_frequencies_follow_priorities(use_numba: bool) -> None:
    buffer = make_buffer(20, use_numba, alpha=0.7)
    fill(buffer, 20)
    td_errors = 0.05 * np.arange(1, 21) ** 1.5
    buffer.update_priorities(np.arange(20), td_errors)
    np.random.seed(4)
    counts = np.zeros(20)
    batches, batch_size = 1500, 64
    for _ in range(batches):
        samples = buffer.sample(batch_size)
        np.testing.assert_array_equal(samples.observations[:, 0].numpy(), samples.indices)
        counts += np.bincount(samples.indices, minlength=20)
    probabilities = (np.abs(td_errors) + buffer.priority_epsilon) ** 0.7
    probabilities /= probabilities.sum()
    assert stats.chisquare(counts, probabilities * batches * batch_size).pvalue > 0.001
    # And far from uniform, so the test can tell the two apart.
    assert stats.chisquare(counts, np.full(20, batches * batch_size / 20)).pvalue < 1e-6


def test_importance_sampling_weights_by_hand(use_numba: bool) -> None:
    buffer = make_buffer(4, use_numba, alpha=1.0, beta=0.4, priority_epsilon=1e-6)
    fill(buffer, 4)
    buffer.update_priorities(np.arange(4), np.array([1.0, 2.0, 3.0, 4.0]) - 1e-6)  # priorities ≈ 1, 2, 3, 4
    # Ten strata of width 1 over prefix sums [0, 1, 3, 6, 10): the leaves are fixed whatever the uniforms.
    samples = buffer.sample(10)
    np.testing.assert_array_equal(samples.indices, [0, 1, 1, 2, 2, 2, 3, 3, 3, 3])
    assert samples.weights.shape == (10, 1) and samples.weights.dtype == th.float32
    # w_i = (N·P(i))^(-β) / max_j w_j with N = 4, P(i) = p_i / 10; the max is for p = 1.
    n, p = 4, np.array([1.0, 2.0, 3.0, 4.0])
    raw = (n * p / p.sum()) ** -0.4
    expected = (raw / raw.max())[samples.indices]
    np.testing.assert_allclose(samples.weights.numpy()[:, 0], expected, rtol=1e-5)
    np.testing.assert_allclose(expected[[0, 1, 3, 6]], [1.0, 0.757858283, 0.644394015, 0.574349177], rtol=1e-8)
    buffer.beta = 1.0
    np.testing.assert_allclose(buffer.sample(10).weights.numpy()[:, 0], 1 / p[samples.indices], rtol=1e-5)


def test_new_transitions_get_max_priority(use_numba: bool) -> None:
    buffer = make_buffer(10, use_numba, alpha=0.6)
    fill(buffer, 3)
    np.testing.assert_array_equal(buffer.sum_tree.leaves[:3], 1.0)  # 1.0 before any update
    buffer.update_priorities(np.array([0, 1]), np.array([0.5, -3.0]))
    assert buffer.max_priority == 3.0 + buffer.priority_epsilon
    buffer.update_priorities(np.array([1]), np.array([0.1]))  # a smaller error does not lower the maximum
    assert buffer.max_priority == 3.0 + buffer.priority_epsilon
    fill(buffer, 1)
    assert buffer.sum_tree.leaves[3] == pytest.approx((3.0 + 1e-6) ** 0.6, rel=1e-15)
    assert buffer.sum_tree.leaves[1] == pytest.approx((0.1 + 1e-6) ** 0.6, rel=1e-15)
    assert not buffer.sum_tree.leaves[4:].any()  # unfilled slots cannot be sampled
    assert_tree_consistent(buffer.sum_tree)


def test_wrap_around_replaces_old_leaves(use_numba: bool) -> None:
    buffer = make_buffer(8, use_numba, alpha=1.0)
    for number in range(13):
        leaf = buffer.pos
        add_row(buffer, [number])
        buffer.update_priorities(np.array([leaf]), np.array([float(number)]))
    assert buffer.full and buffer.pos == 5
    latest = np.array([8, 9, 10, 11, 12, 5, 6, 7])  # the transition now in each slot
    np.testing.assert_allclose(buffer.sum_tree.leaves, latest + 1e-6, rtol=1e-15)
    assert buffer.sum_tree.total == pytest.approx(latest.sum() + 8e-6, rel=1e-12)
    assert_tree_consistent(buffer.sum_tree)
    np.random.seed(5)
    samples = buffer.sample(64)
    np.testing.assert_array_equal(samples.observations[:, 0].numpy(), latest[samples.indices])
    add_row(buffer, [13])  # overwrites slot 5 at the maximum priority, 12 + ε
    assert buffer.sum_tree.leaves[5] == 12.0 + 1e-6


def test_sampling_is_reproducible_with_numpy_seed(use_numba: bool) -> None:
    buffer = make_buffer(100, use_numba)
    fill(buffer, 60)
    buffer.update_priorities(np.arange(60), np.linspace(0.1, 5, 60))
    np.random.seed(6)
    first = buffer.sample(16).indices
    np.random.seed(6)
    np.testing.assert_array_equal(buffer.sample(16).indices, first)


# --------------------------------------------------------------------------------------------------------------
# Several envs, timeouts, saving
# --------------------------------------------------------------------------------------------------------------
def test_several_envs_leaf_mapping(use_numba: bool) -> None:
    buffer = make_buffer(40, use_numba, n_envs=4)  # 10 rows of 4
    assert buffer.sum_tree.n_leaves == 40
    fill(buffer, 6)
    np.testing.assert_array_equal(buffer.observations[2, 3, 0], 2 * 4 + 3)  # slot (pos 2, env 3) is leaf 11
    rng = np.random.default_rng(7)
    buffer.update_priorities(np.arange(24), rng.uniform(0.1, 3.0, size=24))
    np.random.seed(7)
    seen = set()
    for _ in range(20):
        samples = buffer.sample(32)
        leaves = samples.indices
        assert (leaves < 24).all()
        np.testing.assert_array_equal(samples.observations.numpy(), np.repeat(leaves[:, None], 8, axis=1))
        np.testing.assert_array_equal(samples.next_observations[:, 0].numpy(), leaves + 1000)
        np.testing.assert_array_equal(samples.rewards[:, 0].numpy(), leaves)
        np.testing.assert_array_equal(samples.actions[:, 0].numpy(), leaves % 4)
        seen.update(leaves.tolist())
    assert seen == set(range(24))


def test_timeouts_are_not_terminations(use_numba: bool) -> None:
    buffer = make_buffer(20, use_numba, n_envs=2)
    # Env 0 terminates on odd rows, env 1 is truncated (time limit) on odd rows.
    for row in range(8):
        odd = row % 2 == 1
        add_row(buffer, [2 * row, 2 * row + 1], done=[odd, odd], truncated=[False, odd])
    np.random.seed(8)
    samples = buffer.sample(64)
    leaves = samples.indices
    row, env = leaves // 2, leaves % 2
    expected = ((row % 2 == 1) & (env == 0)).astype(np.float32)
    np.testing.assert_array_equal(samples.dones[:, 0].numpy(), expected)
    assert ((row % 2 == 1) & (env == 1)).any() and expected.any()  # both kinds were sampled


@pytest.mark.parametrize("cls", [PrioritizedReplayBuffer, PrioritizedNStepReplayBuffer])
def test_save_and_load_keep_priorities(tmp_path, use_numba: bool, cls: type) -> None:
    buffer = make_buffer(80, use_numba, n_envs=2, cls=cls, alpha=0.5, beta=0.7)  # 40 rows of 2
    fill(buffer, 30)
    buffer.update_priorities(np.arange(0, 60, 3), np.linspace(0.5, 9.0, 20))
    path = tmp_path / "buffer.pkl"
    save_to_pkl(path, buffer)
    loaded = load_from_pkl(path)
    assert type(loaded) is cls
    np.testing.assert_array_equal(loaded.sum_tree.tree, buffer.sum_tree.tree)
    assert loaded.max_priority == buffer.max_priority == 9.0 + 1e-6
    assert (loaded.alpha, loaded.beta, loaded.priority_epsilon) == (0.5, 0.7, 1e-6)
    np.random.seed(9)
    expected = buffer.sample(16)
    np.random.seed(9)
    got = loaded.sample(16)
    np.testing.assert_array_equal(got.indices, expected.indices)
    np.testing.assert_array_equal(got.rewards.numpy(), expected.rewards.numpy())
    fill(loaded, 1)  # new transitions still get the loaded maximum
    assert loaded.sum_tree.leaves[60] == pytest.approx((9.0 + 1e-6) ** 0.5, rel=1e-15)


# --------------------------------------------------------------------------------------------------------------
# n-step
# --------------------------------------------------------------------------------------------------------------
def random_episodes(buffer: PrioritizedReplayBuffer, rows: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(rows):
        done = rng.random(buffer.n_envs) < 0.15
        truncated = done & (rng.random(buffer.n_envs) < 0.5)
        obs = rng.standard_normal((buffer.n_envs, 8)).astype(np.float32)
        infos = [{"TimeLimit.truncated": bool(t)} for t in truncated]
        buffer.add(obs, obs + 1, rng.integers(0, 4, buffer.n_envs), rng.standard_normal(buffer.n_envs), done, infos)


def copy_into(source: PrioritizedReplayBuffer, target: NStepReplayBuffer) -> None:
    for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
        getattr(target, name)[:] = getattr(source, name)
    target.pos, target.full = source.pos, source.full


@pytest.mark.parametrize("rows", [30, 70])  # not full, and full after wrapping around
def test_n_step_samples_are_sb3s(use_numba: bool, rows: int) -> None:
    buffer = make_buffer(50, use_numba, cls=PrioritizedNStepReplayBuffer, n_steps=3, gamma=0.9)
    assert isinstance(buffer, NStepReplayBuffer) and (buffer.n_steps, buffer.gamma) == (3, 0.9)
    random_episodes(buffer, rows, seed=10)
    filled = min(rows, 50)
    buffer.update_priorities(np.arange(filled), np.random.default_rng(11).uniform(0, 4, filled))
    reference = NStepReplayBuffer(50, OBS_SPACE, ACTION_SPACE, device="cpu", n_steps=3, gamma=0.9)
    copy_into(buffer, reference)
    np.random.seed(12)
    samples = buffer.sample(64)
    expected = reference._get_samples(samples.indices)
    for field in ("observations", "actions", "next_observations", "dones", "rewards", "discounts"):
        np.testing.assert_array_equal(getattr(samples, field).numpy(), getattr(expected, field).numpy(), err_msg=field)
    assert (samples.discounts.numpy() > 0.9**3 + 1e-6).any()  # some windows were cut short by an episode end
    # Priorities act on the n-step buffer like on the one-step one.
    buffer.update_priorities(np.arange(filled), np.where(np.arange(filled) == 7, 100.0, 0.0))
    counts = np.bincount(buffer.sample(64).indices, minlength=filled)
    assert counts[7] > 55


@pytest.mark.parametrize(
    ("cls", "reference_cls", "kwargs"),
    [
        (PrioritizedReplayBuffer, ReplayBuffer, {}),
        (PrioritizedNStepReplayBuffer, NStepReplayBuffer, {"n_steps": 4, "gamma": 0.95}),
    ],
)
def test_several_envs_gather_matches_sb3(cls: type, reference_cls: type, kwargs: dict) -> None:
    buffer = make_buffer(60, False, n_envs=3, cls=cls, **kwargs)
    random_episodes(buffer, 33, seed=13)  # 20 rows of 3: full and wrapped
    reference = reference_cls(60, OBS_SPACE, ACTION_SPACE, device="cpu", n_envs=3, **kwargs)
    copy_into(buffer, reference)
    rows = np.random.default_rng(14).integers(0, 20, size=64)
    # SB3 draws each sample's env with np.random.randint: seed it to know which it will draw.
    np.random.seed(15)
    env_indices = np.random.randint(0, 3, size=rows.shape)
    np.random.seed(15)
    expected = reference._get_samples(rows)
    got = buffer._get_samples_at(rows, env_indices)
    for field in ("observations", "actions", "next_observations", "dones", "rewards", "discounts"):
        if getattr(expected, field) is None:
            assert getattr(got, field) is None
        else:
            np.testing.assert_array_equal(getattr(got, field).numpy(), getattr(expected, field).numpy(), err_msg=field)


# --------------------------------------------------------------------------------------------------------------
# With an SB3 algorithm
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [(PrioritizedReplayBuffer, {"alpha": 0.6}), (PrioritizedNStepReplayBuffer, {"n_steps": 3, "gamma": 0.99})],
)
def test_dqn_trains_and_round_trips_the_buffer(tmp_path, cls: type, kwargs: dict) -> None:
    model = DQN(
        "MlpPolicy",
        "CartPole-v1",
        buffer_size=500,
        learning_starts=50,
        batch_size=16,
        replay_buffer_class=cls,
        replay_buffer_kwargs=kwargs,
        policy_kwargs={"net_arch": [16]},
        seed=0,
        device="cpu",
    )
    model.learn(200)
    assert isinstance(model.replay_buffer, cls)
    samples = model.replay_buffer.sample(8)
    assert isinstance(samples, PrioritizedReplayBufferSamples)
    model.replay_buffer.update_priorities(samples.indices, th.arange(8.0))
    model.save_replay_buffer(tmp_path / "rb.pkl")
    tree = model.replay_buffer.sum_tree.tree.copy()
    model.load_replay_buffer(tmp_path / "rb.pkl")
    np.testing.assert_array_equal(model.replay_buffer.sum_tree.tree, tree)
    assert model.replay_buffer.max_priority == 7.0 + 1e-6


def test_benchmark_overhead_runs() -> None:
    result = speed.prioritized_overhead(buffer_size=1000, rounds=1, calls=5)
    assert {"uniform_us", "python_us", "python_overhead_us"} <= set(result)
