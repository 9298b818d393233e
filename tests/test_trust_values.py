"""No value that silently means something else: switches, layer widths, the env's own "solved", one-line errors."""

import errno
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from stable_baselines3 import DQN, PPO

from lunar_sb3 import SoftUpdateDQN, StopTrainingOnSolved
from lunar_sb3.callbacks import TrainingProgress
from lunar_sb3.plot import plot_learning_curve
from lunar_sb3.zoo.errors import PREFIX, is_soft_dqn_zoo_command, user_error_message
from lunar_sb3.zoo.hyperparams import read_switches, switch_names

SWITCHES = ["double_q", "dueling", "prioritized_replay", "use_fast_path", "optimize_memory_usage"]


def test_every_bool_parameter_is_a_checked_switch() -> None:
    assert switch_names() == frozenset(SWITCHES)


@pytest.mark.parametrize("name", SWITCHES)
@pytest.mark.parametrize("value", ["False", "no", 1, 0, None])
def test_switches_take_only_true_or_false(name: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"SoftUpdateDQN: {name}={value!r} is invalid; {name} must be True or False"):
        SoftUpdateDQN("MlpPolicy", "CartPole-v1", **{name: value})


def test_numpy_booleans_are_booleans() -> None:
    assert SoftUpdateDQN("MlpPolicy", "CartPole-v1", double_q=np.bool_(True)).double_q


@pytest.mark.parametrize("net_arch", [[0], [64, -1], [64.0], "64", [True]])
def test_layer_widths_are_positive_integers(net_arch: object) -> None:
    with pytest.raises(ValueError, match=r"policy_kwargs\['net_arch'\]"):
        SoftUpdateDQN("MlpPolicy", "CartPole-v1", policy_kwargs=dict(net_arch=net_arch))


def test_an_empty_net_arch_is_a_linear_q_function() -> None:
    model = SoftUpdateDQN("MlpPolicy", "CartPole-v1", policy_kwargs=dict(net_arch=[]))
    assert len([m for m in model.q_net.q_net if isinstance(m, __import__("torch").nn.Linear)]) == 1


def test_the_memory_must_hold_a_minibatch() -> None:
    with pytest.raises(ValueError, match=r"buffer_size=32 is invalid; buffer_size must be >= batch_size \(64\)"):
        SoftUpdateDQN("MlpPolicy", "CartPole-v1", buffer_size=32)
    SoftUpdateDQN("MlpPolicy", "CartPole-v1", buffer_size=64)


def test_the_zoo_reads_true_and_false_in_any_case() -> None:
    read = read_switches({"dueling": "FALSE", "double_q": " true ", "use_fast_path": "no", "loss": "false"})
    assert read == {"dueling": False, "double_q": True, "use_fast_path": "no", "loss": "false"}
    assert read["dueling"] is False and read["double_q"] is True


# --- "solved" is the env's own bar -------------------------------------------------------------------------------


def test_solved_takes_the_envs_threshold() -> None:
    cartpole = StopTrainingOnSolved(verbose=0)
    cartpole.init_callback(SoftUpdateDQN("MlpPolicy", "CartPole-v1"))
    assert cartpole.solved_threshold == 475
    lander = StopTrainingOnSolved(verbose=0)
    lander.init_callback(SoftUpdateDQN("MlpPolicy", "LunarLander-v2"))
    assert lander.solved_threshold == 200  # the lab's
    explicit = StopTrainingOnSolved(solved_threshold=250, verbose=0)
    explicit.init_callback(SoftUpdateDQN("MlpPolicy", "LunarLander-v2"))
    assert explicit.solved_threshold == 250


def test_solved_without_a_threshold_says_so() -> None:
    import gymnasium as gym

    env = gym.make("CartPole-v1")
    env.spec.reward_threshold = None
    with pytest.raises(ValueError, match="no reward threshold; pass solved_threshold"):
        StopTrainingOnSolved().init_callback(SoftUpdateDQN("MlpPolicy", env))


