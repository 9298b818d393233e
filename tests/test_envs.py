"""LunarLander-v2 on gymnasium >= 1.0, and training envs that skip LunarLander's decorative particles."""

import gymnasium as gym
import numpy as np
import pytest

import lunar_sb3  # noqa: F401  (registers LunarLander-v2)
from lunar_sb3 import SoftUpdateDQN


def test_lunar_lander_v2_is_v3_with_the_lab_limits():
    v2, v3 = gym.spec("LunarLander-v2"), gym.spec("LunarLander-v3")
    assert v2.entry_point == v3.entry_point and v2.kwargs == v3.kwargs
    assert v2.max_episode_steps == 1000 and v2.reward_threshold == 200
    lunar_sb3.register_lunar_lander_v2()  # idempotent: leaves the existing registration alone
    assert gym.spec("LunarLander-v2") is v2


def rollout(render_mode: str | None, seed: int, steps: int = 2000) -> tuple[np.ndarray, np.ndarray, int]:
    env = gym.make("LunarLander-v2", render_mode=render_mode)
    actions = np.random.default_rng(seed).integers(0, 4, size=steps)
    obs, _ = env.reset(seed=seed)
    observations, rewards, particles_seen = [obs], [], 0
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(int(action))
        particles_seen = max(particles_seen, len(env.unwrapped.particles))
        observations.append(obs)
        rewards.append(reward)
        if terminated or truncated:
            obs, _ = env.reset()
            observations.append(obs)
    env.close()
    return np.array(observations), np.array(rewards), particles_seen


@pytest.mark.parametrize("seed", [0, 1])
def test_particles_are_decoration_only(seed):
    """Frames need the exhaust particles; the trajectory does not: it is bit-identical without them."""
    obs_drawn, rewards_drawn, particles_drawn = rollout("rgb_array", seed)
    obs_plain, rewards_plain, particles_plain = rollout(None, seed)
    assert particles_drawn > 0 and particles_plain == 0
    np.testing.assert_array_equal(obs_drawn, obs_plain)
    np.testing.assert_array_equal(rewards_drawn, rewards_plain)


def test_training_envs_simulate_no_particles():
    # SB3 alone would make a string id with render_mode="rgb_array"
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2")
    assert model.get_env().envs[0].unwrapped.render_mode is None
    # the zoo's training envs (ExperimentManager.create_envs) are made without a render mode too
    from rl_zoo3.exp_manager import ExperimentManager

    manager = ExperimentManager(args=None, algo="soft_dqn", env_id="LunarLander-v2", log_folder="unused")
    train_env = manager.create_envs(n_envs=1, no_log=True)
    assert train_env.envs[0].unwrapped.render_mode is None
    train_env.close()
