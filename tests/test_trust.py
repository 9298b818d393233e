"""Trust: the fast path computes what the plain path computes or steps aside; bad input fails in one line."""

import gymnasium as gym
import pytest
import torch as th
from stable_baselines3 import DQN
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from lunar_sb3 import SoftUpdateDQN
from lunar_sb3.soft_dqn import fast_path


def lunar_env(seed: int = 3, normalize: bool = False) -> DummyVecEnv | VecNormalize:
    env = DummyVecEnv([lambda: Monitor(gym.make("LunarLander-v2"))])
    env.seed(seed)
    return VecNormalize(env) if normalize else env


def assert_same_parameters(a: SoftUpdateDQN, b: SoftUpdateDQN) -> None:
    for p_a, p_b in zip(a.policy.parameters(), b.policy.parameters(), strict=True):
        th.testing.assert_close(p_a, p_b, rtol=0, atol=1e-5)


def train_pair(normalize: bool = False, **kwargs) -> tuple[SoftUpdateDQN, SoftUpdateDQN]:
    """The default model and a ``use_fast_path=False`` twin, seeded alike, 4,000 env steps (~1,000 updates)."""
    models = []
    for use_fast_path in (True, False):
        model = SoftUpdateDQN(
            "MlpPolicy", lunar_env(normalize=normalize), seed=3, use_fast_path=use_fast_path, **kwargs
        )
        models.append(model.learn(4000))
    return models[0], models[1]


def test_vecnormalize_trains_exactly_like_the_plain_path():
    """The agent acts on normalised observations, so it must also learn from them: no fast trainer on raw data."""
    default, plain = train_pair(normalize=True)
    assert not default.uses_fast_path and "VecNormalize" in default.fast_path_status
    assert default._n_updates == plain._n_updates > 900
    assert_same_parameters(default, plain)


def test_adamw_trains_exactly_like_the_plain_path():
    adamw = dict(optimizer_kwargs=dict(decoupled_weight_decay=True, weight_decay=0.1))
    default, plain = train_pair(policy_kwargs=adamw)
    assert not default.uses_fast_path and "decoupled_weight_decay" in default.fast_path_status
    assert_same_parameters(default, plain)
    # ...and AdamW is what ran: the decoupled decay shrinks weights differently from L2 Adam
    l2 = SoftUpdateDQN(
        "MlpPolicy", lunar_env(), seed=3, policy_kwargs=dict(optimizer_kwargs=dict(weight_decay=0.1))
    ).learn(4000)
    assert not th.allclose(next(l2.q_net.parameters()), next(default.q_net.parameters()), atol=1e-4)


@pytest.mark.parametrize(
    "policy_kwargs, reason",
    [
        (dict(optimizer_kwargs=dict(amsgrad=True)), "amsgrad"),
        (dict(optimizer_kwargs=dict(maximize=True)), "maximize"),
        (dict(optimizer_class=th.optim.AdamW), "AdamW"),
        (dict(optimizer_class=th.optim.SGD), "SGD"),
    ],
)
def test_every_unimplemented_optimizer_option_falls_back(policy_kwargs, reason):
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", policy_kwargs=policy_kwargs)
    assert not model.uses_fast_path and reason in model.fast_path_status


def test_set_env_with_vecnormalize_is_checked_where_training_starts(capsys):
    model = SoftUpdateDQN("MlpPolicy", lunar_env(), verbose=1)
    assert model.uses_fast_path
    model.set_env(lunar_env(normalize=True))
    model.learn(100)
    assert not model.uses_fast_path
    assert "general path (VecNormalize" in capsys.readouterr().out


def test_a_non_cpu_device_falls_back():
    """A CUDA machine (simulated: the check reads ``model.device``) trains on the general path."""
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2")
    model.device = th.device("cuda")
    assert fast_path.unsupported_reason(model) == "the device cuda"


