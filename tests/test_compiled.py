"""The compiled gradient step computes what autograd computes, on the model's own memory.

One step from an identical state, for every configuration the fast path's allow-list admits: the kernel against
``SoftUpdateDQN._train_general`` (autograd, SB3's own sampling), within 1e-6 of each tensor's size (weights,
both Adam moments, priorities from the TD errors, the loss).
"""

import numpy as np
import pytest
import torch as th
from fast_helpers import (
    assert_close,
    assert_same_training_state,
    fill_randomly,
    general_twin,
    quiet,
    require_numba,
    spaces_env,
    train_alike,
)

from lunar_sb3 import SoftUpdateDQN

ONE_STEP_RTOL = 1e-6

# Each case: model options, and the env's (n_envs, n_inputs, n_actions). Together they cover MSE/Huber, Double
# DQN on/off, clipping on/off, dueling, n-step, prioritized, n-step + prioritized, 1 and 4 envs, 2-9 actions,
# the 64-64, 256-256 and a three-layer network, and the Adam options the allow-list passes on.
CASES = {
    "defaults": (dict(), (1, 8, 4)),
    "huber": (dict(loss="huber"), (1, 8, 4)),
    "double": (dict(double_q=True), (1, 8, 4)),
    "clipping": (dict(max_grad_norm=0.1), (1, 8, 4)),
    "huber+double+clipping": (dict(loss="huber", double_q=True, max_grad_norm=0.1), (1, 8, 4)),
    "dueling": (dict(dueling=True), (1, 8, 4)),
    "dueling+double+huber+clipping": (dict(dueling=True, double_q=True, loss="huber", max_grad_norm=0.1), (1, 8, 4)),
    "n-step": (dict(n_steps=3), (1, 8, 4)),
    "prioritized": (dict(prioritized_replay=True), (1, 8, 4)),
    "prioritized+n-step+huber": (dict(prioritized_replay=True, n_steps=3, loss="huber"), (1, 8, 4)),
    "rainbow-lite": (dict(double_q=True, dueling=True, prioritized_replay=True, n_steps=3), (1, 8, 4)),
    "4 envs": (dict(), (4, 8, 4)),
    "4 envs, n-step": (dict(n_steps=5), (4, 8, 4)),
    "4 envs, rainbow-lite": (dict(double_q=True, dueling=True, prioritized_replay=True, n_steps=3), (4, 8, 4)),
    "2 actions": (dict(double_q=True), (1, 4, 2)),
    "9 actions, dueling": (dict(dueling=True, double_q=True), (1, 8, 9)),
    "7 actions, clipping": (dict(max_grad_norm=0.1), (2, 11, 7)),
    "256-256": (dict(policy_kwargs=dict(net_arch=[256, 256])), (1, 8, 4)),
    "256-256 dueling, prioritized": (
        dict(dueling=True, prioritized_replay=True, policy_kwargs=dict(net_arch=[256, 256])),
        (1, 8, 4),
    ),
    "three layers": (dict(policy_kwargs=dict(net_arch=[128, 64, 32])), (1, 8, 4)),
    "Adam weight decay, betas": (
        dict(policy_kwargs=dict(optimizer_kwargs=dict(weight_decay=0.01, betas=(0.8, 0.99), eps=1e-6))),
        (1, 8, 4),
    ),
    "Adam foreach (not fused)": (dict(policy_kwargs=dict(optimizer_kwargs=dict(foreach=True))), (1, 8, 4)),
}


def random_pair(options: dict, shape: tuple[int, int, int], rows: int = 500) -> tuple[SoftUpdateDQN, SoftUpdateDQN]:
    """(fast, general) models with the same random weights, replay memory and a non-trivial Adam state."""
    require_numba()
    n_envs, n_inputs, n_actions = shape
    kwargs = dict(options, seed=1, buffer_size=1000 * n_envs, learning_starts=0)  # 1000 rows
    fast = quiet(SoftUpdateDQN("MlpPolicy", spaces_env(n_envs, n_inputs, n_actions), **kwargs))
    assert fast.uses_fast_path, fast.fast_path_status
    fill_randomly(fast, rows)
    with th.no_grad():  # a target network unlike the online one, and moments as after a few steps
        for param in fast.q_net_target.parameters():
            param.add_(th.randn_like(param) * 0.05)
    optimizer = fast.policy.optimizer
    for param in fast.q_net.parameters():
        optimizer.state[param] = dict(
            step=th.tensor(4.0), exp_avg=th.randn_like(param) * 1e-3, exp_avg_sq=th.rand_like(param) * 1e-5
        )
    fast._fast_trainer.bind()  # the state tensors just set become views of the kernel's arrays
    plain = general_twin(fast, spaces_env(n_envs, n_inputs, n_actions), **kwargs)
    return fast, plain


@pytest.mark.parametrize("case", list(CASES))
def test_one_step_equals_autograd(case):
    options, shape = CASES[case]
    fast, plain = random_pair(options, shape)
    weights_before = [p.detach().clone() for p in plain.q_net.parameters()]
    train_alike((fast, plain), 1)
    assert_same_training_state(fast, plain, rtol=ONE_STEP_RTOL)
    loss = (fast.logger.name_to_value["train/loss"], plain.logger.name_to_value["train/loss"])
    assert_close(loss[0], loss[1], ONE_STEP_RTOL, "loss")
    # the step moved every weight tensor (the comparison above is not between two unchanged copies)
    for before, after in zip(weights_before, plain.q_net.parameters(), strict=True):
        assert not th.equal(before, after)
    if options.get("max_grad_norm"):  # the clipping cases really clip
        plain.policy.optimizer.zero_grad()
        np.random.seed(0)
        plain.td_loss(plain.replay_buffer.sample(64)).backward()
        assert th.nn.utils.clip_grad_norm_(plain.q_net.parameters(), float("inf")) > options["max_grad_norm"]


