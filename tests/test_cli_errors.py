"""The command-line tools (evaluate, plot, benchmark) on bad input, on rl-zoo3 run folders, and on normalised runs.

Every user error must end in one line on stderr that names the problem, a non-zero exit status, no traceback, and
no output file (an existing one keeps its content). Runs are built by hand in rl-zoo3's layout::

    logs/soft_dqn/LunarLander-v2_1/LunarLander-v2.zip   saved with verbose=2, plus 0.monitor.csv
    logs/soft_dqn/LunarLander-v2_2/LunarLander-v2.zip   trained on VecNormalize, plus 0.monitor.csv and
    logs/soft_dqn/LunarLander-v2_2/LunarLander-v2/vecnormalize.pkl
    logs/soft_dqn/LunarLander-v2_3/                     a run that has not saved anything yet
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import io
import json
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import gymnasium as gym
import matplotlib.image
import numpy as np
import pytest
import torch
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from lunar_sb3 import SoftUpdateDQN
from lunar_sb3 import evaluate as evaluate_cli
from lunar_sb3.evaluate import evaluate_model, find_vec_normalize, load_model, load_vec_normalize
from lunar_sb3.outputs import OutputError, atomic_path, check_writable_folder, find_run_folder, write_text_atomic

ENV_ID = "LunarLander-v2"
OLD_REPORT = '{"an": "earlier report"}\n'


def _train_run(run: Path, normalize: bool = False, verbose: int = 0) -> None:
    """A tiny SoftUpdateDQN saved where rl-zoo3 would save it, with the Monitor file rl-zoo3 writes."""
    run.mkdir(parents=True)
    venv = DummyVecEnv([lambda: Monitor(gym.make(ENV_ID), str(run / "0"))])
    env = VecNormalize(venv, norm_reward=False) if normalize else venv
    model = SoftUpdateDQN("MlpPolicy", env, learning_starts=0, seed=0, verbose=verbose)
    model.learn(300)  # random early play ends episodes (crashes) well within this: the monitor file has rows
    model.save(run / f"{ENV_ID}.zip")
    if normalize:
        (run / ENV_ID).mkdir()
        env.save(str(run / ENV_ID / "vecnormalize.pkl"))
    env.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The run folders above plus single files: other algorithms and spaces, broken zips, a valid old report."""
    root = tmp_path_factory.mktemp("cli")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        logs = root / "logs"
        _train_run(logs / "soft_dqn" / f"{ENV_ID}_1", verbose=2)
        _train_run(logs / "soft_dqn" / f"{ENV_ID}_2", normalize=True)
        (logs / "soft_dqn" / f"{ENV_ID}_3").mkdir()
        PPO("MlpPolicy", ENV_ID, n_steps=64, batch_size=64, device="cpu").save(root / "ppo.zip")
        DQN("MlpPolicy", "CartPole-v1", buffer_size=1000, seed=0).save(root / "cartpole.zip")
    finally:
        torch.set_num_threads(threads)
    (root / "empty.zip").write_bytes(b"")
    (root / "random.zip").write_bytes(os.urandom(4096))
    with zipfile.ZipFile(root / "other.zip", "w") as archive:
        archive.writestr("readme.txt", "a zip, but not a model")
    (root / "garbage.pkl").write_bytes(os.urandom(512))
    (root / "old.json").write_text(OLD_REPORT)
    (root / "a_file").write_text("not a folder\n")
    return {
        "root": root,
        "logs": logs,
        "run1": logs / "soft_dqn" / f"{ENV_ID}_1",
        "run2": logs / "soft_dqn" / f"{ENV_ID}_2",
        "run3": logs / "soft_dqn" / f"{ENV_ID}_3",
        "soft": logs / "soft_dqn" / f"{ENV_ID}_1" / f"{ENV_ID}.zip",
        **{path.stem: path for path in root.iterdir() if path.is_file()},
    }


CLI_MAINS = {"evaluate": "lunar_sb3.evaluate", "plot": "lunar_sb3.plot", "benchmark": "lunar_sb3.benchmark.cli"}


