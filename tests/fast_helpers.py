"""Helpers shared by the tests that compare the fast path with the general (autograd) path (not a test module).

Tolerances are relative to each tensor's size: ``max |fast − general| <= rtol · max |general|``. Element-wise
relative error means nothing for the entries near 0 that every gradient has, and an absolute tolerance means
nothing without the tensor's scale. The two paths sum in different orders (BLAS and loops against torch's
kernels), so they agree to float32 rounding on every machine, never necessarily bit for bit.
"""

import copy

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import DummyVecEnv

from lunar_sb3 import SoftUpdateDQN
from lunar_sb3.soft_dqn import jit
from lunar_sb3.soft_dqn.prioritized import PrioritizedReplayBuffer

# Rainbow-lite: all four components on the lab's defaults
RAINBOW_LITE = dict(double_q=True, dueling=True, prioritized_replay=True, n_steps=3)


def require_numba() -> None:
    """The compiled kernel's tests need Numba; without it they are skipped, saying so."""
    import pytest

    if not jit.enabled():
        pytest.skip(f"the compiled kernel is not available here: {jit.disabled_reason()}")


class Spaces(gym.Env):
    """An env that only has spaces: the one-step tests write their transitions into the buffer directly."""

    def __init__(self, n_inputs: int = 8, n_actions: int = 4) -> None:
        self.observation_space = spaces.Box(-10.0, 10.0, shape=(n_inputs,), dtype=np.float32)
        self.action_space = spaces.Discrete(n_actions)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        return np.zeros(self.observation_space.shape, np.float32), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        return np.zeros(self.observation_space.shape, np.float32), 0.0, False, False, {}


def general_path(model: SoftUpdateDQN) -> SoftUpdateDQN:
    """Force the plain path: SB3's rollout loop and autograd gradients."""
    model.use_fast_path = False
    model._fast_trainer = None  # also for direct `train()` calls, which do not pass through `learn`
    return model


def quiet(model: SoftUpdateDQN) -> SoftUpdateDQN:
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def general_twin(fast: SoftUpdateDQN, env: gym.Env | str, **kwargs) -> SoftUpdateDQN:
    """A model on the general path built with ``kwargs``, holding ``fast``'s weights, Adam state and replay memory."""
    plain = quiet(general_path(SoftUpdateDQN("MlpPolicy", env, **kwargs)))
    plain.replay_buffer = copy.deepcopy(fast.replay_buffer)
    # where training stands (prioritized replay anneals β with the progress)
    plain.num_timesteps, plain._current_progress_remaining = fast.num_timesteps, fast._current_progress_remaining
    plain.q_net.load_state_dict(fast.q_net.state_dict())
    plain.q_net_target.load_state_dict(fast.q_net_target.state_dict())
    if fast.policy.optimizer.state:
        # a deep copy: load_state_dict keeps a float32 "step" tensor as it is, which would share it between the two
        plain.policy.optimizer.load_state_dict(copy.deepcopy(fast.policy.optimizer.state_dict()))
    return plain


def spaces_env(n_envs: int = 1, n_inputs: int = 8, n_actions: int = 4) -> DummyVecEnv:
    return DummyVecEnv([lambda: Spaces(n_inputs, n_actions)] * n_envs)


def fill_randomly(model: SoftUpdateDQN, rows: int, seed: int = 0) -> None:
    """Random transitions in ``rows`` rows of the replay memory (episode ends and time limits included)."""
    buffer, rng = model.replay_buffer, np.random.default_rng(seed)
    shape = (rows, buffer.n_envs)
    buffer.observations[:rows] = rng.standard_normal((*shape, buffer.obs_shape[0]), dtype=np.float32)
    buffer.next_observations[:rows] = rng.standard_normal((*shape, buffer.obs_shape[0]), dtype=np.float32)
    buffer.actions[:rows] = rng.integers(0, int(model.action_space.n), size=(*shape, 1))
    buffer.rewards[:rows] = rng.standard_normal(shape, dtype=np.float32) * 5
    buffer.dones[:rows] = rng.random(shape) < 0.1
    buffer.timeouts[:rows] = buffer.dones[:rows] * (rng.random(shape) < 0.3)
    buffer.pos = rows % buffer.buffer_size
    buffer.full = rows >= buffer.buffer_size
    if isinstance(buffer, PrioritizedReplayBuffer):
        leaves = np.arange(rows * buffer.n_envs)
        buffer.sum_tree.update(leaves, rng.uniform(0.1, 3.0, size=leaves.shape[0]) ** buffer.alpha)


