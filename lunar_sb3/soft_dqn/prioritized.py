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
no rounding error accumulates over millions of updates. The tree's kernels are one set of loops, compiled by
Numba when it is enabled and run as plain Python otherwise; the buffer and the fast path's lean rollout both
use them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import NStepReplayBuffer, ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize

from lunar_sb3.soft_dqn.jit import HAS_NUMBA, jit
from lunar_sb3.soft_dqn.jit import enabled as numba_enabled


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
# Sum-tree kernels, compiled by Numba when it is enabled and plain Python otherwise (the same code either way).
# ``tree`` has 2 * capacity nodes (capacity a power of two): the root is node 1, the children of node k are 2k and
# 2k + 1, leaf j is node capacity + j.
# ---------------------------------------------------------------------------------------------------------------
@jit
def descend(tree: np.ndarray, values: np.ndarray, depth: int) -> np.ndarray:
    """The node where each prefix-sum value falls; never a zero-priority leaf while the total is positive."""
    values = values.copy()
    nodes = np.ones(values.shape[0], dtype=np.int64)
    for _ in range(depth):  # level by level: the batch's reads at one level are independent and overlap
        for i in range(values.shape[0]):
            left = 2 * nodes[i]
            # Going right only into a subtree with mass keeps rounding (v a hair above the left sum at the very
            # end of the range) from ever landing on an empty, unfilled slot.
            if values[i] >= tree[left] and tree[left + 1] > 0.0:
                values[i] -= tree[left]
                nodes[i] = left + 1
            else:
                nodes[i] = left
    return nodes


@jit
def update(tree: np.ndarray, nodes: np.ndarray, priorities: np.ndarray, depth: int) -> None:
    """Write leaf priorities, then recompute every ancestor from its two children (never by adding a difference,
    so no rounding error accumulates); for a repeated leaf the last priority wins."""
    for i in range(nodes.shape[0]):
        tree[nodes[i]] = priorities[i]
    for i in range(nodes.shape[0]):
        parent = nodes[i] >> 1
        for _ in range(depth):
            tree[parent] = tree[2 * parent] + tree[2 * parent + 1]
            parent >>= 1


@jit
def in_range(values: np.ndarray, stop: int) -> bool:
    """Every value in [0, stop)."""
    for i in range(values.shape[0]):
        if values[i] < 0 or values[i] >= stop:
            return False
    return True


def _kernel(function: Any, use_numba: bool) -> Any:
    """The compiled kernel, or the same function as plain Python."""
    return function if use_numba and HAS_NUMBA else function.py_func


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

    def update(self, leaves: np.ndarray, priorities: np.ndarray, use_numba: bool = True) -> None:
        """Set ``leaves`` to ``priorities`` (for a repeated leaf the last one wins) and refresh their ancestors.

        ``use_numba=False`` runs the same kernel as plain Python (the buffer passes whether Numba is enabled).
        """
        leaves = np.asarray(leaves, dtype=np.int64)
        if leaves.shape[0] == 0:
            return
        # A leaf past n_leaves would be a slot no sample can reach (or memory past the tree, in compiled code).
        if not _kernel(in_range, use_numba)(leaves, self.n_leaves):
            raise IndexError(f"leaf indices must be in [0, {self.n_leaves})")
        priorities = np.asarray(priorities, dtype=np.float64)
        _kernel(update, use_numba)(self.tree, leaves + self.capacity, priorities, self.depth)

    def find(self, values: np.ndarray, use_numba: bool = True) -> np.ndarray:
        """The leaf j with prefix(j) <= v < prefix(j) + leaf(j) for each value v in [0, total)."""
        values = np.asarray(values, dtype=np.float64)
        return _kernel(descend, use_numba)(self.tree, values, self.depth) - self.capacity

    def sample(self, uniforms: np.ndarray, use_numba: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Stratified draws: leaf i falls in the i-th of n equal slices of [0, total) at fraction ``uniforms[i]``.

        :return: the leaves and their values (priorities)
        """
        uniforms = np.asarray(uniforms, dtype=np.float64)
        values = (np.arange(uniforms.shape[0]) + uniforms) * (self.total / uniforms.shape[0])
        nodes = _kernel(descend, use_numba)(self.tree, values, self.depth)
        return nodes - self.capacity, self.tree[nodes]

    def warm_up(self) -> None:
        """Compile (or load from Numba's cache) the kernels, on a tiny tree, before training starts."""
        tiny = SumTree(2)
        tiny.update(np.array([0, 1]), np.array([1.0, 2.0]))
        tiny.sample(np.array([0.5, 0.5]))

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
        tree = self.sum_tree
        nodes = np.arange(row * self.n_envs, (row + 1) * self.n_envs, dtype=np.int64) + tree.capacity
        priorities = np.full(self.n_envs, self.max_priority**self.alpha)
        # (SumTree.update without its range check: a row's slots are leaves by construction; the lean rollout
        # calls this after every env step)
        _kernel(update, self.use_numba)(tree.tree, nodes, priorities, tree.depth)

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
