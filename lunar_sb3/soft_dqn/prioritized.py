"""Proportional prioritized experience replay (Schaul et al., 2016) as Stable-Baselines3 replay buffers.

A transition i is replayed with probability P(i) = p_i^α / Σ_k p_k^α, where its priority p_i = |δ_i| + ε is
its last absolute TD error; new transitions get the largest priority seen so far, so that each is replayed
at least once. The bias this introduces is corrected by importance-sampling weights
w_i = (N·P(i))^(−β) / max_j w_j, with β annealed towards 1 by the algorithm (it sets ``buffer.beta``).

Why subclasses of SB3's buffers: ``save_replay_buffer`` / ``load_replay_buffer`` pickle the buffer object,
so the sum tree and the maximum priority travel with the transitions; and the minibatch itself is gathered by
SB3's own ``_get_samples``, so timeouts (``dones * (1 - timeouts)``) and n-step returns and discounts are
exactly SB3's.

The sum tree holds p^α for the ``buffer_size * n_envs`` slots, slot (pos, env) at leaf ``pos * n_envs + env``.
Every parent is recomputed as the float sum of its two children (never updated by adding a difference), so
no rounding error accumulates over millions of updates. Sampling descends the tree for the whole minibatch
at once, one tree level per step: in compiled code when Numba is importable (``LUNAR_SB3_NUMBA=0`` switches
it off), otherwise in NumPy; both give identical results.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import NStepReplayBuffer, ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize

ENV_SWITCH = "LUNAR_SB3_NUMBA"

if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
    HAS_NUMBA = False
else:
    try:
        from numba import njit

        HAS_NUMBA = True
    except ImportError:  # the NumPy kernels below are used instead
        HAS_NUMBA = False


def numba_enabled() -> bool:
    """Numba is importable and not switched off with ``LUNAR_SB3_NUMBA=0``."""
    return HAS_NUMBA and os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


class PrioritizedReplayBufferSamples(NamedTuple):
    """SB3's ``ReplayBufferSamples`` fields plus what prioritized replay needs for the update.

    :param weights: importance-sampling weights, shape (batch, 1), float32, on the buffer's device;
        multiply the per-sample loss by them before averaging
    :param indices: the sampled leaves, to pass back to ``update_priorities`` with the new TD errors
    """

    observations: th.Tensor
    actions: th.Tensor
    next_observations: th.Tensor
    dones: th.Tensor
    rewards: th.Tensor
    discounts: th.Tensor | None
    weights: th.Tensor
    indices: np.ndarray


# ---------------------------------------------------------------------------------------------------------------
# Sum-tree kernels. ``tree`` has 2 * capacity nodes (capacity a power of two): the root is node 1, the children
# of node k are 2k and 2k + 1, leaf j is node capacity + j. Both versions go level by level over the whole
# batch (not sample by sample), so the batch's memory accesses at one level are independent of each other and
# overlap; and both do the same float operations in the same order, so they give identical results.
# ---------------------------------------------------------------------------------------------------------------
def _descend_numpy(tree: np.ndarray, values: np.ndarray, depth: int) -> np.ndarray:
    """The node where each prefix-sum value falls; never a zero-priority leaf while the total is positive."""
    values = values.copy()
    nodes = np.ones(values.shape[0], dtype=np.int64)
    go_right = np.empty(values.shape[0], dtype=bool)
    right_has_mass = np.empty(values.shape[0], dtype=bool)
    for _ in range(depth):
        nodes <<= 1
        left = tree.take(nodes)
        np.greater_equal(values, left, out=go_right)
        # Going right only into a subtree with mass keeps rounding (v a hair above the left sum at the very
        # end of the range) from ever landing on an empty, unfilled slot.
        np.greater(tree.take(nodes + 1), 0.0, out=right_has_mass)
        go_right &= right_has_mass
        left *= go_right
        values -= left
        nodes += go_right
    return nodes


def _update_numpy(tree: np.ndarray, nodes: np.ndarray, priorities: np.ndarray, depth: int) -> None:
    """Write leaf priorities, then recompute their ancestors from their children, one level at a time.

    A parent shared by several updated leaves is recomputed several times from the same children, which
    gives the same sum; deduplicating (np.unique) costs more than it saves at a minibatch's size.
    """
    tree[nodes] = priorities
    parents = nodes >> 1
    for _ in range(depth):
        left = parents << 1
        tree[parents] = tree[left] + tree[left + 1]
        parents >>= 1


def _stratified_values(total: float, uniforms: np.ndarray) -> np.ndarray:
    """One value in each of len(uniforms) equal slices of [0, total): (i + u_i) · total / n."""
    return (np.arange(uniforms.shape[0]) + uniforms) * (total / uniforms.shape[0])


if HAS_NUMBA:

    @njit(cache=True, nogil=True)
    def _descend_numba(tree: np.ndarray, values: np.ndarray, depth: int) -> np.ndarray:  # pragma: no cover
        values = values.copy()
        nodes = np.ones(values.shape[0], dtype=np.int64)
        for _ in range(depth):
            for i in range(values.shape[0]):
                left_node = 2 * nodes[i]
                left = tree[left_node]
                if values[i] >= left and tree[left_node + 1] > 0.0:
                    values[i] -= left
                    nodes[i] = left_node + 1
                else:  # the NumPy kernel subtracts 0·left here: the same value
                    nodes[i] = left_node
        return nodes

    @njit(cache=True, nogil=True)
    def _stratified_numba(
        tree: np.ndarray, uniforms: np.ndarray, depth: int, capacity: int
    ) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover
        n = uniforms.shape[0]
        segment = tree[1] / n
        values = np.empty(n, dtype=np.float64)
        for i in range(n):
            values[i] = (i + uniforms[i]) * segment
        nodes = _descend_numba(tree, values, depth)
        priorities = np.empty(n, dtype=np.float64)
        for i in range(n):
            priorities[i] = tree[nodes[i]]
            nodes[i] -= capacity
        return nodes, priorities

    @njit(cache=True, nogil=True)
    def _update_numba(
        tree: np.ndarray, nodes: np.ndarray, priorities: np.ndarray, depth: int
    ) -> None:  # pragma: no cover
        for i in range(nodes.shape[0]):
            tree[nodes[i]] = priorities[i]
        parents = nodes >> 1
        for _ in range(depth):
            for i in range(parents.shape[0]):
                parent = parents[i]
                tree[parent] = tree[2 * parent] + tree[2 * parent + 1]
                parents[i] = parent >> 1

    @njit(cache=True, nogil=True)
    def _in_range_numba(values: np.ndarray, stop: int) -> bool:  # pragma: no cover
        for i in range(values.shape[0]):
            if values[i] < 0 or values[i] >= stop:
                return False
        return True


def _in_range_numpy(values: np.ndarray, stop: int) -> bool:
    return bool(values.min() >= 0 and values.max() < stop)


class SumTree:
    """Binary tree whose every internal node is the sum of its two children: O(log n) update and prefix search.

    Plain NumPy arrays, so that it pickles with the buffer.
    """

    def __init__(self, n_leaves: int) -> None:
        if n_leaves < 1:
            raise ValueError(f"n_leaves must be >= 1, got {n_leaves}")
        self.n_leaves = n_leaves
        self.depth = int(n_leaves - 1).bit_length()
        self.capacity = 1 << self.depth
        self.tree = np.zeros(2 * self.capacity, dtype=np.float64)

    @property
    def total(self) -> float:
        """Sum of all leaves (the root)."""
        return float(self.tree[1])

    @property
    def leaves(self) -> np.ndarray:
        """A view of the leaf values, in leaf order."""
        return self.tree[self.capacity : self.capacity + self.n_leaves]

    def update(self, leaves: np.ndarray, priorities: np.ndarray, use_numba: bool = False) -> None:
        """Set ``leaves`` to ``priorities`` (for a repeated leaf the last one wins) and refresh their ancestors."""
        use_numba = use_numba and HAS_NUMBA
        leaves = np.asarray(leaves, dtype=np.int64)
        if leaves.shape[0] == 0:
            return
        # A leaf past n_leaves would be a slot no sample can reach (or memory past the tree, in compiled code).
        if not (_in_range_numba if use_numba else _in_range_numpy)(leaves, self.n_leaves):
            raise IndexError(f"leaf indices must be in [0, {self.n_leaves})")
        nodes = leaves + self.capacity
        priorities = np.asarray(priorities, dtype=np.float64)
        (_update_numba if use_numba else _update_numpy)(self.tree, nodes, priorities, self.depth)

    def find(self, values: np.ndarray, use_numba: bool = False) -> np.ndarray:
        """The leaf j with prefix(j) <= v < prefix(j) + leaf(j) for each value v in [0, total)."""
        values = np.asarray(values, dtype=np.float64)
        use_numba = use_numba and HAS_NUMBA
        return (_descend_numba if use_numba else _descend_numpy)(self.tree, values, self.depth) - self.capacity

    def sample(self, uniforms: np.ndarray, use_numba: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Stratified draws: leaf i falls in the i-th of n equal slices of [0, total) at fraction ``uniforms[i]``.

        :return: the leaves and their values (priorities)
        """
        uniforms = np.asarray(uniforms, dtype=np.float64)
        if use_numba and HAS_NUMBA:
            return _stratified_numba(self.tree, uniforms, self.depth, self.capacity)
        nodes = _descend_numpy(self.tree, _stratified_values(self.total, uniforms), self.depth)
        return nodes - self.capacity, self.tree[nodes]

    def rebuild(self, leaf_values: np.ndarray) -> None:
        """Set all leaves at once and recompute every internal node (bulk loading, e.g. for benchmarks)."""
        self.tree[:] = 0.0
        self.tree[self.capacity : self.capacity + self.n_leaves] = leaf_values
        for level in range(self.depth - 1, -1, -1):
            start, stop = 1 << level, 2 << level
            self.tree[start:stop] = self.tree[2 * start : 2 * stop : 2] + self.tree[2 * start + 1 : 2 * stop : 2]

    def prefix_sum(self, leaves: np.ndarray) -> np.ndarray:
        """Sum of the leaves before each of ``leaves``, read from the tree (to check it against a cumsum)."""
        nodes = np.asarray(leaves, dtype=np.int64) + self.capacity
        sums = np.zeros(nodes.shape[0], dtype=np.float64)
        for _ in range(self.depth):
            is_right = (nodes & 1).astype(bool)
            sums += np.where(is_right, self.tree[nodes ^ 1], 0.0)
            nodes >>= 1
        return sums


