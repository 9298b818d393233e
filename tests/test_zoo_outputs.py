"""What ``rl_zoo3`` scripts write for ``--algo soft_dqn``: evaluations and best model, the saved configuration of
a custom ``-conf``/``-params`` run, and videos in which the lander's exhaust is drawn.

Every zoo command runs in a real subprocess (``sys.executable -m rl_zoo3.<script>``), as a user runs it; budgets
are tiny on purpose. One custom-configuration run is shared by the configuration and the video tests.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from zoo_helpers import check as _check
from zoo_helpers import describe as _describe
from zoo_helpers import load as _load
from zoo_helpers import run_dir as _run_dir
from zoo_helpers import zoo_env as _env

ENV_ID = "LunarLander-v2"
ALGO = "soft_dqn"
TIMEOUT = 600  # seconds per subprocess: generous, the machine is small and shared


# ---------------------------------------------------------------------------------------------- helpers


def _zoo(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m rl_zoo3.<script> --algo soft_dqn --env LunarLander-v2 <args>``."""
    command = [sys.executable, "-m", f"rl_zoo3.{script}", "--algo", ALGO, "--env", ENV_ID, *args]
    return subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT)


def exhaust_pixels(frame: np.ndarray) -> int:
    """Pixels in the colour of LunarLander's exhaust particles: red well above green and blue, green ≈ blue.

    Particles are drawn as (255·(0.15 + ttl), 255·ttl/2, 255·ttl/2); nothing else in the scene is red (the lander
    is purple, the flags yellow, sky black, ground white), which ``test_exhaust_colour_only_comes_from_particles``
    checks on raw frames.
    """
    r, g, b = (frame[..., channel].astype(int) for channel in range(3))
    return int(np.count_nonzero((r - g > 60) & (r - b > 60) & (np.abs(g - b) < 40)))


# ---------------------------------------------------------------------------------------------- evaluations
def test_eval_freq_writes_evaluations_and_best_model(tmp_path: Path) -> None:
    """``--eval-freq 500`` over 1500 steps: three evaluations of 2 episodes each, and the best of them saved."""
    logs = tmp_path / "logs"
    _check(
        _zoo(
            "train",
            *("-n", "1500", "--eval-freq", "500", "--eval-episodes", "2"),
            *("-f", str(logs), "--seed", "0", "--num-threads", "1"),
            cwd=tmp_path,
        )
    )
    run = _run_dir(logs)
    with np.load(run / "evaluations.npz") as evaluations:
        timesteps, results, lengths = evaluations["timesteps"], evaluations["results"], evaluations["ep_lengths"]
    assert timesteps.tolist() == [500, 1000, 1500]
    assert results.shape == lengths.shape == (3, 2)
    assert np.all(np.isfinite(results))
    assert np.all((lengths >= 1) & (lengths <= 1000))  # LunarLander's time limit

    best = _load(run / "best_model.zip")
    # EvalCallback saves a model when an evaluation's mean beats all earlier ones: the first maximum
    assert best.num_timesteps == timesteps[int(np.argmax(results.mean(axis=1)))]
    final = _load(run / f"{ENV_ID}.zip")
    assert final.num_timesteps == 1500


# ---------------------------------------------------------------------------------------------- custom configuration
CUSTOM_YAML = """\
LunarLander-v2:
  n_timesteps: 600
  policy: 'MlpPolicy'
  tau: 0.005
  learning_starts: 100
"""


@pytest.fixture(scope="module")
def custom_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, subprocess.CompletedProcess[str]]:
    """``-conf my.yml -params exploration_decay:0.9 gamma:0.99``: (work folder, run folder, finished process)."""
    folder = tmp_path_factory.mktemp("zoo_custom")
    (folder / "my.yml").write_text(CUSTOM_YAML)
    proc = _zoo(
        "train",
        *("-conf", str(folder / "my.yml"), "-params", "exploration_decay:0.9", "gamma:0.99"),
        *("--eval-freq", "-1", "-f", str(folder / "logs"), "--seed", "0", "--num-threads", "1"),
        cwd=folder,
    )
    return folder, _run_dir(folder / "logs"), proc


