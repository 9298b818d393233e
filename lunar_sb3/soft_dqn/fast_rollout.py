"""Lean experience collection for SoftUpdateDQN: SB3's ``collect_rollouts`` without its per-step overhead.

It makes the same random calls in the same order as SB3's rollout loop (warm-up sampling, ε test, random
actions), stores the same transitions, keeps the callback contract (``update_locals`` + ``on_step`` after every
vec-env step, ``False`` stops training) and the Monitor statistics and logs. What it skips is the work a
1-D observation, discrete-action, un-normalised env does not need: ``deepcopy`` of observations and infos,
``predict``'s input checks, per-step ``info`` scans when no episode ended, and torch for a batch-of-one forward.

Transitions are written into the buffer's arrays as ``ReplayBuffer.add`` writes them (``NStepReplayBuffer`` adds
nothing to that: its n-step returns are computed when sampling). ``PrioritizedReplayBuffer.add`` also gives the new
row the largest priority seen so far, so that it is replayed soon; that is done here with the buffer's own
``give_max_priority``: without it the new transitions would keep priority 0 and never be sampled.
"""

from typing import TYPE_CHECKING

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.type_aliases import RolloutReturn, TrainFreq, TrainFrequencyUnit
from stable_baselines3.common.utils import should_collect_more_steps
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from lunar_sb3.soft_dqn.prioritized import PrioritizedReplayBuffer

if TYPE_CHECKING:
    from lunar_sb3.soft_dqn.soft_dqn import SoftUpdateDQN


def covers(model: "SoftUpdateDQN", train_freq: TrainFreq) -> bool:
    """The lean loop needs the fast trainer's setting plus a plain (un-normalised, step-counted) rollout."""
    return (
        model._fast_trainer is not None
        and model._vec_normalize_env is None
        and model.action_noise is None
        and train_freq.unit == TrainFrequencyUnit.STEP
    )


def _actions(model: "SoftUpdateDQN", n_envs: int, learning_starts: int) -> np.ndarray:
    """ε-greedy actions for all envs, drawing random numbers exactly as SB3's ``_sample_action`` does."""
    if model.num_timesteps < learning_starts:  # warm-up: uniform random actions
        return np.array([model.action_space.sample() for _ in range(n_envs)])
    if np.random.rand() < model.exploration_rate:  # explore: one coin for the whole batch, as DQN.predict
        return np.array([model.action_space.sample() for _ in range(n_envs)])
    return model._fast_trainer.greedy_actions(model._last_obs)  # exploit: one forward for all envs


def _step_envs(env: VecEnv, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict]]:
    """``env.step(actions)``; for a plain ``DummyVecEnv``, the same steps without its defensive copies.

    ``DummyVecEnv.step_wait`` deep-copies every ``info`` dict and copies its observation buffer, which costs
    nearly as much as the LunarLander step itself. Here every step builds fresh arrays and passes on the
    dicts the envs just returned, so nothing is shared between steps and there is nothing to copy.
    """
    if type(env) is not DummyVecEnv:
        return env.step(actions)
    n_envs = env.num_envs
    observations = np.empty((n_envs, *env.observation_space.shape), dtype=env.observation_space.dtype)
    rewards = np.empty(n_envs, dtype=np.float32)
    dones = np.empty(n_envs, dtype=bool)
    infos = []
    for i, sub_env in enumerate(env.envs):
        obs, rewards[i], terminated, truncated, info = sub_env.step(actions[i])
        dones[i] = terminated or truncated
        info["TimeLimit.truncated"] = truncated and not terminated
        if dones[i]:  # auto-reset, keeping the last observation where SB3 keeps it
            info["terminal_observation"] = obs
            obs, env.reset_infos[i] = sub_env.reset()
        observations[i] = obs
        infos.append(info)
    return observations, rewards, dones, infos


def collect_rollouts(
    model: "SoftUpdateDQN",
    env: VecEnv,
    callback: BaseCallback,
    train_freq: TrainFreq,
    learning_starts: int,
    log_interval: int | None,
) -> RolloutReturn:
    buffer = model.replay_buffer
    n_envs = env.num_envs
    prioritized = isinstance(buffer, PrioritizedReplayBuffer)
    num_collected_steps, num_collected_episodes = 0, 0
    # What callbacks see: the names and values of SB3's rollout locals, so a callback written for DQN works here
    rollout_locals = dict(
        self=model,
        env=env,
        callback=callback,
        train_freq=train_freq,
        replay_buffer=buffer,
        action_noise=None,
        learning_starts=learning_starts,
        log_interval=log_interval,
        num_collected_steps=0,
        num_collected_episodes=0,
        continue_training=True,
    )
    callback.on_rollout_start()
    while should_collect_more_steps(train_freq, num_collected_steps, num_collected_episodes):
        actions = _actions(model, n_envs, learning_starts)
        new_obs, rewards, dones, infos = _step_envs(env, actions)
        model.num_timesteps += n_envs
        num_collected_steps += 1

        rollout_locals.update(
            num_collected_steps=num_collected_steps,
            num_collected_episodes=num_collected_episodes,
            actions=actions,
            buffer_actions=actions,  # discrete actions are stored as taken
            new_obs=new_obs,
            rewards=rewards,
            dones=dones,
            infos=infos,
        )
        callback.update_locals(rollout_locals)
        if not callback.on_step():
            return RolloutReturn(num_collected_steps * n_envs, num_collected_episodes, continue_training=False)

        any_done = dones.any()
        if any_done:  # Monitor puts episode statistics into `info` only when an episode ends
            model._update_info_buffer(infos, dones)

        # Store (s, a, r, s′, done); for a finished episode s′ is the terminal observation, not the reset one
        next_obs = new_obs
        timeouts = False
        if any_done:
            next_obs = new_obs.copy()
            for i in np.flatnonzero(dones):
                if infos[i].get("terminal_observation") is not None:
                    next_obs[i] = infos[i]["terminal_observation"]
            timeouts = [info.get("TimeLimit.truncated", False) for info in infos]
        pos = buffer.pos
        buffer.observations[pos] = model._last_obs
        buffer.next_observations[pos] = next_obs
        buffer.actions[pos] = actions.reshape(n_envs, -1)
        buffer.rewards[pos] = rewards
        buffer.dones[pos] = dones
        if buffer.handle_timeout_termination:
            buffer.timeouts[pos] = timeouts
        if prioritized:  # what PrioritizedReplayBuffer.add does after storing the row: max priority for its slots
            buffer.give_max_priority(pos)
        buffer.pos += 1
        if buffer.pos == buffer.buffer_size:
            buffer.full, buffer.pos = True, 0
        model._last_obs = new_obs

        model._update_current_progress_remaining(model.num_timesteps, model._total_timesteps)
        model._on_step()

        # SB3's loop `for idx, done in enumerate(dones)` leaves these two in its locals for the next step
        rollout_locals["idx"], rollout_locals["done"] = n_envs - 1, dones[-1]
        if any_done:
            for _ in range(int(np.count_nonzero(dones))):
                num_collected_episodes += 1
                model._episode_num += 1
                if log_interval is not None and model._episode_num % log_interval == 0:
                    model.dump_logs()
    callback.on_rollout_end()
    return RolloutReturn(num_collected_steps * n_envs, num_collected_episodes, continue_training=True)
