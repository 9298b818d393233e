"""Helpers shared by the tests that compare the fast path with the general (autograd) path (not a test module)."""

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.logger import Logger

from lunar_sb3 import SoftUpdateDQN
from lunar_sb3.soft_dqn.prioritized import PrioritizedReplayBuffer


def general_path(model: SoftUpdateDQN) -> SoftUpdateDQN:
    """Force the plain path: SB3's rollout loop and autograd gradients."""
    model.use_fast_path = False
    model._fast_trainer = None  # also for direct `train()` calls, which do not pass through `learn`
    return model


def quiet(model: SoftUpdateDQN) -> SoftUpdateDQN:
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def general_twin(fast: SoftUpdateDQN, env: gym.Env | str, **kwargs) -> SoftUpdateDQN:
    """A model on the general path built with ``kwargs``, holding ``fast``'s weights and replay memory."""
    plain = quiet(general_path(SoftUpdateDQN("MlpPolicy", env, **kwargs)))
    plain.replay_buffer = copy.deepcopy(fast.replay_buffer)
    plain.q_net.load_state_dict(fast.q_net.state_dict())
    plain.q_net_target.load_state_dict(fast.q_net_target.state_dict())
    return plain


def train_alike(models: tuple[SoftUpdateDQN, ...], calls: int, first_seed: int = 0, gradient_steps: int = 1) -> None:
    """``train`` calls on the same minibatches for every model (NumPy seeded alike), each then a soft update."""
    for call in range(first_seed, first_seed + calls):
        for model in models:
            np.random.seed(call)
            model._due_target_updates = 1
            model.train(gradient_steps=gradient_steps, batch_size=64)


def assert_same_training_state(model: SoftUpdateDQN, reference: SoftUpdateDQN) -> None:
    """Online and target weights, Adam's moments and (prioritized replay) every priority within 1e-5; steps equal.

    On the machine this was written on (AMD EPYC, torch 2.13 with MKL 2024.2) the two paths agree bit for bit:
    the kernel sums every product in the order ``compiled.calibrate`` finds MKL using, and the bias sums, the
    gradient norm and Adam in ATen's order. The tolerance is for a BLAS whose order the calibration cannot
    reproduce (it then sums as FMA chains): its last-bit differences grow to ~1e-6 over 1000 steps.
    ``exp_avg_sq`` holds squared gradients (up to ~10²; one float32 ulp of 100 is 8e-6), so it is compared
    relative to its size.
    """
    for net in ("q_net", "q_net_target"):
        pairs = zip(getattr(model, net).parameters(), getattr(reference, net).parameters(), strict=True)
        for p_model, p_reference in pairs:
            assert p_model.abs().sum() > 0
            th.testing.assert_close(p_model, p_reference, rtol=0, atol=1e-5)
    states = zip(model.policy.optimizer.state.values(), reference.policy.optimizer.state.values(), strict=True)
    for s_model, s_reference in states:
        assert float(s_model["step"]) == float(s_reference["step"])
        th.testing.assert_close(s_model["exp_avg"], s_reference["exp_avg"], rtol=0, atol=1e-5)
        th.testing.assert_close(s_model["exp_avg_sq"], s_reference["exp_avg_sq"], rtol=1e-5, atol=1e-5)
    if isinstance(model.replay_buffer, PrioritizedReplayBuffer):
        tree, reference_tree = model.replay_buffer.sum_tree, reference.replay_buffer.sum_tree
        np.testing.assert_allclose(tree.tree, reference_tree.tree, rtol=1e-5, atol=0)
        assert model.replay_buffer.max_priority == pytest.approx(reference.replay_buffer.max_priority, rel=1e-5)
