"""Tuning soft_dqn with rl-zoo3 + Optuna: the search space, shared journal storage, --trial-id, bad storage."""

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from stable_baselines3.common.env_util import make_vec_env

from lunar_sb3 import SoftUpdateDQN
from lunar_sb3.zoo import convert_soft_dqn_params, sample_soft_dqn_params

NO_HER = {"using_her_replay_buffer": False, "her_kwargs": {}}
ENV = {**os.environ, "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0"}


def zoo(*args: str, cwd) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "rl_zoo3.train", "--algo", "soft_dqn", "--env", "LunarLander-v2", *args]
    return subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True, timeout=900)


def journal(path) -> JournalStorage:
    return JournalStorage(JournalFileBackend(str(path)))


def test_every_point_of_the_search_space_is_a_valid_model():
    env = make_vec_env("LunarLander-v2", n_envs=1)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(150):
        trial = study.ask()
        params = sample_soft_dqn_params(trial, n_actions=4, n_envs=1, additional_args=NO_HER)
        model = SoftUpdateDQN("MlpPolicy", env, **params)  # raises ValueError on an invalid combination
        assert model.uses_fast_path  # every sampled network is a Linear/ReLU stack trained with Adam
        study.tell(trial, 0.0)
        seen.add((params["loss"], params["double_q"]))
    assert seen == {("mse", False), ("mse", True), ("huber", False), ("huber", True)}


@pytest.mark.parametrize("edge", ["low", "high"])
def test_search_space_edges_are_valid(edge):
    pick = 0 if edge == "low" else -1
    fixed = {
        "learning_rate": 1e-4 if edge == "low" else 5e-3,
        "batch_size": [32, 64, 128, 256][pick],
        "buffer_size": [25_000, 50_000, 100_000, 300_000][pick],
        "gamma": [0.98, 0.99, 0.995, 0.999][pick],
        "tau": 1e-4 if edge == "low" else 2e-2,
        "target_update_interval": [1, 2, 4, 8, 16][pick],
        "exploration_decay": [0.98, 0.99, 0.995, 0.998][pick],
        "train_freq": [1, 2, 4, 8][pick],
        "gradient_steps": [1, 2][pick],
        "net_width": [32, 64, 128, 256][pick],
        "net_depth": 1 if edge == "low" else 3,
        "loss": ["mse", "huber"][pick],
        "double_q": [False, True][pick],
    }
    params = sample_soft_dqn_params(optuna.trial.FixedTrial(fixed), 4, 1, NO_HER)
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", **params)
    assert model.policy.net_arch == [fixed["net_width"]] * fixed["net_depth"]
    assert params == convert_soft_dqn_params(fixed)


@pytest.fixture(scope="module")
def shared_study(tmp_path_factory):
    """Two workers started at the same time on one journal file, two trials each."""
    folder = tmp_path_factory.mktemp("study")
    args = ["-optimize", "--n-trials", "2", "-n", "1000", "--n-evaluations", "1", "--eval-episodes", "2"]
    args += ["--sampler", "random", "--pruner", "median", "--no-optim-plots", "--n-startup-trials", "1"]
    args += ["--storage", "study.log", "--study-name", "shared", "-f", "logs"]
    with ThreadPoolExecutor(2) as pool:
        workers = [pool.submit(zoo, *args, "--seed", str(seed), cwd=folder) for seed in (1, 2)]
        results = [worker.result() for worker in workers]
    return folder, results


def test_two_workers_share_one_journal(shared_study):
    folder, results = shared_study
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
    trials = optuna.load_study(study_name="shared", storage=journal(folder / "study.log")).trials
    assert len(trials) == 4
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials)
    assert len({t.number for t in trials}) == 4


def test_trial_id_trains_with_the_recorded_hyperparameters(shared_study):
    folder, _ = shared_study
    trial = optuna.load_study(study_name="shared", storage=journal(folder / "study.log")).trials[2]
    result = zoo(
        "-n",
        "300",
        "--eval-freq",
        "-1",
        "--storage",
        "study.log",
        "--study-name",
        "shared",
        "--trial-id",
        "2",
        "-f",
        "trained",
        cwd=folder,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    model = SoftUpdateDQN.load(folder / "trained" / "soft_dqn" / "LunarLander-v2_1" / "LunarLander-v2.zip")
    expected = convert_soft_dqn_params(trial.params)
    assert len(expected) == 12
    for name, value in expected.items():
        if name == "policy_kwargs":
            assert model.policy.net_arch == value["net_arch"]
        elif name == "train_freq":
            assert model.train_freq.frequency == value
        elif name == "learning_rate":  # the zoo wraps it in a ConstantSchedule
            assert model.lr_schedule(1.0) == pytest.approx(value)
        else:
            assert getattr(model, name) == value, name


@pytest.mark.parametrize(
    "args, message",
    [
        (["-optimize", "--storage", "adir.log", "--study-name", "s"], "is a directory"),
        (["--storage", "missing.log", "--study-name", "s", "--trial-id", "1"], "does not exist"),
        (["--storage", "study.log", "--study-name", "nope", "--trial-id", "1"], "no study named 'nope'"),
        (["--storage", "study.log", "--study-name", "shared", "--trial-id", "99"], "not 99"),
    ],
)
def test_bad_storage_or_study_gives_a_clear_error(shared_study, args, message):
    folder, _ = shared_study
    (folder / "adir.log").mkdir(exist_ok=True)
    result = zoo("-n", "100", "-f", "bad", *args, cwd=folder)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]


def test_tuned_preset_builds_the_recorded_model():
    import yaml

    from lunar_sb3.benchmark import agent_kwargs
    from lunar_sb3.zoo import hyperparams_path

    preset = yaml.safe_load(hyperparams_path("soft_dqn_tuned.yml").read_text())
    assert preset["LunarLander-v3"] == preset["LunarLander-v2"]
    algo_class, kwargs = agent_kwargs("soft_dqn_tuned")
    model = algo_class("MlpPolicy", "LunarLander-v2", **kwargs)
    assert model.uses_fast_path
    assert model.policy.net_arch == eval(preset["LunarLander-v2"]["policy_kwargs"])["net_arch"]
    for name in ("learning_rate", "gamma", "tau", "target_update_interval", "exploration_decay", "double_q"):
        assert getattr(model, name) == preset["LunarLander-v2"][name], name