def test_custom_conf_and_params_reach_config_and_model(
    custom_run: tuple[Path, Path, subprocess.CompletedProcess[str]],
) -> None:
    """The YAML given with ``-conf`` replaces the packaged one, ``-params`` overrides it, and both are saved."""
    folder, run, proc = custom_run
    _check(proc)
    assert f"Loading hyperparameters from: {folder / 'my.yml'}" in proc.stdout, _describe(proc)

    config = yaml.load((run / ENV_ID / "config.yml").read_text(), Loader=yaml.UnsafeLoader)  # an OrderedDict
    assert dict(config) == {
        "n_timesteps": 600,
        "policy": "MlpPolicy",
        "tau": 0.005,
        "learning_starts": 100,
        "exploration_decay": 0.9,
        "gamma": 0.99,
    }  # and no packaged entry such as the StopTrainingOnSolved callback

    model = _load(run / f"{ENV_ID}.zip")
    for name, value in {"tau": 0.005, "exploration_decay": 0.9, "gamma": 0.99, "learning_starts": 100}.items():
        assert getattr(model, name) == value, name
    assert model.num_timesteps == 600
    # what neither file names keeps the lab's default
    assert (model.target_update_interval, model.batch_size, model.loss) == (4, 64, "mse")
    assert model.exploration_rate == pytest.approx(max(0.01, 0.9**model.finished_episodes), rel=1e-12)


# ---------------------------------------------------------------------------------------------- exhaust in videos
def test_exhaust_colour_only_comes_from_particles() -> None:
    """The env record_video builds (``create_test_env`` with render_mode="rgb_array") simulates and draws exhaust.

    LunarLander creates particles in ``step`` only when ``render_mode`` is set: an env made without it (as
    SoftUpdateDQN makes one for training from an env id) has no exhaust to draw. Also calibrates
    ``exhaust_pixels``: zero on frames without particles, positive once the main engine fires.
    """
    import gymnasium as gym
    from rl_zoo3.utils import create_test_env

    import lunar_sb3  # noqa: F401  (registers LunarLander-v2)

    # the arguments rl_zoo3.record_video passes for a run without saved env_kwargs
    env = create_test_env(
        ENV_ID,
        n_envs=1,
        stats_path=None,
        seed=0,
        log_dir=None,
        should_render=True,
        hyperparams={},
        env_kwargs={"render_mode": "rgb_array"},
    )
    lander = env.envs[0].unwrapped  # type: ignore[attr-defined]
    assert lander.render_mode == "rgb_array"
    env.reset()
    for _ in range(10):  # engines off: only the lander, legs, flags, sky and ground
        env.step(np.array([0]))
        assert not lander.particles and exhaust_pixels(env.render()) == 0
    for _ in range(5):  # main engine
        env.step(np.array([2]))
    assert len(lander.particles) >= 5
    assert exhaust_pixels(env.render()) >= 20
    env.close()

    training_env = gym.make(ENV_ID)  # no render_mode: the physics without the decoration
    training_env.reset(seed=0)
    for _ in range(5):
        training_env.step(2)
    assert training_env.unwrapped.particles == []
    training_env.close()


def test_record_video_shows_the_exhaust(
    custom_run: tuple[Path, Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    """Decoded frames of ``rl_zoo3.record_video`` contain exhaust particles.

    ``--stochastic`` makes the barely trained agent act ε-greedily (ε = 0.9^episodes ≈ 0.6 after 600 steps), so
    engines fire in many of the 200 steps whatever its greedy action is.
    """
    import imageio.v2 as imageio

    folder, _, train_proc = custom_run
    _check(train_proc)
    videos = tmp_path / "videos"
    proc = _check(
        _zoo("record_video", "-f", str(folder / "logs"), "-n", "200", "--stochastic", "-o", str(videos), cwd=tmp_path)
    )
    mp4s = sorted(videos.glob("*.mp4"))
    assert len(mp4s) == 1, _describe(proc)
    with imageio.get_reader(mp4s[0], "ffmpeg") as reader:
        counts = [exhaust_pixels(frame) for frame in reader]
    assert len(counts) >= 200
    assert counts[0] == 0  # the first frame, before any engine fired
    frames_with_exhaust = sum(count >= 3 for count in counts)
    assert frames_with_exhaust >= 20, f"exhaust pixels per frame: {counts}"
