"""``rl_zoo3.train --algo soft_dqn`` as a user meets it: crashes, Ctrl-C, bad input, a busy laptop, progress.

Every command runs in a real subprocess with a tiny budget; nothing here asserts a time.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from subprocess import PIPE

import optuna
import pytest

from lunar_sb3 import SoftUpdateDQN
from lunar_sb3.checkpoints import is_intact, newest_intact_checkpoint, replay_buffer_of

ENV_ID = "LunarLander-v2"
TIMEOUT = 600


def _env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("LUNAR_SB3_AUTOLOAD", None)
    env.update(PYTHONHASHSEED="0", MPLBACKEND="Agg", SDL_VIDEODRIVER="dummy", **overrides)
    return env


def _command(script: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"rl_zoo3.{script}", "--algo", "soft_dqn", "--env", ENV_ID, *args]


def _zoo(script: str, *args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _command(script, *args), cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=TIMEOUT
    )


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"training ended before {path.name} appeared"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.2)


def test_sigkill_loses_only_the_steps_since_the_last_checkpoint(tmp_path):
    run = tmp_path / "logs" / "soft_dqn" / f"{ENV_ID}_1"
    args = ("-n", "200000", "--save-freq", "1000", "-f", "logs", "--seed", "0", "--eval-freq", "-1")
    training = subprocess.Popen(
        _command("train", *args), cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_for(run / "rl_model_4000_steps.complete", training)  # checkpoint 4000 is whole once marked
        training.send_signal(signal.SIGKILL)
        training.wait(timeout=60)
    finally:
        training.kill()
    assert not (run / f"{ENV_ID}.zip").exists()  # killed: nothing saved at the end
    newest = newest_intact_checkpoint(run)
    assert newest is not None and int(newest.name.split("_")[2]) >= 4000
    assert not list(run.glob(".partial-*")) or not is_intact(newest.with_name(".partial-" + newest.name))
    steps = int(newest.name.split("_")[2])
    checkpoint = SoftUpdateDQN.load(newest)
    assert checkpoint.num_timesteps == steps and checkpoint.finished_episodes > 10
    # by default only the newest intact checkpoint keeps its replay memory (older ones are pruned)
    assert replay_buffer_of(newest).exists() and not replay_buffer_of(run / "rl_model_1000_steps.zip").exists()

    resumed = _zoo(
        "train",
        *("-i", str(newest), "-n", "1000", "-f", "logs", "--seed", "1"),
        *("--eval-freq", "-1", "--save-replay-buffer", "--save-freq", "500"),
        cwd=tmp_path,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Loading replay buffer" in resumed.stdout
    final_run = tmp_path / "logs" / "soft_dqn" / f"{ENV_ID}_2"
    final = SoftUpdateDQN.load(final_run / f"{ENV_ID}.zip")
    assert final.num_timesteps == steps + 1000  # the step counter continues
    assert final.finished_episodes > checkpoint.finished_episodes  # so does the episode count...
    assert final.exploration_rate == pytest.approx(max(0.01, 0.995**final.finished_episodes))  # ...and ε with it
    # the resumed run's own checkpoints are named by the continued counter, and hold a model, not a whole process
    assert (final_run / f"rl_model_{steps + 500}_steps.zip").stat().st_size < 1_000_000
    final.load_replay_buffer(final_run / "replay_buffer.pkl")
    # The checkpoint's memory plus the new 1000; SB3's CheckpointCallback runs before the checkpoint step's
    # transition is stored, so the checkpoint holds one less (that one transition is the loss, as with SB3's DQN)
    assert final.replay_buffer.size() == steps - 1 + 1000


def test_ctrl_c_saves_the_model(tmp_path):
    run = tmp_path / "logs" / "soft_dqn" / f"{ENV_ID}_1"
    args = ("-n", "200000", "--save-freq", "1000", "-f", "logs", "--seed", "0", "--eval-freq", "-1")
    training = subprocess.Popen(
        _command("train", *args), cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_for(run / "rl_model_2000_steps.zip", training)
        training.send_signal(signal.SIGINT)
        stdout, stderr = training.communicate(timeout=120)
    finally:
        training.kill()
    assert training.returncode == 0, stderr[-2000:]
    model = SoftUpdateDQN.load(run / f"{ENV_ID}.zip")
    assert model.num_timesteps >= 2000
    assert f"Model: logs/soft_dqn/{ENV_ID}_1/{ENV_ID}.zip" in stdout
    assert f"Interrupted (Ctrl-C) at {model.num_timesteps:,} env steps" in stdout and "Training finished" not in stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["-params", "exploration_decy:0.9"], "unknown hyperparameter 'exploration_decy'"),
        (["-params", "tau:5"], "tau=5 is invalid"),
        (["-params", "train_freq:0"], "train_freq=0 is invalid"),
        (["-conf", "/nonexistent.yml"], "-conf /nonexistent.yml: no such file"),
        (["--env", "Pendulum-v1"], "only supports"),
        (["--trial-id", "0"], "--trial-id 0 needs --storage"),
        (["-i", "random.zip"], "random.zip is not a Stable-Baselines3 model zip"),
        (["-i", "ppo.zip"], "holds a model of another algorithm (PPO"),
        (["-i", "missing.zip"], "-i missing.zip: no such model file"),
        (["--env", "LunarLandr-v2"], "--env LunarLandr-v2: no such environment; did you mean LunarLander-v2?"),
        (["-params", "learning_rate:abc"], "cannot read 'learning_rate:abc' as key:value"),
        (["-params", "dueling:'maybe'"], "dueling='maybe' is invalid; dueling must be True or False"),
        (["-n", "0"], "-n 0: the number of env steps must be >= 1"),
        (["-n", "-5"], "-n -5: the number of env steps must be >= 1"),
        (["-f", "a_file/logs"], "cannot write a_file/logs"),
        (["-params", "keep_replay_buffers:'x'"], "keep_replay_buffers='x' must be -1 (all), 0 (none)"),
    ],
    ids=[
        *("typo", "tau", "train_freq", "conf", "continuous-env", "trial-id", "random-bytes", "ppo-model"),
        *("missing-model", "env-typo", "not-python", "not-a-switch", "n-zero", "n-negative", "unwritable-f"),
        "keep-replay-buffers",
    ],
)
def test_bad_input_stops_with_one_line(tmp_path, args, message):
    """Exit status 1, the problem in one line, no traceback, and no run folder left behind."""
    (tmp_path / "random.zip").write_bytes(os.urandom(2048))
    (tmp_path / "a_file").write_text("")
    if "ppo.zip" in args:
        from stable_baselines3 import PPO

        PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64).save(tmp_path / "ppo.zip")
    result = _zoo("train", "-n", "200", "-f", "logs", *args, cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("rl_zoo3 --algo soft_dqn: error:") and message in last_line
    assert not list(tmp_path.rglob(f"{ENV_ID}.zip"))
    assert not list(tmp_path.glob("logs/soft_dqn/*"))  # a rejected command claims no run folder


def test_false_spelled_as_text_is_false(tmp_path):
    result = _zoo("train", "-n", "200", "-f", "logs", "--eval-freq", "-1", "-params", "dueling:'FALSE'", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert SoftUpdateDQN.load(tmp_path / "logs" / "soft_dqn" / f"{ENV_ID}_1" / f"{ENV_ID}.zip").dueling is False


def test_ten_runs_started_together_get_ten_folders(tmp_path):
    """Runs started in the same second with one -f claim distinct run folders (create-or-fail, next number)."""
    args = ("-n", "300", "-f", "logs", "--eval-freq", "-1", "--seed", "0")
    starts = [
        subprocess.Popen(_command("train", *args), cwd=tmp_path, env=_env(), stdout=PIPE, stderr=PIPE)
        for _ in range(10)
    ]
    outputs = [process.communicate(timeout=TIMEOUT) for process in starts]
    assert all(process.returncode == 0 for process in starts), outputs[0][1][-2000:]
    runs = sorted((tmp_path / "logs" / "soft_dqn").iterdir())
    assert [run.name for run in runs] == sorted(f"{ENV_ID}_{i}" for i in range(1, 11))
    saved_to = {line for out, _ in outputs for line in out.decode().splitlines() if line.startswith("Saving to")}
    assert len(saved_to) == 10
    for run in runs:  # each folder holds one whole run: its model and its own monitor file
        assert (run / f"{ENV_ID}.zip").is_file() and len(list(run.glob("*.monitor.csv"))) == 1


@pytest.mark.parametrize("script", ["enjoy", "record_video"])
def test_enjoy_and_record_video_name_a_wrong_model_in_the_last_line(tmp_path, script):
    from stable_baselines3 import PPO

    run = tmp_path / "logs" / "soft_dqn" / f"{ENV_ID}_1"
    (run / ENV_ID).mkdir(parents=True)
    PPO("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=64).save(run / f"{ENV_ID}.zip")
    result = _zoo(script, "-f", "logs", "--no-render", "-n", "10", cwd=tmp_path)
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("rl_zoo3 --algo soft_dqn: error:")
    assert "holds a model of another algorithm (PPO" in last_line
    assert "Traceback" not in result.stderr


def test_trial_zero_trains_with_its_hyperparameters(tmp_path):
    """rl-zoo3 tests ``--trial-id`` for truthiness and would silently ignore trial 0."""
    storage = tmp_path / "study.log"
    study = optuna.create_study(
        study_name="s", storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(storage)))
    )
    distributions = {
        "tau": optuna.distributions.FloatDistribution(1e-4, 2e-2, log=True),
        "batch_size": optuna.distributions.CategoricalDistribution([32, 64, 128, 256]),
    }
    study.add_trial(
        optuna.trial.create_trial(params={"tau": 0.0123, "batch_size": 32}, distributions=distributions, value=1.0)
    )
    result = _zoo(
        "train",
        *("-n", "300", "-f", "logs", "--eval-freq", "-1", "--storage", str(storage), "--study-name", "s"),
        *("--trial-id", "0", "-params", "use_fast_path:False", "batch_size:128"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    model = SoftUpdateDQN.load(tmp_path / "logs" / "soft_dqn" / f"{ENV_ID}_1" / f"{ENV_ID}.zip")
    assert model.tau == 0.0123  # from trial 0
    assert model.batch_size == 128  # -params still wins over the trial, as in the zoo
    assert model.use_fast_path is False  # settable from the zoo, saved with the model


THREAD_PROBE = '''
import os
from pathlib import Path

import torch
from stable_baselines3.common.callbacks import BaseCallback


class ThreadProbe(BaseCallback):
    """Writes the number of torch threads the training process really uses."""

    def _on_training_start(self) -> None:
        Path(os.environ["THREAD_PROBE_FILE"]).write_text(str(torch.get_num_threads()))

    def _on_step(self) -> bool:
        return True
'''


def test_one_torch_thread_beside_a_busy_process_with_progress_and_summary(tmp_path):
    """The zoo runs soft_dqn with one torch thread unless --num-threads says otherwise (a busy core made two
    spin-waiting OpenMP threads ~40x slower); the run prints compact progress lines and a summary."""
    (tmp_path / "threadprobe.py").write_text(textwrap.dedent(THREAD_PROBE))
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        result = _zoo(
            "train",
            *("-n", "3000", "-f", "logs", "--eval-freq", "-1", "--seed", "0"),
            *("-params", "callback:['lunar_sb3.StopTrainingOnSolved','threadprobe.ThreadProbe']"),
            cwd=tmp_path,
            PYTHONPATH=str(tmp_path),
            THREAD_PROBE_FILE=str(tmp_path / "threads.txt"),
        )
    finally:
        busy.kill()
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "threads.txt").read_text() == "1"
    lines = result.stdout.splitlines()
    progress = [line for line in lines if line.startswith("episode ")]
    assert progress and all("mean return (last" in line and "/ 200" in line and "steps/s" in line for line in progress)
    assert not any("| rollout/" in line for line in lines)  # the compact line replaces SB3's tables
    assert any(line.startswith("Training finished in ") for line in lines)
    assert any(line.startswith("Not solved:") for line in lines)
    # the lab's run ends with how its greedy policy lands, and the robust preset when it lands too rarely
    assert any(line.startswith("Landing check, 20 greedy episodes (seeds 90000-90019") for line in lines)
    assert any("-conf" in line and "soft_dqn_robust.yml" in line for line in lines)
    model_line = next(line for line in lines if line.startswith("Model: "))
    assert (tmp_path / model_line.removeprefix("Model: ")).is_file()
    assert "-f logs --exp-id 1 --no-render" in result.stdout


def test_verbose_2_keeps_the_tables(tmp_path):
    result = _zoo("train", "-n", "1000", "-f", "logs", "--eval-freq", "-1", "--verbose", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| rollout/" in result.stdout and "training on the fast path" in result.stdout


def test_optimize_leaves_no_empty_run_folder_for_enjoy_to_pick(tmp_path):
    trained = _zoo("train", "-n", "600", "-f", "logs", "--eval-freq", "-1", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    optimize = ("-optimize", "--n-trials", "1", "-n", "300", "--n-evaluations", "1", "--eval-episodes", "1")
    storage = ("--storage", "logs/study.log", "--study-name", "s", "--no-optim-plots", "-params", "callback:None")
    workers = [
        subprocess.Popen(
            _command("train", *optimize, *storage, "-f", "logs", "--seed", str(seed)),
            cwd=tmp_path,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    for worker in workers:
        _, stderr = worker.communicate(timeout=TIMEOUT)
        assert worker.returncode == 0, stderr[-2000:]
    runs = sorted(p.name for p in (tmp_path / "logs" / "soft_dqn").iterdir() if p.is_dir())
    assert runs == [f"{ENV_ID}_1"]
    enjoy = _zoo("enjoy", "-f", "logs", "--no-render", "-n", "50", cwd=tmp_path)
    assert enjoy.returncode == 0, enjoy.stderr[-2000:]
    assert "logs/soft_dqn/LunarLander-v2_1/LunarLander-v2.zip" in enjoy.stdout  # the training run's model


def test_optimizing_a_study_that_minimizes_is_refused(tmp_path):
    """rl-zoo3 loads an existing study without checking its direction: it would tune towards the worst return."""
    storage = tmp_path / "study.log"
    backend = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(storage)))
    optuna.create_study(study_name="s", storage=backend)  # optuna's default direction: minimize
    result = _zoo(
        "train",
        "-optimize",
        "--n-trials",
        "1",
        "-n",
        "100",
        "--storage",
        str(storage),
        "--study-name",
        "s",
        cwd=tmp_path,
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "study 's' in" in result.stderr and "--direction maximize" in result.stderr
