"""The compiled (Numba) gradient step computes what the autograd path computes, on the model's own memory."""

import numpy as np
import pytest
import torch as th
from fast_helpers import (
    assert_bit_identical_where_exact,
    assert_same_training_state,
    general_twin,
    quiet,
    train_alike,
)

from lunar_sb3 import SoftUpdateDQN
from lunar_sb3.soft_dqn import compiled

pytestmark = pytest.mark.skipif(not compiled.HAS_NUMBA, reason="numba is not installed")


def filled_pair(seed: int = 0, **kwargs) -> tuple[SoftUpdateDQN, SoftUpdateDQN]:
    """Two identical models (compiled, general) whose replay memories hold the same LunarLander transitions."""
    fast = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", seed=seed, learning_starts=3000, **kwargs)
    fast.learn(3000)  # warm-up only: random actions, no gradient step
    plain = general_twin(fast, "LunarLander-v2", seed=seed, **kwargs)
    assert fast._fast_trainer.gradient_step == "compiled" and not plain.uses_fast_path
    return fast, plain


@pytest.mark.parametrize(
    "loss, double_q, max_grad_norm",
    [("mse", False, None), ("huber", False, None), ("mse", True, None), ("huber", True, None), ("mse", False, 1.0)],
)
def test_compiled_step_equals_autograd_after_1000_steps(loss, double_q, max_grad_norm):
    fast, plain = filled_pair(loss=loss, double_q=double_q, max_grad_norm=max_grad_norm, tau=0.01)
    train_alike((fast, plain), 1000)
    assert_same_training_state(fast, plain)
    assert_bit_identical_where_exact(fast, plain)
    assert fast._fast_trainer.compiled.bindings == 1  # trained on the kernel throughout, nothing re-bound


def test_clipping_is_exercised():
    """max_grad_norm=1.0 above really clips: the raw gradient norm of these batches exceeds it."""
    fast, _ = filled_pair(max_grad_norm=1.0)
    batch = fast.replay_buffer.sample(64)
    fast.td_loss(batch).backward()
    assert th.nn.utils.clip_grad_norm_(fast.q_net.parameters(), float("inf")) > 1.0


def test_three_hidden_layers():
    fast, plain = filled_pair(policy_kwargs=dict(net_arch=[32, 32, 32]), tau=0.01)
    assert list(fast._fast_trainer.compiled.dims) == [8, 32, 32, 32, 4]
    train_alike((fast, plain), 1000)
    assert_same_training_state(fast, plain)
    assert_bit_identical_where_exact(fast, plain)


@pytest.mark.parametrize("how", ["env", "missing"])
def test_torch_step_without_numba(monkeypatch, how):
    """LUNAR_SB3_NUMBA=0, or no numba at all: the fast path keeps its torch gradient step, with the same numbers."""
    if how == "env":
        monkeypatch.setenv(compiled.ENV_SWITCH, "0")
    else:
        monkeypatch.setattr(compiled, "HAS_NUMBA", False)
    fast = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", seed=0, learning_starts=3000, tau=0.01)
    fast.learn(3000)  # decided at each learn: the torch step
    assert fast.uses_fast_path and fast._fast_trainer.compiled is None
    assert fast._fast_trainer.gradient_step.startswith("torch (")
    plain = general_twin(fast, "LunarLander-v2", seed=0, tau=0.01)
    train_alike((fast, plain), 200)
    assert_same_training_state(fast, plain)


def test_kernel_buffers_are_the_models_tensors():
    """Weights and Adam's state are views of the kernel's flat buffers: state_dict() sees what it trains."""
    fast, _ = filled_pair()
    train_alike((fast,), 5)
    bound = fast._fast_trainer.compiled
    params, target, exp_avg, exp_avg_sq = bound.arrays
    offset = 0
    for param, state in zip(fast.q_net.parameters(), fast.policy.optimizer.state.values(), strict=True):
        size = param.numel()
        np.testing.assert_array_equal(param.detach().numpy().ravel(), params[offset : offset + size])
        assert param.data_ptr() == params[offset:].ctypes.data
        assert state["exp_avg"].data_ptr() == exp_avg[offset:].ctypes.data
        assert state["exp_avg_sq"].data_ptr() == exp_avg_sq[offset:].ctypes.data
        assert float(state["step"]) == 5
        offset += size
    assert offset == params.size
    saved = fast.policy.optimizer.state_dict()["state"]
    assert th.equal(saved[2]["exp_avg"].reshape(-1), th.from_numpy(exp_avg[8 * 64 + 64 : 8 * 64 + 64 + 64 * 64]))
    # the soft update lerps the same memory
    online, target_aliases = fast._polyak_pairs
    assert online[0].data_ptr() == params.ctypes.data and target_aliases[0].data_ptr() == target.ctypes.data


