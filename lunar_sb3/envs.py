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