def summary_of(env_id: str, returns: list[float], interrupted: bool = False) -> str:
    model = SoftUpdateDQN("MlpPolicy", env_id)
    model._setup_learn(1)  # the episode-info buffer
    progress = TrainingProgress(verbose=0)
    progress.init_callback(model)
    progress.interrupted = interrupted
    model.ep_info_buffer.extend({"r": r, "l": 10} for r in returns)
    return progress.summary(model, Path(f"logs/soft_dqn/{env_id}_3/{env_id}.zip"), env_id, None)


def test_cartpole_summary_uses_475_and_suggests_no_landing_report() -> None:
    summary = summary_of("CartPole-v1", [300.0] * 100)
    assert "Not solved: the last 100 episodes average 300.0 (< 475)." in summary
    assert "lunar_sb3.evaluate" not in summary and "lunar_sb3.plot logs/soft_dqn/CartPole-v1_3" in summary
    assert "--exp-id 3" in summary


def test_lunar_lander_summary_keeps_the_lab_bar_and_the_landing_report() -> None:
    summary = summary_of("LunarLander-v2", [210.0] * 100)
    assert "Solved (training went on past it): the last 100 episodes average 210.0 (>= 200)." in summary
    assert "python -m lunar_sb3.evaluate logs/soft_dqn/LunarLander-v2_3" in summary


def test_an_interrupted_run_says_so() -> None:
    summary = summary_of("LunarLander-v2", [10.0] * 5, interrupted=True)
    assert "Interrupted (Ctrl-C) at 0 env steps; the model was saved as it was then" in summary
    assert "Training finished" not in summary


def test_progress_line_compares_with_the_envs_bar() -> None:
    model = SoftUpdateDQN("MlpPolicy", "CartPole-v1")
    model._setup_learn(1)
    progress = TrainingProgress(verbose=0)
    progress.init_callback(model)
    assert "/ 475 |" in progress.line()


def test_learning_curve_draws_the_envs_bar(tmp_path: Path, monkeypatch) -> None:
    import matplotlib.axes

    run = tmp_path / "CartPole-v1_1"
    run.mkdir()
    (run / "0.monitor.csv").write_text('#{"t_start": 0, "env_id": "CartPole-v1"}\nr,l,t\n10,10,0.1\n20,20,0.2\n')
    lines = []
    monkeypatch.setattr(matplotlib.axes.Axes, "axhline", lambda self, y, **kw: lines.append((y, kw["label"])))
    plot_learning_curve(run, tmp_path / "curve.png")
    assert lines == [(475.0, "solved (475)")]


# --- one line instead of a traceback ------------------------------------------------------------------------------


def test_only_soft_dqn_zoo_commands_get_the_one_line_errors() -> None:
    train = "/venv/lib/python3.11/site-packages/rl_zoo3/train.py"
    assert is_soft_dqn_zoo_command([train, "--algo", "soft_dqn"])
    assert is_soft_dqn_zoo_command(["-m", "--algo=soft_dqn"], ["python", "-m", "rl_zoo3.enjoy", "--algo=soft_dqn"])
    assert is_soft_dqn_zoo_command(["/venv/bin/rl_zoo3", "train", "--algo", "soft_dqn"])
    assert not is_soft_dqn_zoo_command([train, "--algo", "dqn"])
    assert not is_soft_dqn_zoo_command(["pytest", "--algo", "soft_dqn"], ["python", "-m", "pytest"])


def raised(error: BaseException) -> tuple[BaseException, object]:
    try:
        raise error
    except BaseException as caught:
        return caught, sys.exc_info()[2]


