"""End-to-end tests of the rl-zoo3 integration: ``--algo soft_dqn`` through the zoo's real scripts.

Every zoo command runs in a real subprocess (``sys.executable -m rl_zoo3.<script>``) so that the interpreter
start-up hook (``lunar_sb3_autoload.pth`` -> ``_lunar_sb3_autoload``) is exercised exactly as a user hits it.
One short training run is shared by the tests that need a trained agent; budgets are tiny on purpose.
"""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from zoo_helpers import check as _check
from zoo_helpers import describe as _describe
from zoo_helpers import load as _load
from zoo_helpers import run_dir as _run_dir
from zoo_helpers import zoo_env as _env

ENV_ID = "LunarLander-v2"
ALGO = "soft_dqn"
TIMEOUT = 600  # seconds per subprocess: generous, the machine is small and shared
LAB_HYPERPARAMETERS = {
    "learning_rate": 1e-3,
    "buffer_size": 100_000,
    "batch_size": 64,
    "gamma": 0.995,
    "tau": 1e-3,
    "target_update_interval": 4,
    "learning_starts": 64,
    "exploration_decay": 0.995,
    "exploration_final_eps": 0.01,
    "loss": "mse",
}


# ---------------------------------------------------------------------------------------------- helpers


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, cwd=cwd, env=env if env is not None else _env(), capture_output=True, text=True, timeout=TIMEOUT
    )


def _python(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, *args], cwd=cwd, env=env)


