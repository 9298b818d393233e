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
        assert model.dueling == params["dueling"] and model.prioritized_replay == params["prioritized_replay"]
        assert model.n_steps == params["n_steps"]
        # the fast path covers every point: Linear/ReLU stacks (dueling or not), Adam, n-step, PER
        assert model.uses_fast_path, model.fast_path_status
        study.tell(trial, 0.0)
        seen.add((params["loss"], params["double_q"], params["dueling"], params["prioritized_replay"]))
    assert len(seen) == 16  # every combination of loss, Double DQN, dueling and prioritized replay was drawn


EDGE_SUGGESTIONS = {
    "low": dict(
        learning_rate=1e-4,
        batch_size=32,
        buffer_size=25_000,
        gamma=0.98,
        tau=1e-4,
        target_update_interval=1,
        exploration_decay=0.98,
        train_freq=1,
        gradient_steps=1,
        net_width=32,
        net_depth=1,
        loss="mse",
        double_q=False,
        dueling=False,
        prioritized_replay=False,
        n_steps=1,
    ),
    "high": dict(
        learning_rate=5e-3,
        batch_size=256,
        buffer_size=300_000,
        gamma=0.999,
        tau=2e-2,
        target_update_interval=16,
        exploration_decay=0.998,
        train_freq=8,
        gradient_steps=2,
        net_width=256,
        net_depth=3,
        loss="huber",
        double_q=True,
        dueling=True,
        prioritized_replay=True,
        n_steps=5,
    ),
}
# What SoftUpdateDQN must receive for them: Optuna's net_width/net_depth become one net_arch, the rest passes as is
EDGE_KWARGS = {
    "low": dict(
        learning_rate=1e-4,
        batch_size=32,
        buffer_size=25_000,
        gamma=0.98,
        tau=1e-4,
        target_update_interval=1,
        exploration_decay=0.98,
        train_freq=1,
        gradient_steps=1,
        loss="mse",
        double_q=False,
        dueling=False,
        prioritized_replay=False,
        n_steps=1,
        policy_kwargs=dict(net_arch=[32]),
    ),
    "high": dict(
        learning_rate=5e-3,
        batch_size=256,
        buffer_size=300_000,
        gamma=0.999,
        tau=2e-2,
        target_update_interval=16,
        exploration_decay=0.998,
        train_freq=8,
        gradient_steps=2,
        loss="huber",
        double_q=True,
        dueling=True,
        prioritized_replay=True,
        n_steps=5,
        policy_kwargs=dict(net_arch=[256, 256, 256]),
    ),
}


@pytest.mark.parametrize("edge", ["low", "high"])
def test_search_space_edges_are_valid(edge):
    """The corners of the search space give exactly the expected keyword arguments, and a model that takes them."""
    params = sample_soft_dqn_params(optuna.trial.FixedTrial(EDGE_SUGGESTIONS[edge]), 4, 1, NO_HER)
    assert params == EDGE_KWARGS[edge]
    assert convert_soft_dqn_params(EDGE_SUGGESTIONS[edge]) == EDGE_KWARGS[edge]  # what --trial-id replays
    model = SoftUpdateDQN("MlpPolicy", "LunarLander-v2", **params)
    assert model.policy.net_arch == EDGE_KWARGS[edge]["policy_kwargs"]["net_arch"]
    assert model.train_freq.frequency == EDGE_KWARGS[edge]["train_freq"]
    for name in ("batch_size", "buffer_size", "gamma", "tau", "target_update_interval", "exploration_decay"):
        assert getattr(model, name) == EDGE_KWARGS[edge][name], name
    for name in ("gradient_steps", "loss", "double_q", "dueling", "prioritized_replay", "n_steps"):
        assert getattr(model, name) == EDGE_KWARGS[edge][name], name
    assert model.lr_schedule(1.0) == pytest.approx(EDGE_KWARGS[edge]["learning_rate"])


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
    # on failure: every trial's state and parameters, and the end of what each worker printed
    report = [(t.number, t.state.name, t.params) for t in trials] + [
        r.stdout[-1500:] + r.stderr[-1500:] for r in results
    ]
    assert len(trials) == 4, report
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    assert all(t.state in finished for t in trials), report
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
    assert len(expected) == 15  # every searched hyperparameter (net width and depth become one net_arch)
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


TUNED_STUDY, TUNED_TRIAL = "soft_dqn_lunar", 10
PRESET_ONLY_KEYS = {"n_timesteps", "policy", "callback"}  # the run's budget and stopping rule, not tuned


@pytest.fixture
def tuned_preset() -> dict:
    import yaml

    from lunar_sb3.zoo import hyperparams_path

    return yaml.safe_load(hyperparams_path("soft_dqn_tuned.yml").read_text())


@pytest.fixture
def recorded_study(tmp_path) -> optuna.Study:
    """The study in the repository's journal, read from a copy so the test never writes into the repository."""
    import shutil
    from pathlib import Path

    source = Path(__file__).resolve().parents[1] / "results" / "study" / "soft_dqn_lunar.log"
    shutil.copyfile(source, tmp_path / "journal.log")
    return optuna.load_study(study_name=TUNED_STUDY, storage=journal(tmp_path / "journal.log"))


def test_tuned_preset_is_trial_10_of_the_recorded_study(tuned_preset, recorded_study):
    """Every tuned value in hyperparams/soft_dqn_tuned.yml is what trial 10 of results/study/ sampled."""
    trial = recorded_study.trials[TUNED_TRIAL]
    assert trial.number == TUNED_TRIAL and trial.state == optuna.trial.TrialState.COMPLETE
    assert recorded_study.best_trial.number == TUNED_TRIAL  # the preset's comment: the best trial
    assert round(trial.value, 1) == 220.0
    expected = convert_soft_dqn_params(trial.params)
    entry = tuned_preset["LunarLander-v2"]
    assert set(entry) - PRESET_ONLY_KEYS == set(expected)
    for name, value in expected.items():
        if name == "policy_kwargs":  # rl-zoo3 evaluates this string
            assert eval(entry[name]) == value
        else:
            assert entry[name] == value and type(entry[name]) is type(value), name
    assert tuned_preset["LunarLander-v3"] == entry


def test_tuned_preset_builds_the_recorded_model(tuned_preset, recorded_study):
    from lunar_sb3.benchmark import agent_kwargs

    expected = convert_soft_dqn_params(recorded_study.trials[TUNED_TRIAL].params)
    algo_class, kwargs = agent_kwargs("soft_dqn_tuned")
    model = algo_class("MlpPolicy", "LunarLander-v2", **kwargs)
    assert model.uses_fast_path
    assert model.policy.net_arch == expected["policy_kwargs"]["net_arch"] == [256, 256]
    assert model.train_freq.frequency == expected["train_freq"]
    assert model.lr_schedule(1.0) == pytest.approx(expected["learning_rate"])
    for name in ("batch_size", "buffer_size", "gamma", "tau", "target_update_interval", "exploration_decay"):
        assert getattr(model, name) == expected[name], name
    for name in ("gradient_steps", "loss", "double_q"):
        assert getattr(model, name) == expected[name], name
    # the study predates the Rainbow-lite options: the preset keeps the lab's (off)
    assert not model.dueling and not model.prioritized_replay and model.n_steps == 1