@pytest.mark.parametrize(
    "error, argv, expected",
    [
        (OSError(errno.ENOSPC, "No space left on device", "logs/x.zip"), [], "no space left on device while writing"),
        (PermissionError(errno.EACCES, "Permission denied", "/ro/logs"), [], "cannot write /ro/logs"),
        (OSError(errno.EROFS, "Read-only file system", "/mnt/logs"), [], "cannot write /mnt/logs"),
        (
            ValueError("LunarLandr-v2 not found in gym registry, you maybe meant LunarLander-v2?"),
            [],
            "--env LunarLandr-v2: no such environment; did you mean LunarLander-v2?",
        ),
        (
            AssertionError("The trained_agent must be a valid path to a .zip file"),
            ["train.py", "-i", "missing.zip"],
            "-i missing.zip: no such model file",
        ),
        (AssertionError("The logs/soft_dqn/LunarLander-v2_7 folder was not found"), [], "train first"),
        (
            ValueError("No model found for soft_dqn on LunarLander-v2, path: logs/x/best_model.zip"),
            [],
            "best_model.zip is written by",
        ),
        (zipfile.BadZipFile("File is not a zip file"), [], "damaged or incomplete"),
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "/proc/nope"), [], "no such file or folder"),
    ],
)
def test_user_errors_become_one_line(error: BaseException, argv: list[str], expected: str) -> None:
    message = user_error_message(*raised(error), argv)
    assert message is not None and expected in message and "\n" not in message


def test_bugs_keep_their_traceback() -> None:
    assert user_error_message(*raised(KeyError("q_net")), []) is None
    assert user_error_message(*raised(ValueError("some other problem")), []) is None


def test_an_unreadable_params_value_is_named() -> None:
    import argparse

    from rl_zoo3.utils import StoreDict

    parser = argparse.ArgumentParser()
    parser.add_argument("-params", nargs="+", action=StoreDict)
    try:
        parser.parse_args(["-params", "learning_rate:abc"])
    except NameError:
        message = user_error_message(*sys.exc_info()[1:], [])
    assert message is not None and "cannot read 'learning_rate:abc' as key:value" in message


def test_prefix_is_the_zoo_glues() -> None:
    assert PREFIX == "rl_zoo3 --algo soft_dqn: error: "


# --- SoftUpdateDQN.load checks the file ---------------------------------------------------------------------------


def test_load_names_what_a_wrong_file_holds(tmp_path: Path) -> None:
    PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64).save(tmp_path / "ppo")
    DQN("MlpPolicy", "CartPole-v1").save(tmp_path / "dqn")
    (tmp_path / "empty.zip").write_bytes(b"")
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ValueError, match=r"ppo.zip holds a model of another algorithm \(PPO, policy ActorCriticPolicy"):
        SoftUpdateDQN.load(tmp_path / "ppo")  # SB3 adds .zip; so does the check
    with pytest.raises(ValueError, match=r"dqn.zip holds a model of Stable-Baselines3's DQN, not soft_dqn"):
        SoftUpdateDQN.load(tmp_path / "dqn.zip")
    with pytest.raises(ValueError, match="empty.zip is an empty file"):
        SoftUpdateDQN.load(tmp_path / "empty.zip")
    with pytest.raises(ValueError, match="broken.zip is not a Stable-Baselines3 model zip, or it is damaged"):
        SoftUpdateDQN.load(tmp_path / "broken.zip")
    with pytest.raises(ValueError, match="missing.zip: no such model file"):
        SoftUpdateDQN.load(tmp_path / "missing.zip")
    SoftUpdateDQN("MlpPolicy", "CartPole-v1").save(tmp_path / "ours")
    assert isinstance(SoftUpdateDQN.load(tmp_path / "ours"), SoftUpdateDQN)


def test_progress_line_counts_the_episode_that_just_ended() -> None:
    """The 25th episode's line averages 25 returns: read from the step's infos, before SB3 files them."""
    model = SoftUpdateDQN("MlpPolicy", "CartPole-v1")
    model._setup_learn(1)
    progress = TrainingProgress(every=25, verbose=0)
    progress.init_callback(model)
    for episode in range(25):
        progress.update_locals({"dones": np.array([True]), "infos": [{"episode": {"r": float(episode), "l": 1}}]})
        progress.on_step()
    assert "mean return (last 25)    12.0 / 475" in progress.line()
