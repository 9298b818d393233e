"""Helpers shared by the tests that compare the fast path with the general (autograd) path (not a test module)."""

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import Logger

from lunar_sb3 import SoftUpdateDQN
from lunar_sb3.soft_dqn import compiled
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


def seeded_runs(n_envs: int = 1, steps: int = 4000, **options) -> tuple[SoftUpdateDQN, SoftUpdateDQN]:
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


def kernel_is_exact_here(dims: np.ndarray) -> bool:
    """Whether the kernel reproduces this machine's torch for a network of widths ``dims``, piece by piece.

    Calibration found every product's summation order, and the bias sums, the gradient norm and Adam agree with
    torch bit for bit on random data of the network's tensor sizes (the kernel follows ATen's CPU code, which a
    different CPU may run in another vector width).
    """
    if compiled.calibration_misses(dims, 64):
        return False
    rng = np.random.default_rng(0)
    width = compiled.torch_vector_width()
    sizes = [int(dims[i]) * int(dims[i + 1]) for i in range(len(dims) - 1)] + [int(d) for d in dims[1:]]
    for columns in dims[1:]:
        x = rng.standard_normal((64, int(columns))).astype(np.float32)
        out = np.empty(int(columns), np.float32)
        compiled._column_sums(x, out, width)
        if not np.array_equal(out, th.from_numpy(x).sum(dim=0).numpy()):
            return False
    for size in [*sizes, len(sizes)]:
        x = rng.standard_normal(size).astype(np.float32)
        if compiled._norm(x, width) != th.linalg.vector_norm(th.from_numpy(x)).numpy():
            return False
    for size in sizes:
        param, grad = rng.standard_normal(size).astype(np.float32), rng.standard_normal(size).astype(np.float32)
        exp_avg, exp_avg_sq = np.zeros(size, np.float32), np.full(size, 0.01, np.float32)
        tensors = [th.from_numpy(a.copy()) for a in (param, grad, exp_avg, exp_avg_sq)]
        th._fused_adam_(
            [tensors[0]], [tensors[1]], [tensors[2]], [tensors[3]], [], [th.tensor(7.0)],
            amsgrad=False, lr=1e-3, beta1=0.9, beta2=0.999, weight_decay=0.0, eps=1e-8, maximize=False,
        )  # fmt: skip
        compiled._adam(param, grad, exp_avg, exp_avg_sq, 7.0, 1e-3, 0.9, 0.999, 1e-8, 0.0, width)
        theirs = (tensors[0], tensors[2], tensors[3])  # param, exp_avg, exp_avg_sq after the step
        if not all(np.array_equal(a, t.numpy()) for a, t in zip((param, exp_avg, exp_avg_sq), theirs, strict=True)):
            return False
    return True


def assert_bit_identical_where_exact(model: SoftUpdateDQN, reference: SoftUpdateDQN) -> None:
    """Where the kernel reproduces every piece of torch's arithmetic (:func:`kernel_is_exact_here`), the two paths
    must agree exactly, not just to 1e-5: check exactly (on the machine this was written on, they do)."""
    trainer = model._fast_trainer.compiled
    if trainer is None or not kernel_is_exact_here(trainer.dims):
        return
    for p_model, p_reference in zip(model.policy.parameters(), reference.policy.parameters(), strict=True):
        th.testing.assert_close(p_model, p_reference, rtol=0, atol=0)
    if isinstance(model.replay_buffer, PrioritizedReplayBuffer):
        np.testing.assert_array_equal(model.replay_buffer.sum_tree.tree, reference.replay_buffer.sum_tree.tree)
