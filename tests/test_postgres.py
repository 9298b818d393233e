"""README's PostgreSQL tuning command against a real server: two rl-zoo3 workers share one study.

CI (``.ci/run``) starts a throwaway server with ``.ci/start_postgres`` and sets LUNAR_SB3_TEST_POSTGRES_URL;
without it this module is skipped. Locally::

    export LUNAR_SB3_TEST_POSTGRES_URL=$(.ci/start_postgres)
    python -m pytest tests/test_postgres.py
    .ci/start_postgres stop
"""

import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest

from lunar_sb3 import SoftUpdateDQN
from lunar_sb3.zoo import convert_soft_dqn_params

URL = os.environ.get("LUNAR_SB3_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(
    not URL,
    reason="LUNAR_SB3_TEST_POSTGRES_URL is not set (CI sets it); "
    "to run: export LUNAR_SB3_TEST_POSTGRES_URL=$(.ci/start_postgres)",
)

ENV = {**os.environ, "MPLBACKEND": "Agg", "PYTHONHASHSEED": "0"}
ZOO = [sys.executable, "-m", "rl_zoo3.train", "--algo", "soft_dqn", "--env", "LunarLander-v2"]
TIMEOUT = 900


def optuna_cli() -> str:
    """The ``optuna`` console script of this interpreter's environment (its bin/ need not be on PATH)."""
    script = Path(sys.executable).with_name("optuna")
    return str(script) if script.exists() else shutil.which("optuna") or "optuna"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """README's two steps with tiny budgets: create the study once, then two workers started together."""
    folder = tmp_path_factory.mktemp("postgres")
    name = f"soft_dqn_lunar_{uuid.uuid4().hex[:12]}"  # fresh on every run, the database outlives it
    # README: optuna create-study --storage URL --study-name NAME --direction maximize --skip-if-exists
    create = [optuna_cli(), "create-study", "--storage", URL, "--study-name", name]
    create += ["--direction", "maximize", "--skip-if-exists"]
    created = subprocess.run(create, cwd=folder, env=ENV, capture_output=True, text=True, timeout=120)
    assert created.returncode == 0, created.stderr[-3000:]

    # README: -optimize --n-trials 20 -n 150000 --sampler tpe --pruner median --storage URL --study-name NAME
    args = ["-optimize", "--n-trials", "1", "-n", "600", "--sampler", "tpe", "--pruner", "median"]
    args += ["--storage", URL, "--study-name", name]
    args += ["--n-evaluations", "1", "--eval-episodes", "1", "-params", "callback:None", "--no-optim-plots"]
    args += ["--num-threads", "1", "-f", "logs"]
    workers = [
        subprocess.Popen(
            [*ZOO, *args, "--seed", str(seed)],
            cwd=folder,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in (1, 2)
    ]
    try:
        outputs = [worker.communicate(timeout=TIMEOUT) for worker in workers]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    results = [(worker.returncode, stdout, stderr) for worker, (stdout, stderr) in zip(workers, outputs, strict=True)]
    return folder, name, results


def test_two_workers_share_one_postgres_study(study):
    _, name, results = study
    for returncode, _, stderr in results:
        assert returncode == 0, stderr[-3000:]
    trials = optuna.load_study(study_name=name, storage=URL).trials
    assert [t.number for t in trials] == [0, 1]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials), [t.state for t in trials]
    # each worker ran one of them (Optuna logs every finished trial on the worker's stderr)
    finished = [re.findall(r"Trial (\d+) finished", stderr) for _, _, stderr in results]
    assert sorted(finished) == [["0"], ["1"]], finished


def test_trial_id_trains_with_a_postgres_trial(study):
    folder, name, _ = study
    trial = optuna.load_study(study_name=name, storage=URL).trials[1]  # rl-zoo3 ignores --trial-id 0
    args = ["-n", "300", "--eval-freq", "-1", "--storage", URL, "--study-name", name, "--trial-id", "1"]
    result = subprocess.run(
        [*ZOO, *args, "-f", "trained"], cwd=folder, env=ENV, capture_output=True, text=True, timeout=TIMEOUT
    )
    assert result.returncode == 0, result.stderr[-3000:]
    model = SoftUpdateDQN.load(folder / "trained" / "soft_dqn" / "LunarLander-v2_1" / "LunarLander-v2.zip")
    expected = convert_soft_dqn_params(trial.params)
    assert model.policy.net_arch == expected["policy_kwargs"]["net_arch"]
    for param in ("batch_size", "buffer_size", "gamma", "tau", "target_update_interval", "double_q"):
        assert getattr(model, param) == expected[param], param


def test_unknown_study_on_postgres_gives_a_clear_error(tmp_path):
    args = ["-n", "100", "--storage", URL, "--study-name", "no_such_study", "--trial-id", "1", "-f", "bad"]
    result = subprocess.run([*ZOO, *args], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode != 0
    assert "no study named 'no_such_study'" in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_wrong_password_is_one_line_without_the_password(tmp_path):
    wrong = re.sub(r"(://[^:/@]+:)[^@]*@", r"\1not-the-password@", URL)
    args = ["-optimize", "--n-trials", "1", "-n", "100", "--storage", wrong, "--study-name", "s", "-f", "bad"]
    result = subprocess.run([*ZOO, *args], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert "cannot read the Optuna storage" in result.stderr and "not-the-password" not in result.stderr
