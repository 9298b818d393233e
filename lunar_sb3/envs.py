"""Make the lab's ``LunarLander-v2`` id available on gymnasium >= 1.0, which only ships v3."""

import gymnasium as gym

LAB_ENV_ID = "LunarLander-v2"


def register_lunar_lander_v2() -> None:
    """Register ``LunarLander-v2`` with v3's dynamics unless the installed gymnasium already has it.

    gymnasium 1.0 renamed the env to v3; the only change was seeding of wind and turbulence, which the lab
    (no wind) never uses. Users who follow the lab type "v2", so the id keeps working here.
    """
    if LAB_ENV_ID in gym.envs.registry or "LunarLander-v3" not in gym.envs.registry:
        return
    v3 = gym.spec("LunarLander-v3")
    gym.register(
        id=LAB_ENV_ID,
        entry_point=v3.entry_point,
        kwargs=dict(v3.kwargs),
        max_episode_steps=1000,
        reward_threshold=200,
    )


def reward_threshold(env_id: str) -> float | None:
    """The return at which gymnasium calls ``env_id`` solved (LunarLander 200, CartPole-v1 475), or None.

    The lab's "solved" (mean of the last 100 episodes >= 200) is LunarLander's own threshold; other envs get theirs.
    """
    try:
        threshold = gym.spec(env_id).reward_threshold
    except gym.error.Error:
        return None
    return None if threshold is None else float(threshold)


def is_lunar_lander(env_id: str) -> bool:
    """Whether the landing tools (outcomes, ``lunar_sb3.evaluate``) apply: LunarLander with discrete actions."""
    try:
        spec = gym.spec(env_id)
    except gym.error.Error:
        return False
    return "lunar_lander:LunarLander" in str(spec.entry_point) and not spec.kwargs.get("continuous", False)