@pytest.mark.parametrize("kernel", ["HAS_FUSED_ADAM", "HAS_FOREACH"])
def test_a_torch_without_the_private_kernels_still_trains(monkeypatch, kernel):
    """Neither private torch entry point is needed: a plain Adam, and the Polyak update's loop fallback."""
    monkeypatch.setattr(fast_path, kernel, False)
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", seed=0, learning_starts=0)
    model.learn(200)
    assert model.uses_fast_path and model._n_updates == 50 and model.target_updates == 50


def test_use_fast_path_false_is_saved_and_loaded(tmp_path):
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", use_fast_path=False).learn(100)
    assert not model.uses_fast_path and model.fast_path_status == "general path (use_fast_path=False)"
    model.save(tmp_path / "m")
    loaded = SoftUpdateDQN.load(tmp_path / "m", env=lunar_env())
    assert loaded.use_fast_path is False
    loaded.learn(100)
    assert not loaded.uses_fast_path


def test_load_accepts_the_policy_kwargs_it_was_trained_with(tmp_path):
    policy_kwargs = dict(net_arch=[32, 32])
    SoftUpdateDQN("MlpPolicy", "LunarLander-v2", policy_kwargs=policy_kwargs).save(tmp_path / "m")
    loaded = SoftUpdateDQN.load(tmp_path / "m", policy_kwargs=policy_kwargs)
    assert loaded.policy_kwargs == policy_kwargs  # nothing added behind the user's back (e.g. fused=True)
    assert loaded.policy.optimizer.param_groups[0]["fused"] and loaded.uses_fast_path


class LocalsRecorder(BaseCallback):
    def _on_step(self) -> bool:
        self.keys = set(self.locals)
        return True


def test_callbacks_see_the_same_locals_as_on_sb3_dqn():
    ours, theirs = LocalsRecorder(), LocalsRecorder()
    SoftUpdateDQN("MlpPolicy", lunar_env(), seed=0).learn(300, callback=ours)
    DQN("MlpPolicy", lunar_env(), seed=0).learn(300, callback=theirs)
    assert ours.keys == theirs.keys
    assert {"env", "replay_buffer", "new_obs", "infos", "self"} <= ours.keys


@pytest.mark.parametrize("k", [1, 2, 7])
def test_k_due_soft_updates_are_one_closed_form_lerp(k):
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", tau=0.05)
    online = [p.detach().double().clone() for p in model.q_net.parameters()]
    target = [th.randn_like(p) for p in model.q_net_target.parameters()]
    for p, value in zip(model.q_net_target.parameters(), target, strict=True):
        p.data.copy_(value)
    expected = [w_t.double() for w_t in target]
    for _ in range(k):  # k sequential updates w⁻ ← τ·w + (1 − τ)·w⁻, in float64
        expected = [0.05 * w + 0.95 * w_t for w, w_t in zip(online, expected, strict=True)]
    model._due_target_updates = k
    model._apply_due_target_updates()
    assert model.target_updates == k and model._due_target_updates == 0
    for p, want in zip(model.q_net_target.parameters(), expected, strict=True):
        th.testing.assert_close(p.detach().double(), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, parameter",
    [
        (dict(train_freq=0), "train_freq"),
        (dict(train_freq=(0, "step")), "train_freq"),
        (dict(train_freq=(4, "steps")), "train_freq"),
        (dict(batch_size=0), "batch_size"),
        (dict(buffer_size=0), "buffer_size"),
        (dict(learning_starts=-1), "learning_starts"),
        (dict(gradient_steps=-2), "gradient_steps"),
        (dict(gamma=1.5), "gamma"),
        (dict(learning_rate=0.0), "learning_rate"),
        (dict(n_steps=0), "n_steps"),
    ],
)
def test_counts_and_rates_out_of_range_raise_before_training(kwargs, parameter):
    """These used to hang (train_freq=0) or divide by zero (batch_size=0) on the fast path."""
    with pytest.raises(ValueError, match=rf"^SoftUpdateDQN: {parameter}="):
        SoftUpdateDQN("MlpPolicy", "LunarLander-v2", **kwargs)