def _zoo(script: str, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m rl_zoo3.<script> --algo soft_dqn --env LunarLander-v2 <args>``."""
    return _python("-m", f"rl_zoo3.{script}", "--algo", ALGO, "--env", ENV_ID, *args, cwd=cwd, env=env)


def _assert_trained_with_packaged_yaml(log_folder: Path, proc: subprocess.CompletedProcess[str]) -> None:
    """The run folder is complete and the saved agent carries the lab's hyperparameters from our YAML."""
    from lunar_sb3.zoo import hyperparams_path

    run = _run_dir(log_folder)
    zip_path = run / f"{ENV_ID}.zip"
    assert zip_path.is_file(), f"{zip_path} missing; run folder holds {sorted(map(str, log_folder.rglob('*')))}\n"
    monitor = run / "0.monitor.csv"
    assert monitor.is_file(), _describe(proc)
    lines = monitor.read_text().splitlines()
    assert lines[1] == "r,l,t" and len(lines) > 2, f"monitor csv has no finished episode: {lines[:5]}"

    # rl-zoo3 announces the file it read, and saves the YAML entry it used
    assert f"Loading hyperparameters from: {hyperparams_path()}" in proc.stdout, _describe(proc)
    config = (run / ENV_ID / "config.yml").read_text()
    assert "lunar_sb3.StopTrainingOnSolved" in config, config

    model = _load(zip_path)
    for name, expected in LAB_HYPERPARAMETERS.items():
        assert getattr(model, name) == expected, f"{name}: {getattr(model, name)!r} != {expected!r}"
    assert model.policy.net_arch == [64, 64]
    assert model.num_timesteps >= 2000


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One short ``rl_zoo3.train`` run shared by the module: (log folder, finished process)."""
    folder = tmp_path_factory.mktemp("zoo_train")
    proc = _zoo("train", "-n", "2000", "--eval-freq", "-1", "-f", str(folder), "--seed", "0", cwd=folder)
    return folder, proc


# ---------------------------------------------------------------------------------------------- zoo scripts
def test_train_module_uses_packaged_hyperparameters(trained: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    folder, proc = trained
    _check(proc)
    _assert_trained_with_packaged_yaml(folder, proc)


def test_train_through_console_entry_point(tmp_path: Path) -> None:
    script = shutil.which("rl_zoo3", path=str(Path(sys.executable).parent))
    assert script is not None, f"no rl_zoo3 console script next to {sys.executable}"
    proc = _run(
        [script, "train", "--algo", ALGO, "--env", ENV_ID, "-n", "2000", "--eval-freq", "-1"]
        + ["-f", str(tmp_path), "--seed", "0"],
        cwd=tmp_path,
    )
    _check(proc)
    _assert_trained_with_packaged_yaml(tmp_path, proc)


def test_enjoy(trained: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    folder, train_proc = trained
    _check(train_proc)
    proc = _check(_zoo("enjoy", "-f", str(folder), "--no-render", "-n", "300", cwd=tmp_path))
    assert f"{ENV_ID}.zip" in proc.stdout, _describe(proc)


def test_record_video(trained: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path) -> None:
    import imageio.v2 as imageio

    folder, train_proc = trained
    _check(train_proc)
    videos = tmp_path / "videos"
    proc = _check(_zoo("record_video", "-f", str(folder), "-n", "300", "-o", str(videos), cwd=tmp_path))
    mp4s = sorted(videos.glob("*.mp4"))
    assert len(mp4s) == 1, f"{sorted(videos.rglob('*')) if videos.exists() else 'no video folder'}\n{_describe(proc)}"
    with imageio.get_reader(mp4s[0], "ffmpeg") as reader:
        frames = sum(1 for _ in reader)
    assert frames > 0, f"{mp4s[0]} decodes to no frame"


def test_optimize(tmp_path: Path) -> None:
    folder = tmp_path / "opt"
    proc = _zoo(
        "train",
        "-optimize",
        "--n-trials",
        "2",
        "-n",
        "1000",
        "--n-jobs",
        "1",
        "--sampler",
        "random",
        "--pruner",
        "none",
        "--eval-episodes",
        "2",
        "--n-evaluations",
        "1",
        "--no-optim-plots",  # plots would open a browser where plotly is installed
        "--seed",
        "0",
        "-f",
        str(folder),
        cwd=tmp_path,
    )
    _check(proc)
    assert "Number of finished trials:  2" in proc.stdout, _describe(proc)
    for trial in (0, 1):  # both samples were valid SoftUpdateDQN configurations that trained and evaluated
        assert f"Trial {trial} finished with value" in proc.stderr, _describe(proc)
    assert list((folder / ALGO).glob(f"report_{ENV_ID}_*.csv")), _describe(proc)


def test_continued_training_keeps_exploration_rate(
    trained: tuple[Path, subprocess.CompletedProcess[str]], tmp_path: Path
) -> None:
    folder, train_proc = trained
    _check(train_proc)
    first_zip = _run_dir(folder) / f"{ENV_ID}.zip"
    first = _load(first_zip)
    assert first.finished_episodes > 0 and first.exploration_rate < 1.0

    proc = _zoo(
        "train",
        "-i",
        str(first_zip),
        "-n",
        "500",
        "--eval-freq",
        "-1",
        "-f",
        str(tmp_path),
        "--seed",
        "0",
        cwd=tmp_path,
    )
    _check(proc)
    resumed = _load(_run_dir(tmp_path) / f"{ENV_ID}.zip")
    assert resumed.finished_episodes >= first.finished_episodes
    assert resumed.exploration_rate <= first.exploration_rate
    assert resumed.exploration_rate == pytest.approx(max(0.01, 0.995**resumed.finished_episodes))


# ---------------------------------------------------------------------------------------------- start-up hook
def test_autoload_off_means_zoo_does_not_know_soft_dqn(tmp_path: Path) -> None:
    proc = _zoo("train", "-n", "100", "-f", str(tmp_path), cwd=tmp_path, env=_env(LUNAR_SB3_AUTOLOAD="0"))
    assert proc.returncode != 0, _describe(proc)
    assert "invalid choice" in proc.stderr and ALGO in proc.stderr, _describe(proc)


@pytest.fixture
def unimportable_zoo(tmp_path: Path) -> Path:
    """A folder whose ``rl_zoo3`` package raises on import."""
    shadow = tmp_path / "shadow"
    (shadow / "rl_zoo3").mkdir(parents=True)
    (shadow / "rl_zoo3" / "__init__.py").write_text('raise ImportError("shadowed")\n')
    return shadow


def test_unimportable_zoo_leaves_start_up_silent(unimportable_zoo: Path, tmp_path: Path) -> None:
    proc = _check(_python("-c", "print(1)", cwd=tmp_path, env=_env(unimportable_zoo)))
    assert proc.stdout == "1\n" and proc.stderr == "", _describe(proc)


def test_unimportable_zoo_raises_its_own_error(unimportable_zoo: Path, tmp_path: Path) -> None:
    proc = _python("-c", "import rl_zoo3", cwd=tmp_path, env=_env(unimportable_zoo))
    assert proc.returncode != 0, _describe(proc)
    # The user's import fails with the zoo's own error; start-up itself (site, .pth files) did not complain
    assert proc.stderr.rstrip().splitlines()[-1] == "ImportError: shadowed", _describe(proc)
    assert "Error processing line" not in proc.stderr, _describe(proc)


@pytest.mark.parametrize(
    "modules",
    [
        pytest.param(("utils",), id="empty-utils"),
        pytest.param(("utils", "exp_manager", "hyperparams_opt"), id="utils-without-ALGOS"),
    ],
)
def test_incompatible_zoo_gives_warning_not_traceback(modules: tuple[str, ...], tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    (shadow / "rl_zoo3").mkdir(parents=True)
    for name in ("__init__", *modules):
        (shadow / "rl_zoo3" / f"{name}.py").write_text("")
    proc = _check(_python("-c", "import rl_zoo3; print('ok')", cwd=tmp_path, env=_env(shadow)))
    assert proc.stdout == "ok\n", _describe(proc)
    assert "lunar_sb3" in proc.stderr and "Warning" in proc.stderr, _describe(proc)
    assert "Traceback" not in proc.stderr, _describe(proc)
    if "exp_manager" in modules:
        assert "ALGOS" in proc.stderr, _describe(proc)


def test_start_up_hook_imports_nothing_heavy(tmp_path: Path) -> None:
    code = (
        "import sys; "
        "heavy = ('torch', 'stable_baselines3', 'gymnasium', 'lunar_sb3', 'rl_zoo3'); "
        "print(sorted(m for m in heavy if m in sys.modules)); "
        "print('_lunar_sb3_autoload' in sys.modules)"
    )
    proc = _check(_python("-c", code, cwd=tmp_path))
    assert proc.stdout.splitlines() == ["[]", "True"], _describe(proc)


# ---------------------------------------------------------------------------------------------- in-process API
def test_lunar_lander_v2_is_available_after_import() -> None:
    import gymnasium as gym

    import lunar_sb3  # noqa: F401

    env = gym.make(ENV_ID)
    try:
        obs, _ = env.reset(seed=0)
        assert obs.shape == (8,)
        assert env.action_space.n == 4
        assert env.spec is not None and env.spec.max_episode_steps == 1000
    finally:
        env.close()


def test_importing_zoo_module_registers_idempotently(tmp_path: Path) -> None:
    """With the start-up hook off, ``import lunar_sb3.zoo`` alone registers, and doing it again is harmless."""
    code = textwrap.dedent(
        """
        import importlib, json
        import rl_zoo3.exp_manager, rl_zoo3.hyperparams_opt as opt, rl_zoo3.utils as utils
        before = "soft_dqn" in utils.ALGOS
        import lunar_sb3.zoo
        import lunar_sb3.zoo  # noqa
        lunar_sb3.zoo.register()
        importlib.reload(lunar_sb3.zoo)
        from lunar_sb3 import SoftUpdateDQN
        init = rl_zoo3.exp_manager.ExperimentManager.__init__
        print(json.dumps({
            "before": before,
            "algo": utils.ALGOS["soft_dqn"] is SoftUpdateDQN,
            "sampler": "soft_dqn" in opt.HYPERPARAMS_SAMPLER,
            "converter": "soft_dqn" in opt.HYPERPARAMS_CONVERTER,
            "wrapped": getattr(init, "_lunar_sb3_wrapped", False),
            "wrapped_twice": getattr(init.__wrapped__, "_lunar_sb3_wrapped", False),
        }))
        """
    )
    proc = _check(_python("-c", code, cwd=tmp_path, env=_env(LUNAR_SB3_AUTOLOAD="0")))
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {
        "before": False,
        "algo": True,
        "sampler": True,
        "converter": True,
        "wrapped": True,
        "wrapped_twice": False,
    }, _describe(proc)