def test_save_load_continues_training_identically(tmp_path):
    uninterrupted, _ = filled_pair(tau=0.01)
    train_alike((uninterrupted,), 1000)
    uninterrupted.save(tmp_path / "model.zip")
    loaded = quiet(SoftUpdateDQN.load(tmp_path / "model.zip"))
    loaded.replay_buffer = uninterrupted.replay_buffer  # read-only in train(); not part of model.save
    assert loaded.policy.optimizer.state_dict()["state"][0]["step"] == 1000
    train_alike((uninterrupted, loaded), 500, first_seed=1000)
    assert loaded._fast_trainer.compiled.bindings == 2  # the loaded optimizer state was bound in place
    for net in ("q_net", "q_net_target"):
        for p_a, p_b in zip(getattr(uninterrupted, net).parameters(), getattr(loaded, net).parameters(), strict=True):
            assert th.equal(p_a, p_b)
    states = zip(uninterrupted.policy.optimizer.state.values(), loaded.policy.optimizer.state.values(), strict=True)
    for s_a, s_b in states:
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert th.equal(s_a[key], s_b[key]), key


def test_replaced_parameter_storage_is_bound_again():
    """``param.data = ...`` swaps in new memory: the next step binds it again, keeping its values."""
    fast, _ = filled_pair()
    train_alike((fast,), 3)
    bound = fast._fast_trainer.compiled
    for param in fast.q_net.parameters():
        param.data = param.data.clone() + 1.0
    moved_bias = fast.q_net.q_net[0].bias.detach().clone()
    assert not bound.is_bound()
    train_alike((fast,), 1, first_seed=3)
    assert bound.is_bound() and bound.bindings == 2
    assert fast.q_net.q_net[0].weight.data_ptr() == bound.arrays[0].ctypes.data
    assert th.allclose(fast.q_net.q_net[0].bias, moved_bias, atol=0.01)  # one Adam step (lr 1e-3) away
    assert fast._polyak_pairs[0][0].data_ptr() == bound.arrays[0].ctypes.data


def test_greedy_actions_match_torch():
    model, _ = filled_pair()
    train_alike((model,), 200)
    observations = np.random.default_rng(1).standard_normal((2000, 8)).astype(np.float32)
    with th.no_grad():
        expected = model.q_net(th.from_numpy(observations)).argmax(dim=1).numpy()
    np.testing.assert_array_equal(model._fast_trainer.greedy_actions(observations), expected)
    np.testing.assert_array_equal(model._fast_trainer.greedy_actions(observations[:1]), expected[:1])


# ---- the building blocks against the torch kernels they follow (a few ulps allowed: other CPUs, other orders)
def test_column_sums_follow_torch_sum():
    rng = np.random.default_rng(0)
    for shape in [(64, 64), (64, 4), (64, 32), (64, 8), (64, 100), (37, 5), (300, 64)]:
        x = rng.standard_normal(shape).astype(np.float32)
        x[rng.random(shape) < 0.5] = 0
        out = np.empty(shape[1], np.float32)
        compiled._column_sums(x, out, compiled.torch_vector_width())
        np.testing.assert_array_max_ulp(out, th.from_numpy(x).sum(dim=0).numpy(), maxulp=4)


def test_norm_follows_torch_vector_norm():
    rng = np.random.default_rng(0)
    for size in [4, 6, 64, 256, 512, 4096, 1000]:
        x = rng.standard_normal(size).astype(np.float32)
        expected = th.linalg.vector_norm(th.from_numpy(x)).numpy()
        np.testing.assert_array_max_ulp(compiled._norm(x, compiled.torch_vector_width()), expected, maxulp=4)


@pytest.mark.parametrize("beta1, weight_decay", [(0.9, 0.0), (0.3, 0.01)])
def test_adam_follows_torch_fused_adam(beta1, weight_decay):
    rng = np.random.default_rng(0)
    for size in [4096, 64, 4, 13]:
        param, grad = rng.standard_normal(size).astype(np.float32), rng.standard_normal(size).astype(np.float32)
        exp_avg = (0.1 * rng.standard_normal(size)).astype(np.float32)
        exp_avg_sq = (0.1 * rng.random(size)).astype(np.float32)
        tensors = [th.from_numpy(a.copy()) for a in (param, grad, exp_avg, exp_avg_sq)]
        th._fused_adam_(
            [tensors[0]], [tensors[1]], [tensors[2]], [tensors[3]], [], [th.tensor(57.0)],
            amsgrad=False, lr=1e-3, beta1=beta1, beta2=0.999, weight_decay=weight_decay, eps=1e-8, maximize=False,
        )  # fmt: skip
        compiled._adam(param, grad, exp_avg, exp_avg_sq, 57.0, 1e-3, beta1, 0.999, 1e-8, weight_decay, 8)
        for ours, theirs in zip((param, exp_avg, exp_avg_sq), (tensors[0], tensors[2], tensors[3]), strict=True):
            np.testing.assert_array_max_ulp(ours, theirs.numpy(), maxulp=4)