def test_several_gradient_steps_per_call():
    """gradient_steps=4: the four minibatches are drawn as SB3 draws them, each step sees the previous one's weights."""
    fast, plain = random_pair(dict(double_q=True), (1, 8, 4))
    train_alike((fast, plain), 3, gradient_steps=4)
    assert_same_training_state(fast, plain, rtol=1e-5)


def test_weights_and_adam_state_are_the_kernels_arrays():
    """Parameters, the optimizer's state and the Polyak aliases are views of the arrays the kernel updates."""
    fast, _ = random_pair({}, (1, 8, 4))
    train_alike((fast,), 5)
    network = fast._fast_trainer.network
    offset = 0
    for param, state in zip(fast.q_net.parameters(), fast.policy.optimizer.state.values(), strict=True):
        size = param.numel()
        np.testing.assert_array_equal(param.detach().numpy().ravel(), network.params[offset : offset + size])
        assert param.data_ptr() == network.params[offset:].ctypes.data
        assert state["exp_avg"].data_ptr() == network.exp_avg[offset:].ctypes.data
        assert state["exp_avg_sq"].data_ptr() == network.exp_avg_sq[offset:].ctypes.data
        assert float(state["step"]) == 4 + 5
        offset += size
    assert offset == network.params.size
    saved = fast.policy.optimizer.state_dict()["state"]
    first_layer = 8 * 64 + 64
    assert th.equal(
        saved[2]["exp_avg"].reshape(-1), th.from_numpy(network.exp_avg[first_layer : first_layer + 64 * 64])
    )
    online, target = fast._polyak_pairs
    assert online[0].data_ptr() == network.params.ctypes.data and target[0].data_ptr() == network.target.ctypes.data


def test_save_load_continues_training_as_without_interruption(tmp_path):
    uninterrupted, _ = random_pair({}, (1, 8, 4))
    train_alike((uninterrupted,), 100)
    uninterrupted.save(tmp_path / "model.zip")
    loaded = quiet(SoftUpdateDQN.load(tmp_path / "model.zip", env=spaces_env()))
    loaded.replay_buffer = uninterrupted.replay_buffer  # read-only in train(); not part of model.save
    assert loaded.uses_fast_path and loaded.policy.optimizer.state_dict()["state"][0]["step"] == 104
    train_alike((uninterrupted, loaded), 100, first_seed=100)
    network = loaded._fast_trainer.network
    assert next(loaded.q_net.parameters()).data_ptr() == network.params.ctypes.data  # the loaded state was bound
    for net in ("q_net", "q_net_target"):
        for p_a, p_b in zip(getattr(uninterrupted, net).parameters(), getattr(loaded, net).parameters(), strict=True):
            assert th.equal(p_a, p_b)  # the same code on the same numbers: identical
    states = zip(uninterrupted.policy.optimizer.state.values(), loaded.policy.optimizer.state.values(), strict=True)
    for s_a, s_b in states:
        for key in ("step", "exp_avg", "exp_avg_sq"):
            assert th.equal(s_a[key], s_b[key]), key


def test_replaced_parameter_storage_and_optimizer_state_are_bound_again():
    """``param.data = ...`` and ``optimizer.load_state_dict`` swap in new memory: the next step binds it again."""
    fast, _ = random_pair({}, (1, 8, 4))
    train_alike((fast,), 3)
    trainer = fast._fast_trainer
    for param in fast.q_net.parameters():
        param.data = param.data.clone() + 1.0
    moved_bias = fast.q_net.q_net[0].bias.detach().clone()
    assert not trainer.is_bound()
    train_alike((fast,), 1, first_seed=3)
    assert trainer.is_bound()
    assert fast.q_net.q_net[0].weight.data_ptr() == trainer.network.params.ctypes.data
    assert th.allclose(fast.q_net.q_net[0].bias, moved_bias, atol=0.01)  # one Adam step (lr 1e-3) away
    assert fast._polyak_pairs[0][0].data_ptr() == trainer.network.params.ctypes.data

    fast.policy.optimizer.load_state_dict(fast.policy.optimizer.state_dict())
    assert not trainer.is_bound()
    train_alike((fast,), 1, first_seed=4)
    assert trainer.is_bound() and float(next(iter(fast.policy.optimizer.state.values()))["step"]) == 4 + 5


@pytest.mark.parametrize("dueling", [False, True])
def test_greedy_actions_match_torch(dueling):
    model, _ = random_pair(dict(dueling=dueling), (1, 8, 6))
    train_alike((model,), 20)
    observations = np.random.default_rng(1).standard_normal((2000, 8)).astype(np.float32)
    with th.no_grad():
        q = model.q_net(th.from_numpy(observations))
    top2 = q.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1] > 1e-5 * top2[:, 0].abs().clamp(min=1)).numpy()  # no near-tie
    assert clear.mean() > 0.99
    actions = model._fast_trainer.greedy_actions(observations)
    np.testing.assert_array_equal(actions[clear], q.argmax(dim=1).numpy()[clear])
    np.testing.assert_array_equal(model._fast_trainer.greedy_actions(observations[:1]), actions[:1])
