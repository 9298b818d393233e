"""Say *how* a LunarLander episode ended, not just what it scored.

The return alone hides failure modes: a -100 can be a crash or a drift off screen, and a return near 200 can be
a landing beside the pad. ``LandingOutcome`` reads the simulator's own state when an episode ends and writes a
label and the episode's engine use into the final step's ``info``, so evaluations can report them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium.envs.box2d.lunar_lander import SCALE, VIEWPORT_W, LunarLander

OUTCOMES: tuple[str, ...] = ("landed", "landed_off_pad", "crashed", "out_of_bounds", "timeout")
"""Every value ``info["outcome"]`` can take, in the order reports list them."""

# Half the world's width in Box2D units: the env's observation x is (body x - half width) / half width.
_HALF_WORLD_WIDTH = VIEWPORT_W / SCALE / 2


class LandingOutcome(gym.Wrapper):
    """Add ``outcome``, ``main_engine_fires`` and ``side_engine_fires`` to the ``info`` of an episode's last step.

    Outcomes are checked in this order (the first that holds wins):

    * ``"crashed"``: the env's ``game_over`` flag, set when the lander's body (not a leg) touched the ground;
    * ``"out_of_bounds"``: |observation x| >= 1, the env's own off-screen termination;
    * ``"landed"``: the lander came to rest (Box2D put it to sleep, ``lander.awake`` is False) with both legs
      touching the ground and its body x between the flags (``helipad_x1 <= x <= helipad_x2``, i.e. |observation
      x| <= the pad's half-width, as the pad is centred);
    * ``"landed_off_pad"``: at rest, but not with both legs down between the flags;
    * ``"timeout"``: none of the above, i.e. cut short while still flying (normally by ``TimeLimit``).

    Engine fires are counted per step from the action, with the env's thresholds: discrete action 2 fires the
    main engine and 1 or 3 a side engine; a continuous action fires the main engine when ``action[0] > 0`` and a
    side engine when ``|action[1]| > 0.5``. They are the fuel the episode used.

    The wrapper only reads state: rewards, observations and dynamics are untouched. It reads the simulator through
    ``env.unwrapped``, so it can sit outside ``TimeLimit``/``Monitor``; it must sit outside ``TimeLimit`` to see
    timeouts at all.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        if not isinstance(env.unwrapped, LunarLander):
            raise TypeError(f"LandingOutcome needs a LunarLander env, got {type(env.unwrapped).__name__}")
        self.lunar_lander: LunarLander = env.unwrapped
        self.main_engine_fires = 0
        self.side_engine_fires = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        self.main_engine_fires = 0
        self.side_engine_fires = 0
        return super().reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        main, side = self._engines_fired(action)
        self.main_engine_fires += main
        self.side_engine_fires += side
        if terminated or truncated:
            info = {
                **info,
                "outcome": self._outcome(),
                "main_engine_fires": self.main_engine_fires,
                "side_engine_fires": self.side_engine_fires,
            }
        return obs, reward, terminated, truncated, info

    def _engines_fired(self, action: Any) -> tuple[bool, bool]:
        """Which engines ``action`` fired, decided exactly as ``LunarLander.step`` decides it."""
        if self.lunar_lander.continuous:
            throttle = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
            return bool(throttle[0] > 0.0), bool(abs(throttle[1]) > 0.5)
        discrete = int(action)
        return discrete == 2, discrete in (1, 3)

    def _outcome(self) -> str:
        """Classify the simulator's state right after the final step."""
        ll = self.lunar_lander
        body_x = ll.lander.position.x
        if ll.game_over:
            return "crashed"
        if abs((body_x - _HALF_WORLD_WIDTH) / _HALF_WORLD_WIDTH) >= 1.0:
            return "out_of_bounds"
        if not ll.lander.awake:
            both_legs_down = all(_touches_ground(leg) for leg in ll.legs)
            return "landed" if both_legs_down and ll.helipad_x1 <= body_x <= ll.helipad_x2 else "landed_off_pad"
        return "timeout"


def _touches_ground(leg: Any) -> bool:
    """Whether Box2D has a touching contact on ``leg`` (legs collide with nothing but the terrain).

    Not ``leg.ground_contact``: the env's contact listener keeps one boolean per leg, so when a leg that stands on
    two terrain edges ends its contact with one of them, the flag (and observation[6:8]) reads False although the
    leg still stands; the heuristic's seed-0 landing comes to rest with both flags False.
    """
    return any(edge.contact.touching for edge in leg.contacts)


def greedy_episode(
    model: Any,
    env: gym.Env,
    seed: int,
    vec_normalize: Any = None,
    on_step: Callable[[int, bool], None] | None = None,
) -> tuple[float, int, dict[str, Any]]:
    """Play one greedy episode reset with ``seed``: (return, length, last info).

    The one loop behind evaluation and the landing GIF, so both play exactly the same episodes. Observations go
    through ``vec_normalize`` (frozen statistics of a normalized run) before the model sees them;
    ``on_step(step, done)`` is called after every step (the GIF renders a frame there).
    """
    obs, _ = env.reset(seed=seed)
    episode_return, length, done, info = 0.0, 0, False, {}
    while not done:
        model_obs = obs if vec_normalize is None else vec_normalize.normalize_obs(obs)
        action, _ = model.predict(model_obs, deterministic=True)
        obs, reward, terminated, truncated, info = env.step(action)
        episode_return += float(reward)
        length += 1
        done = terminated or truncated
        if on_step is not None:
            on_step(length, done)
    return episode_return, length, info


def greedy_episodes(
    model: Any, make_env: Callable[[], gym.Env], seeds: list[int], vec_normalize: Any = None
) -> list[tuple[float, int, dict[str, Any]]]:
    """Play one greedy episode per seed, all side by side: [(return, length, last info)] in the order of ``seeds``.

    The same episodes as :func:`greedy_episode` one after the other, with one ``predict`` per step for all the
    episodes still running instead of one per episode and step: evaluating 100 episodes of a lander that hovers
    until the time limit (100,000 env steps) takes seconds, not half a minute. A batched forward may round the
    last bit of a Q-value differently from a single one, so an action can differ only where two Q-values tie to
    float precision.
    """
    envs = [make_env() for _ in seeds]
    try:
        observations = [env.reset(seed=seed)[0] for env, seed in zip(envs, seeds, strict=True)]
        results: list[tuple[float, int, dict[str, Any]] | None] = [None] * len(seeds)
        returns, lengths = [0.0] * len(seeds), [0] * len(seeds)
        running = list(range(len(seeds)))
        while running:
            batch = np.stack([observations[i] for i in running])
            if vec_normalize is not None:
                batch = vec_normalize.normalize_obs(batch)
            actions, _ = model.predict(batch, deterministic=True)
            still_running = []
            for i, action in zip(running, actions, strict=True):
                observations[i], reward, terminated, truncated, info = envs[i].step(action)
                returns[i] += float(reward)
                lengths[i] += 1
                if terminated or truncated:
                    results[i] = (returns[i], lengths[i], info)
                else:
                    still_running.append(i)
            running = still_running
        return results  # type: ignore[return-value]
    finally:
        for env in envs:
            env.close()