def run(module: str, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m lunar_sb3.<module> ARGS`` in this process: its ``main(argv)``, with stdout, stderr and the exit
    status as the interpreter would give them (a ``SystemExit`` message goes to stderr with status 1). Argument
    errors need no new interpreter; :func:`run_process` checks the real ``-m`` entry points."""
    main = importlib.import_module(CLI_MAINS[module]).main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(arg) for arg in args]) or 0
        except SystemExit as stop:
            code = stop.code
            if isinstance(code, str):
                print(code, file=sys.stderr)
                code = 1
    return subprocess.CompletedProcess([module, *args], code or 0, out.getvalue(), err.getvalue())


def run_process(module: str, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", f"lunar_sb3.{module}", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_one_line_error(done: subprocess.CompletedProcess, expected: str) -> None:
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "Traceback" not in output, output
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert ": error: " in lines[0] and expected in lines[0], lines[0]
    assert done.stdout == ""


def copy_logs(files: dict[str, Path], tmp_path: Path) -> Path:
    """A private copy of the logs, for tests that write beside a run."""
    return Path(shutil.copytree(files["logs"], tmp_path / "logs"))


# ---------------------------------------------------------------- evaluate: errors

EVALUATE_ERRORS = {
    "negative seed": (["{soft}", "--seed", "-1"], "--seed must be >= 0"),
    "zero episodes": (["{soft}", "-n", "0"], "-n must be >= 1"),
    "missing file": (["{root}/missing.zip"], "no such model file"),
    "empty file": (["{empty}"], "is an empty file"),
    "random bytes": (["{random}"], "is not a Stable-Baselines3 model zip"),
    "zip without model": (["{other}"], "is not a Stable-Baselines3 model zip"),
    "PPO zip": (["{ppo}"], "another algorithm (PPO, policy ActorCriticPolicy)"),
    "CartPole DQN": (["{cartpole}"], "observation space Box(shape=(4,)"),
    "run without model": (["{run3}"], "holds no model LunarLander-v2.zip"),
    "exp-id of no run": (["-f", "{logs}", "--exp-id", "7"], "no run folder"),
    "algo without runs": (["-f", "{logs}", "--algo", "ppo"], "no ppo runs"),
    "negative exp-id": (["-f", "{logs}", "--exp-id", "-1"], "--exp-id must be >= 0"),
    "exp-id without -f": (["{soft}", "--exp-id", "1"], "pass -f LOG_FOLDER too"),
    "model and -f": (["{soft}", "-f", "{logs}"], "not both"),
    "nothing to evaluate": ([], "nothing to evaluate"),
    "missing vecnormalize": (["{soft}", "--vecnormalize", "{root}/missing.pkl"], "no such VecNormalize file"),
    "garbage vecnormalize": (["{soft}", "--vecnormalize", "{garbage}"], "could not be loaded as VecNormalize"),
    "json into missing folder": (["{soft}", "--json", "{root}/no/such/dir/out.json"], "does not exist"),
    "json into a file": (["{soft}", "--json", "{a_file}/out.json"], "is not a folder"),
    "json is a folder": (["{soft}", "--json", "{root}"], "is a folder"),
}


@pytest.mark.parametrize("case", list(EVALUATE_ERRORS))
def test_evaluate_error_is_one_line_and_writes_nothing(case: str, files: dict[str, Path], tmp_path: Path) -> None:
    template, expected = EVALUATE_ERRORS[case]
    args = [arg.format(**files) for arg in template]
    if "--json" not in args:
        args += ["--json", str(tmp_path / "out.json")]
    done = run("evaluate", "-n", "2", *args, cwd=tmp_path)
    assert_one_line_error(done, expected)
    assert not (tmp_path / "out.json").exists()
    assert not list(files["logs"].rglob("evaluation.json"))  # nor the default report of a run folder


@pytest.mark.parametrize(
    ("case", "args"),
    [("negative seed", ["--seed", "-1"]), ("PPO zip", ["--env", ENV_ID]), ("bad episodes", ["-n", "-3"])],
)
def test_evaluate_error_keeps_an_existing_report(
    case: str, args: list[str], files: dict[str, Path], tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    report.write_text(OLD_REPORT)
    model = files["ppo"] if case == "PPO zip" else files["soft"]
    done = run("evaluate", model, *args, "--json", report, cwd=tmp_path)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert report.read_text() == OLD_REPORT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]  # no temporary file left behind


def test_failed_write_keeps_the_old_report(
    files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills up half-way through writing the report: the previous report survives intact."""
    report = tmp_path / "report.json"
    report.write_text(OLD_REPORT)
    real_write_text = pathlib.Path.write_text

    def half_then_full_disk(self: Path, data: str, *args: object, **kwargs: object) -> int:
        real_write_text(self, data[: len(data) // 2], *args, **kwargs)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pathlib.Path, "write_text", half_then_full_disk)
    threads = torch.get_num_threads()  # main() sets one thread for the whole process
    try:
        with pytest.raises(SystemExit) as exit_info:
            evaluate_cli.main([str(files["soft"]), "-n", "1", "--json", str(report)])
    finally:
        monkeypatch.undo()
        torch.set_num_threads(threads)
    assert "cannot write" in str(exit_info.value.code) and "No space left" in str(exit_info.value.code)
    assert report.read_text() == OLD_REPORT
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_normalized_run_without_statistics_is_refused(files: dict[str, Path], tmp_path: Path) -> None:
    """rl-zoo3's config.yml says ``normalize: true`` but vecnormalize.pkl is gone: refuse, never evaluate raw."""
    run_folder = copy_logs(files, tmp_path) / "soft_dqn" / f"{ENV_ID}_2"
    (run_folder / ENV_ID / "vecnormalize.pkl").unlink()
    (run_folder / ENV_ID / "config.yml").write_text(
        "!!python/object/apply:collections.OrderedDict\n- - - batch_size\n    - 64\n  - - normalize\n    - true\n"
    )
    done = run("evaluate", run_folder, "-n", "2", cwd=tmp_path)
    assert_one_line_error(done, "trained on normalized observations")
    assert not (run_folder / "evaluation.json").exists()


# ---------------------------------------------------------------- evaluate: run folders, vecnormalize, verbose


def test_evaluate_run_folder_writes_beside_the_run(files: dict[str, Path], tmp_path: Path) -> None:
    run_folder = copy_logs(files, tmp_path) / "soft_dqn" / f"{ENV_ID}_1"
    done = run_process("evaluate", run_folder, "-n", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"{ENV_ID}_1/{ENV_ID}.zip (SoftUpdateDQN) on {ENV_ID}: 2 greedy episodes" in done.stdout
    assert "normalized" not in done.stdout  # run 1 did not normalise
    assert "training on" not in done.stdout + done.stderr  # saved with verbose=2: no fast-path line at load
    report = json.loads((run_folder / "evaluation.json").read_text())
    assert f"wrote {run_folder / 'evaluation.json'}" in done.stdout
    assert report["model"] == str(run_folder / f"{ENV_ID}.zip") and report["vecnormalize"] is None
    assert len(report["episodes"]["returns"]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]  # nothing in the working folder


def test_evaluate_zip_without_json_writes_nothing(files: dict[str, Path], tmp_path: Path) -> None:
    shutil.copy(files["soft"], tmp_path / "model.zip")
    done = run("evaluate", tmp_path / "model.zip", "-n", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "training on" not in done.stdout + done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.zip"]


def test_verbose_is_dropped_on_load(files: dict[str, Path]) -> None:
    with zipfile.ZipFile(files["soft"]) as archive:
        assert json.loads(archive.read("data"))["verbose"] == 2
    assert load_model(files["soft"]).verbose == 0


def test_zoo_style_selection_picks_the_latest_run_with_a_model_and_normalizes(
    files: dict[str, Path], tmp_path: Path
) -> None:
    """``-f logs --algo soft_dqn`` (exp-id 0): run 3 has no model yet, so run 2, whose statistics are applied."""
    logs = copy_logs(files, tmp_path)
    done = run("evaluate", "-f", logs, "--algo", "soft_dqn", "--exp-id", "0", "-n", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run_folder = logs / "soft_dqn" / f"{ENV_ID}_2"
    stats = run_folder / ENV_ID / "vecnormalize.pkl"
    title = done.stdout.splitlines()[0]
    assert title.startswith(f"{ENV_ID}_2/{ENV_ID}.zip (SoftUpdateDQN)") and f"normalized with {stats}" in title
    assert json.loads((run_folder / "evaluation.json").read_text())["vecnormalize"] == str(stats)
    assert not (logs / "soft_dqn" / f"{ENV_ID}_3" / "evaluation.json").exists()


def test_zip_of_a_normalized_run_finds_its_statistics(files: dict[str, Path], tmp_path: Path) -> None:
    model = files["run2"] / f"{ENV_ID}.zip"
    assert find_vec_normalize(model, ENV_ID) == files["run2"] / ENV_ID / "vecnormalize.pkl"
    assert find_vec_normalize(files["soft"], ENV_ID) is None
    done = run("evaluate", model, "-n", "1", "--json", tmp_path / "out.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "normalized with" in done.stdout.splitlines()[0]
    explicit = run(
        "evaluate",
        files["soft"],
        "-n",
        "1",
        "--vecnormalize",
        files["run2"] / ENV_ID / "vecnormalize.pkl",
        cwd=tmp_path,
    )
    assert explicit.returncode == 0, explicit.stderr
    assert "normalized with" in explicit.stdout.splitlines()[0]


def test_evaluate_model_feeds_normalized_observations(files: dict[str, Path]) -> None:
    """Every observation goes through the frozen statistics before ``predict``; the statistics do not move."""
    stats = load_vec_normalize(files["run2"] / ENV_ID / "vecnormalize.pkl", ENV_ID)
    assert not stats.training and not stats.norm_reward and stats.norm_obs
    mean_before = stats.obs_rms.mean.copy()
    model = load_model(files["run2"] / f"{ENV_ID}.zip")
    seen_by_model = []
    normalize_calls = []
    original_normalize, original_predict = stats.normalize_obs, model.predict

    def normalize(obs: np.ndarray) -> np.ndarray:
        normalize_calls.append(obs)
        return original_normalize(obs)

    def predict(obs: np.ndarray, **kwargs: object) -> tuple[np.ndarray, None]:
        seen_by_model.append(obs)
        return original_predict(obs, **kwargs)

    stats.normalize_obs, model.predict = normalize, predict
    result = evaluate_model(model, ENV_ID, n_episodes=2, seed=0, vec_normalize=stats)
    # one call per step for all running episodes (a batch): every observation of every episode, once
    assert len(normalize_calls) == len(seen_by_model) == max(result["episodes"]["lengths"])
    assert sum(len(batch) for batch in seen_by_model) == sum(result["episodes"]["lengths"])
    for raw, fed in zip(normalize_calls, seen_by_model, strict=True):
        assert fed == pytest.approx(original_normalize(raw))
        assert not fed == pytest.approx(raw)
    assert (stats.obs_rms.mean == mean_before).all()


# ---------------------------------------------------------------- plot


@pytest.mark.parametrize(
    ("case", "args", "expected"),
    [
        ("zero window", ["{run1}", "-w", "0"], "--window must be >= 1, got 0"),
        ("negative window", ["{run1}", "-w", "-5"], "--window must be >= 1, got -5"),
        ("output into missing folder", ["{run1}", "-o", "{root}/no/such/dir/c.png"], "does not exist"),
        ("output into a file", ["{run1}", "-o", "{a_file}/c.png"], "is not a folder"),
        ("output is a folder", ["{run1}", "-o", "{root}"], "is a folder"),
        ("no monitor files", ["{run3}"], "no *.monitor.csv"),
        ("missing folder", ["{root}/missing"], "no *.monitor.csv"),
        ("zoo style, no run", ["-f", "{logs}", "--exp-id", "9"], "no run folder"),
    ],
)
def test_plot_error_is_one_line_and_writes_nothing(
    case: str, args: list[str], expected: str, files: dict[str, Path], tmp_path: Path
) -> None:
    done = run("plot", *(arg.format(**files) for arg in args), cwd=tmp_path)
    assert_one_line_error(done, expected)
    assert not list(files["root"].rglob("*.png")) and not list(tmp_path.iterdir())


def test_plot_damaged_monitor_file(files: dict[str, Path], tmp_path: Path) -> None:
    run_folder = copy_logs(files, tmp_path) / "soft_dqn" / f"{ENV_ID}_1"
    (run_folder / "1.monitor.csv").write_text("this is not a monitor file\n")
    done = run("plot", run_folder, cwd=tmp_path)
    assert_one_line_error(done, "cannot read the monitor files")
    assert not list(run_folder.glob("*.png"))


def test_plot_run_folder_writes_beside_the_run(files: dict[str, Path], tmp_path: Path) -> None:
    logs = copy_logs(files, tmp_path)
    done = run_process("plot", logs / "soft_dqn" / f"{ENV_ID}_1", "-w", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    png = logs / "soft_dqn" / f"{ENV_ID}_1" / "learning_curve.png"
    assert done.stdout.strip() == f"wrote {png}"
    assert matplotlib.image.imread(png).std() > 0
    # rl-zoo3 style: the latest run with monitor files is run 2 (run 3 has none)
    done = run("plot", "-f", logs, "-w", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (logs / "soft_dqn" / f"{ENV_ID}_2" / "learning_curve.png").is_file()
    assert not (logs / "soft_dqn" / f"{ENV_ID}_3" / "learning_curve.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["logs"]


# ---------------------------------------------------------------- benchmark


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["throughput", "--steps", "0"], "--steps must be >= 1, got 0"),
        (["throughput", "--rounds", "0"], "--rounds must be >= 1, got 0"),
        (["zoo", "--steps", "0"], "--steps must be >= 1"),
        (["zoo", "--rounds", "-1"], "--rounds must be >= 1, got -1"),
        (["solve", "--seeds", "0"], "--seeds must be >= 1"),
        (["solve", "--max-steps", "-5"], "--max-steps must be >= 1"),
        (["solve", "--seed0", "-1"], "--seed0 must be >= 0"),
        (["solve", "--quick", "--out", "{a_file}"], "is an existing file"),
        (["solve", "--quick", "--out", "{a_file}/results"], "is a file"),
    ],
)
def test_benchmark_error_is_one_line(args: list[str], expected: str, files: dict[str, Path], tmp_path: Path) -> None:
    done = run("benchmark", *(arg.format(**files) for arg in args), cwd=tmp_path)
    assert_one_line_error(done, expected)
    assert "training runs" not in done.stderr  # rejected before any training started
    assert files["a_file"].read_text() == "not a folder\n"
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------- outputs helpers


def test_atomic_path_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "curve.png"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        assert temporary.parent == tmp_path and temporary.suffix == ".png"
        temporary.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["curve.png"]


def test_write_text_atomic_replaces_and_keeps_the_mode(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    write_text_atomic(target, "first")
    umask = os.umask(0)
    os.umask(umask)
    assert target.read_text() == "first" and target.stat().st_mode & 0o777 == 0o666 & ~umask
    target.chmod(0o640)
    write_text_atomic(target, "second")
    assert target.read_text() == "second" and target.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_check_writable_folder_creates_nothing(tmp_path: Path) -> None:
    assert check_writable_folder(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert not list(tmp_path.iterdir())
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "solve.json").mkdir()
    with pytest.raises(OutputError, match="is a folder"):
        check_writable_folder(tmp_path / "out", ("solve.json",))


def test_find_run_folder_follows_rl_zoo3_numbering(tmp_path: Path) -> None:
    algo = tmp_path / "soft_dqn"
    for name in (f"{ENV_ID}_2", f"{ENV_ID}_10", f"{ENV_ID}_11", "CartPole-v1_12", f"{ENV_ID}_x"):
        (algo / name).mkdir(parents=True)
    for name in (f"{ENV_ID}_2", f"{ENV_ID}_10"):
        (algo / name / f"{ENV_ID}.zip").write_bytes(b"")
    assert find_run_folder(tmp_path, "soft_dqn", ENV_ID) == algo / f"{ENV_ID}_10"  # numeric, 11 has no model
    assert find_run_folder(tmp_path, "soft_dqn", ENV_ID, exp_id=2) == algo / f"{ENV_ID}_2"
    with pytest.raises(OutputError, match="no CartPole-v1_<N> run with a saved model"):
        find_run_folder(tmp_path, "soft_dqn", "CartPole-v1")
