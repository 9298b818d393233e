"""StopTrainingOnSolved: the lab's "solved" rule (mean of the last ``window`` training episodes >= threshold).

Most tests drive the callback with scripted rollout ``locals`` (what SB3 and the fast rollout pass: ``dones`` and
Monitor-style ``infos``), so every episode return is chosen by the test and the exact stopping episode is known.
"""

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from lunar_sb3 import SoftUpdateDQN, StopTrainingOnSolved

Episode = float | None  # the return of an episode that ends in this env at this step, or None (still running)


@pytest.fixture
def model() -> SoftUpdateDQN:
    """A tiny model: the callback only reads ``model.num_timesteps`` through ``BaseCallback.on_step``."""
    return SoftUpdateDQN("MlpPolicy", "CartPole-v1", buffer_size=10, batch_size=8, seed=0)


def attach(callback: StopTrainingOnSolved, model: SoftUpdateDQN) -> StopTrainingOnSolved:
    callback.init_callback(model)
    return callback


def monitor_info(episode_return: float, length: int = 10) -> dict[str, Any]:
    """The ``info`` of a finished episode as SB3's ``Monitor`` writes it."""
    return {"episode": {"r": episode_return, "l": length, "t": 0.1}, "TimeLimit.truncated": False}


def step(callback: StopTrainingOnSolved, model: SoftUpdateDQN, *envs: Episode) -> bool:
    """One vec-env step with ``len(envs)`` envs: the model advances, the callback sees dones and infos."""
    model.num_timesteps += len(envs)
    dones = np.array([episode is not None for episode in envs])
    infos = [monitor_info(episode) if episode is not None else {} for episode in envs]
    callback.update_locals({"dones": dones, "infos": infos})
    return callback.on_step()


def finish_episodes(callback: StopTrainingOnSolved, model: SoftUpdateDQN, returns: list[float]) -> list[bool]:
    """One env, episodes of 3 steps each (two running steps, then the end): the callback's answer per episode."""
    answers = []
    for episode_return in returns:
        assert step(callback, model, None) and step(callback, model, None)  # nothing ended: always continue
        answers.append(step(callback, model, episode_return))
    return answers


def test_does_not_stop_before_window_episodes(model: SoftUpdateDQN) -> None:
    """Even perfect returns do not count as solved until a full window of episodes exists."""
    callback = attach(StopTrainingOnSolved(solved_threshold=200, window=4, verbose=0), model)
    assert finish_episodes(callback, model, [1000.0, 1000.0, 1000.0]) == [True, True, True]
    assert callback.episodes == 3 and callback.solved_at_episode is None
    assert finish_episodes(callback, model, [1000.0]) == [False]
    assert callback.solved_at_episode == 4


def test_stops_exactly_when_the_window_mean_reaches_the_threshold(model: SoftUpdateDQN) -> None:
    """Window 3: means are -200, 100, 199, then exactly 200 at episode 5 (>= counts), not a step earlier."""
    callback = attach(StopTrainingOnSolved(solved_threshold=200, window=3, verbose=0), model)
    returns = [-600.0, 0.0, 0.0, 300.0, 297.0, 303.0]
    # windows: [-600, 0, 0] -> -200, [0, 0, 300] -> 100, [0, 300, 297] -> 199, [300, 297, 303] -> 200
    assert finish_episodes(callback, model, returns[:5]) == [True] * 5
    assert callback.solved_at_episode is None and callback.solved_at_timestep is None
    assert finish_episodes(callback, model, returns[5:]) == [False]
    assert list(callback.returns) == [300.0, 297.0, 303.0]
    assert callback.solved_at_episode == 6
    assert callback.solved_at_timestep == 6 * 3 == model.num_timesteps


def test_only_the_last_window_counts(model: SoftUpdateDQN) -> None:
    """A mean over all episodes would stop at episode 3 (466.3); every window of 2 here averages 199.5."""
    callback = attach(StopTrainingOnSolved(solved_threshold=200, window=2, verbose=0), model)
    assert finish_episodes(callback, model, [1000.0, -601.0, 1000.0, -601.0, 1000.0]) == [True] * 5
    assert finish_episodes(callback, model, [-400.0]) == [False]  # last two: (1000 - 400) / 2 = 300
    assert callback.solved_at_episode == 6