class PrioritizedReplayBuffer(ReplayBuffer):
    """SB3 ``ReplayBuffer`` that samples transitions in proportion to their priority (proportional PER).

    :param alpha: how much prioritization is used (0: uniform, 1: fully proportional to |δ| + ε)
    :param beta: the current importance-sampling exponent (0: no correction, 1: full correction); the algorithm
        anneals it (e.g. 0.4 → 1.0) by setting ``buffer.beta`` before ``sample`` (values above 1 are clipped)
    :param priority_epsilon: added to |δ| so that no transition's probability becomes zero
    :param kwargs: passed on to the next base (``n_steps`` and ``gamma`` in the n-step variant)

    The other parameters are SB3's ``ReplayBuffer``'s; ``optimize_memory_usage`` is not supported (its
    one-row-ahead overwrite would leave a sampleable invalid slot).
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        *,
        alpha: float = 0.6,
        beta: float = 0.4,
        priority_epsilon: float = 1e-6,
        **kwargs: Any,
    ) -> None:
        if not alpha >= 0.0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        if not priority_epsilon > 0.0:
            raise ValueError(f"priority_epsilon must be > 0, got {priority_epsilon}")
        self._check_beta(beta)
        if optimize_memory_usage:
            raise NotImplementedError(f"{type(self).__name__} doesn't support optimize_memory_usage=True")
        super().__init__(
            buffer_size,
            observation_space,
            action_space,
            device=device,
            n_envs=n_envs,
            optimize_memory_usage=optimize_memory_usage,
            handle_timeout_termination=handle_timeout_termination,
            **kwargs,
        )
        self.alpha = float(alpha)
        self._beta = float(beta)
        self.priority_epsilon = float(priority_epsilon)
        self.sum_tree = SumTree(self.buffer_size * self.n_envs)
        # The largest |δ| + ε seen so far (before the exponent α): what new transitions get.
        self.max_priority = 1.0
        self.use_numba = numba_enabled()

    @staticmethod
    def _check_beta(beta: float) -> None:
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta}")

    @property
    def beta(self) -> float:
        """The importance-sampling exponent used by the next ``sample``."""
        return self._beta

    @beta.setter
    def beta(self, value: float) -> None:
        # Above 1 is clipped, not refused: an annealing schedule driven by SB3's progress overshoots 1 when the
        # last rollout runs past total_timesteps (train_freq > 1 or several envs), and 1 is full correction.
        self._check_beta(min(value, 1.0))
        self._beta = min(float(value), 1.0)

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Whether Numba is used is the loading machine's business, not the saving one's.
        self.__dict__.update(state)
        self.use_numba = numba_enabled()

    def reset(self) -> None:
        super().reset()
        self.sum_tree.tree[:] = 0.0
        self.max_priority = 1.0

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """Store one row of ``n_envs`` transitions, each at the maximum priority so it is replayed soon."""
        row = self.pos
        super().add(obs, next_obs, action, reward, done, infos)
        self.give_max_priority(row)

    def give_max_priority(self, row: int) -> None:
        """Set the ``n_envs`` slots of ``row`` to the largest priority seen so far (what every new row gets)."""
        leaves = np.arange(row * self.n_envs, (row + 1) * self.n_envs, dtype=np.int64)
        priorities = np.full(self.n_envs, self.max_priority**self.alpha)
        self.sum_tree.update(leaves, priorities, use_numba=self.use_numba)

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> PrioritizedReplayBufferSamples:  # type: ignore[override]
        """Stratified proportional sampling: one draw in each of ``batch_size`` equal slices of [0, total)."""
        if not self.sum_tree.tree[1] > 0.0:
            raise ValueError("Cannot sample from an empty PrioritizedReplayBuffer")
        leaves, priorities = self.sum_tree.sample(np.random.random(batch_size), use_numba=self.use_numba)
        # w_i = (N·P(i))^(−β) / max_j (N·P(j))^(−β) = (p_i / min_j p_j)^(−β): N and the total cancel.
        weights = (priorities / priorities.min()) ** (-self._beta)
        if self.n_envs == 1:
            samples = self._get_samples(leaves, env=env)
        else:
            samples = self._get_samples_at(leaves // self.n_envs, leaves % self.n_envs, env=env)
        return PrioritizedReplayBufferSamples(
            *samples,
            weights=th.as_tensor(weights.astype(np.float32).reshape(-1, 1), device=self.device),
            indices=leaves,
        )

    def update_priorities(self, indices: np.ndarray, td_errors: np.ndarray | th.Tensor) -> None:
        """Set the priorities of the sampled ``indices`` (``samples.indices``) from their new TD errors δ."""
        if isinstance(td_errors, th.Tensor):
            td_errors = td_errors.detach().cpu().numpy()
        raw = np.abs(np.asarray(td_errors, dtype=np.float64).reshape(-1)) + self.priority_epsilon
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if raw.shape != indices.shape:
            raise ValueError(f"{indices.shape[0]} indices but {raw.shape[0]} TD errors")
        if raw.shape[0] == 0:
            return
        largest = raw.max()
        if not np.isfinite(largest):  # a NaN or inf would poison every sum above it for good
            raise ValueError("TD errors must be finite")
        self.sum_tree.update(indices, raw**self.alpha, use_numba=self.use_numba)
        self.max_priority = max(self.max_priority, float(largest))

    def _get_samples_at(
        self, batch_inds: np.ndarray, env_indices: np.ndarray, env: VecNormalize | None = None
    ) -> ReplayBufferSamples:
        """SB3's ``_get_samples`` for given (row, env) pairs.

        Why this detour: SB3 2.9's ``_get_samples(batch_inds, env)`` draws the env of each sample itself, so
        it is called on one-env views of the storage (no copies), where that draw can only give env 0:
        for SB3's one-step gather, the row-major flattening (leaf order) in a single call; for gathers that
        step through time (n-step), each env's column in turn, the parts then put back in order.
        """
        if type(self)._get_samples is ReplayBuffer._get_samples:
            flat = self._one_env_view(lambda array: array.reshape(-1, 1, *array.shape[2:]))
            return flat._get_samples(batch_inds * self.n_envs + env_indices, env=env)
        parts: list[ReplayBufferSamples] = []
        positions: list[np.ndarray] = []
        for env_index in np.unique(env_indices):
            selected = np.flatnonzero(env_indices == env_index)
            column = self._one_env_view(lambda array, e=env_index: array[:, e : e + 1])
            parts.append(column._get_samples(batch_inds[selected], env=env))
            positions.append(selected)
        order = np.empty(batch_inds.shape[0], dtype=np.int64)
        order[np.concatenate(positions)] = np.arange(batch_inds.shape[0])
        order_t = th.as_tensor(order, device=self.device)
        fields = [None if field[0] is None else th.cat(field)[order_t] for field in zip(*parts, strict=True)]
        return ReplayBufferSamples(*fields)  # type: ignore[arg-type]

    def _one_env_view(self, view_of: Callable[[np.ndarray], np.ndarray]) -> PrioritizedReplayBuffer:
        """A shallow copy whose storage arrays are ``view_of`` the originals, seen as a single env."""
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__)
        for name in ("observations", "next_observations", "actions", "rewards", "dones", "timeouts"):
            setattr(view, name, view_of(getattr(self, name)))
        view.n_envs = 1
        view.buffer_size = view.rewards.shape[0]
        return view


class PrioritizedNStepReplayBuffer(PrioritizedReplayBuffer, NStepReplayBuffer):
    """Prioritized replay of n-step transitions: SB3's ``NStepReplayBuffer`` returns and discounts.

    The priority of slot (pos, env) is the TD error of the n-step transition starting there.

    :param n_steps: number of rewards summed in each return (SB3's ``NStepReplayBuffer``)
    :param gamma: discount factor of the n-step return and of the bootstrap discount
    """

    def __init__(self, *args: Any, n_steps: int = 3, gamma: float = 0.99, **kwargs: Any) -> None:
        super().__init__(*args, n_steps=n_steps, gamma=gamma, **kwargs)


def _filled_buffers(buffer_size: int, use_numba: bool, seed: int = 0) -> tuple[ReplayBuffer, PrioritizedReplayBuffer]:
    """A uniform and a prioritized buffer with LunarLander's spaces, full of random data and priorities."""
    observation_space = spaces.Box(-np.inf, np.inf, shape=(8,), dtype=np.float32)
    action_space = spaces.Discrete(4)
    rng = np.random.default_rng(seed)
    uniform = ReplayBuffer(buffer_size, observation_space, action_space, device="cpu")
    prioritized = PrioritizedReplayBuffer(buffer_size, observation_space, action_space, device="cpu")
    for buffer in (uniform, prioritized):
        buffer.observations[:] = rng.standard_normal(buffer.observations.shape, dtype=np.float32)
        buffer.next_observations[:] = rng.standard_normal(buffer.next_observations.shape, dtype=np.float32)
        buffer.actions[:] = rng.integers(0, 4, size=buffer.actions.shape)
        buffer.rewards[:] = rng.standard_normal(buffer.rewards.shape, dtype=np.float32)
        buffer.full = True
    prioritized.sum_tree.rebuild((np.abs(rng.standard_normal(buffer_size)) + 1e-6) ** prioritized.alpha)
    prioritized.max_priority = 5.0
    prioritized.use_numba = use_numba
    return uniform, prioritized


def benchmark_overhead(
    buffer_size: int = 1_000_000, batch_size: int = 64, rounds: int = 7, calls: int = 500
) -> dict[str, float]:
    """Microseconds per minibatch: SB3's uniform ``sample`` vs prioritized ``sample`` + ``update_priorities``.

    Measured side by side, interleaved in rounds, and the median round is reported, so that load from
    other processes affects both alike. Keys: ``uniform_us``, ``numpy_us``, ``numpy_overhead_us`` and, when
    Numba is available, ``numba_us``, ``numba_overhead_us``.
    """
    uniform, prioritized = _filled_buffers(buffer_size, use_numba=False)
    variants = {"uniform": None, "numpy": False}
    if HAS_NUMBA:
        variants["numba"] = True
    td_errors = np.random.default_rng(1).standard_normal(batch_size)

    def run(use_numba: bool | None) -> float:
        start = time.perf_counter()
        if use_numba is None:
            for _ in range(calls):
                uniform.sample(batch_size)
        else:
            prioritized.use_numba = use_numba
            for _ in range(calls):
                samples = prioritized.sample(batch_size)
                prioritized.update_priorities(samples.indices, td_errors)
        return (time.perf_counter() - start) / calls * 1e6

    for use_numba in variants.values():  # warm-up: compile, fault in pages
        run(use_numba)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, use_numba in variants.items():
            times[name].append(run(use_numba))
    result = {f"{name}_us": float(np.median(values)) for name, values in times.items()}
    for name in variants:
        if name != "uniform":
            result[f"{name}_overhead_us"] = result[f"{name}_us"] - result["uniform_us"]
    return result


if __name__ == "__main__":
    for key, value in benchmark_overhead().items():
        print(f"{key:>20}: {value:8.1f}")