def seeded_runs(n_envs: int = 1, steps: int = 3000, **options) -> tuple[SoftUpdateDQN, SoftUpdateDQN]:
    """The same seeded LunarLander training, ε decaying fast so greedy actions count: (fast path, general path)."""

    def run(force_general: bool) -> SoftUpdateDQN:
        env = make_vec_env("LunarLander-v2", n_envs=n_envs, seed=7)
        model = SoftUpdateDQN("MlpPolicy", env, seed=7, exploration_decay=0.9, **options)
        if force_general:
            general_path(model)
        return model.learn(steps)

    fast, plain = run(False), run(True)
    assert fast.uses_fast_path and not plain.uses_fast_path  # two different paths really ran
    return fast, plain


def train_alike(models: tuple[SoftUpdateDQN, ...], calls: int, first_seed: int = 0, gradient_steps: int = 1) -> None:
    """``train`` calls on the same minibatches for every model (NumPy seeded alike), each then a soft update."""
    for call in range(first_seed, first_seed + calls):
        for model in models:
            np.random.seed(call)
            model._due_target_updates = 1
            model.train(gradient_steps=gradient_steps, batch_size=64)


def assert_close(actual: th.Tensor | np.ndarray, expected: th.Tensor | np.ndarray, rtol: float, what: str) -> None:
    """max |actual − expected| <= rtol · max |expected| (see the module docstring), and ``expected`` is not all 0."""
    actual, expected = (
        np.asarray(x.detach() if isinstance(x, th.Tensor) else x, np.float64) for x in (actual, expected)
    )
    scale = np.abs(expected).max()
    assert scale > 0, f"{what}: nothing to compare (all zero)"
    error = np.abs(actual - expected).max()
    assert error <= rtol * scale, f"{what}: max |difference| {error:.3g} > {rtol:g} × max |value| {scale:.3g}"


def assert_same_training_state(model: SoftUpdateDQN, reference: SoftUpdateDQN, rtol: float) -> None:
    """Online and target weights, both Adam moments and (prioritized replay) every priority within ``rtol`` of the
    tensor's size; Adam's step counts equal."""
    for net in ("q_net", "q_net_target"):
        pairs = zip(getattr(model, net).named_parameters(), getattr(reference, net).named_parameters(), strict=True)
        for (name, p_model), (_, p_reference) in pairs:
            assert_close(p_model, p_reference, rtol, f"{net}.{name}")
    states = zip(model.policy.optimizer.state.values(), reference.policy.optimizer.state.values(), strict=True)
    for i, (s_model, s_reference) in enumerate(states):
        assert float(s_model["step"]) == float(s_reference["step"]) > 0
        assert_close(s_model["exp_avg"], s_reference["exp_avg"], rtol, f"exp_avg of tensor {i}")
        assert_close(s_model["exp_avg_sq"], s_reference["exp_avg_sq"], rtol, f"exp_avg_sq of tensor {i}")
    if isinstance(model.replay_buffer, PrioritizedReplayBuffer):
        assert_same_td_errors(model.replay_buffer, reference.replay_buffer, rtol, "the priorities' |δ|")


def assert_same_td_errors(buffer: PrioritizedReplayBuffer, reference: PrioritizedReplayBuffer, rtol: float, what: str):
    """The |δ| + ε behind every priority p = (|δ| + ε)^α, and the largest seen, within ``rtol``.

    Compared as |δ|, not as p: near δ = 0 the power α < 1 magnifies a last-bit difference in δ without limit.
    """
    alpha = buffer.alpha
    assert_close(buffer.sum_tree.leaves ** (1 / alpha), reference.sum_tree.leaves ** (1 / alpha), rtol, what)
    assert_close(buffer.max_priority, reference.max_priority, rtol, "the largest |δ| + ε")