def test_records_when_it_solved_and_prints_it(model: SoftUpdateDQN, capsys: pytest.CaptureFixture[str]) -> None:
    callback = attach(StopTrainingOnSolved(solved_threshold=10, window=2, verbose=1), model)
    model.num_timesteps = 1000  # e.g. a resumed run: the timestep is the model's, not the callback's count
    assert step(callback, model, 10.0)
    assert capsys.readouterr().out == ""
    assert not step(callback, model, 12.0)
    assert (callback.solved_at_episode, callback.solved_at_timestep) == (2, 1002)
    out = capsys.readouterr().out
    assert "Solved" in out and "average 11.0 >= 10" in out and "after 2 episodes (1002 steps)" in out


def test_counts_the_episodes_of_several_envs_in_one_step(model: SoftUpdateDQN) -> None:
    callback = attach(StopTrainingOnSolved(solved_threshold=100, window=3, verbose=0), model)
    assert step(callback, model, 100.0, None, 100.0)  # two episodes end in the same vec-env step
    assert callback.episodes == 2 and list(callback.returns) == [100.0, 100.0]
    assert step(callback, model, None, None, None)
    assert not step(callback, model, None, 100.0, None)  # the third one completes the window
    assert callback.solved_at_episode == 3 and callback.solved_at_timestep == 9


def test_three_episodes_ending_together_fill_the_window_at_once(model: SoftUpdateDQN) -> None:
    callback = attach(StopTrainingOnSolved(solved_threshold=100, window=3, verbose=0), model)
    assert not step(callback, model, 50.0, 100.0, 150.0)
    assert callback.solved_at_episode == 3


def test_ignores_a_done_without_episode_statistics(model: SoftUpdateDQN) -> None:
    """A done whose info has no Monitor ``episode`` entry (e.g. an unwrapped env) is not an episode return."""
    callback = attach(StopTrainingOnSolved(solved_threshold=100, window=2, verbose=0), model)
    model.num_timesteps += 2
    callback.update_locals({"dones": np.array([True, True]), "infos": [{}, {"TimeLimit.truncated": True}]})
    assert callback.on_step()
    assert callback.episodes == 0 and len(callback.returns) == 0
    model.num_timesteps += 2
    callback.update_locals({"dones": np.array([True, True]), "infos": [monitor_info(500.0), {}]})
    assert callback.on_step()  # one real episode only: the window of 2 is not full
    assert callback.episodes == 1 and list(callback.returns) == [500.0]


def test_episode_info_without_done_is_ignored(model: SoftUpdateDQN) -> None:
    """Only envs whose episode ended in this step count, whatever their ``info`` holds."""
    callback = attach(StopTrainingOnSolved(solved_threshold=100, window=1, verbose=0), model)
    model.num_timesteps += 2
    callback.update_locals({"dones": np.array([False, True]), "infos": [monitor_info(500.0), {}]})
    assert callback.on_step()
    assert callback.episodes == 0


@pytest.mark.parametrize("window", [0, -3])
def test_window_below_one_raises(window: int) -> None:
    with pytest.raises(ValueError, match=rf"window={window} must be an integer >= 1"):
        StopTrainingOnSolved(window=window)


class FixedReturnEnv(gym.Env):
    """Episodes of 2 steps paying 1 each: every episode returns exactly 2."""

    observation_space = gym.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):  # type: ignore[no-untyped-def]
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action):  # type: ignore[no-untyped-def]
        self.t += 1
        return np.zeros(2, dtype=np.float32), 1.0, self.t >= 2, False, {}


def test_stops_a_real_learn_call() -> None:
    """Through ``learn`` (Monitor infos, the model's own rollout loop), training ends at the solving step."""
    model = SoftUpdateDQN("MlpPolicy", FixedReturnEnv(), buffer_size=100, seed=0)
    callback = StopTrainingOnSolved(solved_threshold=2, window=5, verbose=0)
    model.learn(1000, callback=callback)
    assert callback.solved_at_episode == 5
    assert callback.solved_at_timestep == 10 == model.num_timesteps
