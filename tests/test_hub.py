"""Sharing a lander: package → (push) → pull → enjoy / evaluate, with no network, and the shipped lander.

The run is a real ``rl_zoo3.train`` run with a tiny budget; the package is checked against independent readers
(SB3's loader, huggingface_hub's model-card parser, a fresh evaluation) and the upload against what ``HfApi`` is
given (monkeypatched: the one step the tests cannot run).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import huggingface_hub
import numpy as np
import pytest
from zoo_helpers import ALGO, ENV_ID, check, zoo_env

from lunar_sb3 import SoftUpdateDQN
from lunar_sb3.evaluate import evaluate_model
from lunar_sb3.evaluate import main as evaluate_main
from lunar_sb3.hub import build_package, pull_package, shipped_agents_folder
from lunar_sb3.hub.cli import main as hub_main
from lunar_sb3.hub.files import optimizer_state_size

EPISODES = 4
REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_RUN = REPO_ROOT / "rl-trained-agents" / ALGO / f"{ENV_ID}_1"
PACKAGE_FILES = {
    f"{ALGO}-{ENV_ID}.zip",
    "config.yml",
    "args.yml",
    "env_kwargs.yml",
    "train_eval_metrics.zip",
    "results.json",
    "README.md",
    "outcomes.png",
    "landing.gif",
}


def _zoo(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", f"rl_zoo3.{script}", "--algo", ALGO, "--env", ENV_ID, *args]
    return subprocess.run(command, cwd=cwd, env=zoo_env(), capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def zoo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished ``rl_zoo3.train`` run folder (2,000 env steps)."""
    logs = tmp_path_factory.mktemp("logs")
    check(_zoo("train", "-n", "2000", "--eval-freq", "-1", "-f", str(logs), "--seed", "1", cwd=logs))
    return logs / ALGO / f"{ENV_ID}_1"


@pytest.fixture(scope="module")
def package(zoo_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("packages") / "lander"
    build_package(zoo_run, ENV_ID, out, n_episodes=EPISODES, seed=7, repo_id="alice/soft-lander", log=lambda _: None)
    return out


def _fail_message(argv: list[str], main=hub_main) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as raised:
        main(argv)
    message = str(raised.value.code)
    assert raised.value.code not in (0, None) and "\n" not in message and "Traceback" not in message, message
    return message


def test_package_holds_the_zoo_files_and_a_fresh_evaluation(zoo_run: Path, package: Path) -> None:
    assert {path.name for path in package.iterdir()} == PACKAGE_FILES
    shared, original = package / f"{ALGO}-{ENV_ID}.zip", zoo_run / f"{ENV_ID}.zip"
    # no optimizer state (SB3 already leaves the replay memory out), and SB3's own loader still takes the file
    assert optimizer_state_size(original) > 0 and optimizer_state_size(shared) == 0
    assert shared.stat().st_size < 0.7 * original.stat().st_size
    model, reference = SoftUpdateDQN.load(shared, device="cpu"), SoftUpdateDQN.load(original, device="cpu")
    observations = np.random.default_rng(0).normal(size=(256, 8)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(observations, True)[0], reference.predict(observations, True)[0])
    for name in ("config.yml", "args.yml"):
        assert (package / name).read_bytes() == (zoo_run / ENV_ID / name).read_bytes()
    with zipfile.ZipFile(package / "train_eval_metrics.zip") as metrics:
        assert "0.monitor.csv" in metrics.namelist()

    results = json.loads((package / "results.json").read_text())
    fresh = evaluate_model(reference, ENV_ID, n_episodes=EPISODES, seed=7)
    assert results["summary"] == fresh["summary"] and results["episodes"] == fresh["episodes"]
    assert results["mean_reward"] == fresh["summary"]["return_mean"] and results["n_eval_episodes"] == EPISODES
    assert results["eval_seeds"] == [7, 7 + EPISODES - 1]
    assert results["training"]["model_env_steps"] == reference.num_timesteps
    assert results["training"]["run_env_steps"] > 0 and "rl_zoo3.train" in results["training"]["command"]
    assert [episode["seed"] for episode in results["gif_episodes"]] == [7, 8, 9]


def test_model_card_reads_back_with_the_hubs_parser(package: Path) -> None:
    results = json.loads((package / "results.json").read_text())
    summary = results["summary"]
    card = huggingface_hub.ModelCard.load(package / "README.md")
    assert card.data.library_name == "stable-baselines3" and ENV_ID in card.data.tags
    metrics = {result.metric_type: result for result in card.data.eval_results}
    assert metrics["mean_reward"].metric_value == f"{summary['return_mean']:.2f} +/- {summary['return_std']:.2f}"
    assert metrics["mean_reward"].dataset_type == ENV_ID
    assert metrics["mean_reward"].task_type == "reinforcement-learning"
    assert metrics["landed_share"].metric_value == round(100 * summary["outcome_shares"]["landed"], 1)
    assert metrics["crashed_share"].metric_value == round(100 * summary["outcome_shares"]["crashed"], 1)
    text = card.text
    for picture in ("outcomes.png", "landing.gif"):
        assert f"]({picture})" in text
    assert f"| return | {summary['return_mean']:.1f} ± {summary['return_std']:.1f} |" in text
    assert "python -m lunar_sb3.hub pull alice/soft-lander -f logs" in text
    assert f"python -m rl_zoo3.enjoy --algo {ALGO} --env {ENV_ID} -f logs" in text
    assert f"python -m lunar_sb3.evaluate -f logs -n {EPISODES} --seed 7 " in text  # the command that reproduces it


def test_pulled_package_plays_in_enjoy_and_evaluates_to_the_packages_numbers(package: Path, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    run = pull_package(package, logs)
    assert run == logs / ALGO / f"{ENV_ID}_1"
    assert {"config.yml", "args.yml", "env_kwargs.yml"} <= {path.name for path in (run / ENV_ID).iterdir()}
    assert pull_package(package, logs) == logs / ALGO / f"{ENV_ID}_2"  # exp id 0: a new run folder, like the zoo

    assert evaluate_main(["-f", str(logs), "--exp-id", "1", "-n", str(EPISODES), "--seed", "7"]) == 0
    evaluation = json.loads((run / "evaluation.json").read_text())
    assert evaluation["summary"] == json.loads((package / "results.json").read_text())["summary"]
    proc = check(_zoo("enjoy", "-f", str(logs), "--exp-id", "1", "--no-render", "-n", "300", cwd=tmp_path))
    assert f"{ENV_ID}_1" in proc.stdout + proc.stderr


def test_a_normalized_run_ships_its_statistics(tmp_path: Path) -> None:
    """``normalize: true`` runs need their VecNormalize statistics: packaged as the Hub names them, pulled back to
    where the zoo keeps them, and the pulled run evaluates to the package's numbers with them."""
    logs = tmp_path / "logs"
    params = ["-params", "normalize:True", "learning_starts:100"]
    check(_zoo("train", "-n", "1000", "--eval-freq", "-1", "-f", str(logs), "--seed", "2", *params, cwd=tmp_path))
    package = tmp_path / "package"
    build_package(logs / ALGO / f"{ENV_ID}_1", ENV_ID, package, n_episodes=2, log=lambda _: None)
    assert (package / "vec_normalize.pkl").is_file() and json.loads((package / "results.json").read_text())[
        "vec_normalize"
    ]
    run = pull_package(package, tmp_path / "pulled")
    assert (run / ENV_ID / "vecnormalize.pkl").read_bytes() == (package / "vec_normalize.pkl").read_bytes()
    assert evaluate_main([str(run), "-n", "2"]) == 0
    evaluation = json.loads((run / "evaluation.json").read_text())
    assert (
        evaluation["vecnormalize"]
        and evaluation["summary"] == json.loads((package / "results.json").read_text())["summary"]
    )


def test_push_uploads_the_package_it_builds(zoo_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: dict[str, dict] = {}

    def create_repo(self, repo_id, **kwargs):  # type: ignore[no-untyped-def]
        calls["create_repo"] = {"repo_id": repo_id, "token": self.token, **kwargs}
        return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

    def upload_folder(self, **kwargs):  # type: ignore[no-untyped-def]
        calls["upload_folder"] = {**kwargs, "files": sorted(p.name for p in Path(kwargs["folder_path"]).iterdir())}
        calls["upload_folder"]["card"] = (Path(kwargs["folder_path"]) / "README.md").read_text()

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test_token")
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    argv = ["push", str(zoo_run), "--repo-id", "alice/soft-lander", "-n", "2", "--out-dir", str(tmp_path / "pkg")]
    assert hub_main(argv) == 0
    assert calls["create_repo"] == {
        "repo_id": "alice/soft-lander",
        "token": "hf_test_token",
        "repo_type": "model",
        "exist_ok": True,
        "private": False,
    }
    upload = calls["upload_folder"]
    assert upload["repo_id"] == "alice/soft-lander" and upload["repo_type"] == "model"
    assert Path(upload["folder_path"]) == tmp_path / "pkg" and set(upload["files"]) == PACKAGE_FILES
    assert "pull alice/soft-lander" in upload["card"]


def test_push_without_a_token_fails_before_any_work(zoo_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", lambda *a, **k: pytest.fail("no token, no upload"))
    message = _fail_message(["push", str(zoo_run), "--repo-id", "alice/soft-lander"])
    assert "no Hugging Face token" in message and "HF_TOKEN" in message


def test_a_refused_upload_gets_one_line(zoo_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def create_repo(self, repo_id, **kwargs):  # type: ignore[no-untyped-def]
        raise ConnectionError("Max retries exceeded with url: /api/repos/create\n(more lines from urllib3)")

    monkeypatch.setattr(huggingface_hub, "get_token", lambda: "hf_test_token")
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    message = _fail_message(["push", str(zoo_run), "--repo-id", "alice/soft-lander", "-n", "1"])
    assert "upload to alice/soft-lander failed (ConnectionError: Max retries exceeded" in message


def test_pull_from_the_hub_downloads_then_places(
    package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []

    def snapshot_download(repo_id: str, repo_type: str, local_dir: Path) -> str:
        asked.append(repo_id)
        shutil.copytree(package, local_dir, dirs_exist_ok=True)
        return str(local_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    message = _fail_message(["pull", "alice/soft-lander", "-f", str(tmp_path)])
    assert "--trust-remote-code" in message and not asked
    assert hub_main(["pull", "alice/soft-lander", "-f", str(tmp_path), "--trust-remote-code"]) == 0
    assert asked == ["alice/soft-lander"] and (tmp_path / ALGO / f"{ENV_ID}_1" / f"{ENV_ID}.zip").is_file()


def _incomplete_package(package: Path, tmp_path: Path) -> Path:
    broken = tmp_path / "broken"
    shutil.copytree(package, broken)
    (broken / "config.yml").unlink()
    return broken


@pytest.mark.parametrize(
    "case, expected",
    [
        ("no model", "holds no model LunarLander-v2.zip"),
        ("no best model", "holds no model best_model.zip"),
        ("not a run folder", "is not an rl-zoo3 run folder"),
        ("out dir not empty", "is not empty"),
        ("out dir is a file", "is an existing file"),
        ("out dir unwritable", "cannot create output folder"),
        ("bad repo id", "is not of the form user/name"),
        ("repo id with three parts", "is neither a package folder nor a Hub repo id user/name"),
        ("incomplete package", "is incomplete: no config.yml"),
        ("package without model", "must hold one model zip"),
        ("pull onto an existing run", "already exists"),
    ],
)
def test_bad_input_gets_one_line(case: str, expected: str, zoo_run: Path, package: Path, tmp_path: Path) -> None:
    empty_run = tmp_path / ALGO / f"{ENV_ID}_3"
    (empty_run / ENV_ID).mkdir(parents=True)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.txt").write_text("x")
    (tmp_path / "file").write_text("x")
    argv = {
        "no model": ["package", str(empty_run), str(tmp_path / "out")],
        "no best model": ["package", str(zoo_run), str(tmp_path / "out"), "--load-best"],
        "not a run folder": ["package", str(tmp_path / "full"), str(tmp_path / "out")],
        "out dir not empty": ["package", str(zoo_run), str(tmp_path / "full")],
        "out dir is a file": ["package", str(zoo_run), str(tmp_path / "file")],
        "out dir unwritable": ["package", str(zoo_run), str(tmp_path / "file" / "out")],
        "bad repo id": ["push", str(zoo_run), "--repo-id", "soft-lander"],
        "repo id with three parts": ["pull", "alice/soft/lander", "-f", str(tmp_path)],
        "incomplete package": ["pull", str(_incomplete_package(package, tmp_path)), "-f", str(tmp_path)],
        "package without model": ["pull", str(tmp_path / "full"), "-f", str(tmp_path)],
        "pull onto an existing run": ["pull", str(package), "-f", str(tmp_path), "--exp-id", "3"],
    }[case]
    assert expected in _fail_message(argv)
    assert not (tmp_path / "out").exists()


def test_shipped_lander_is_small_and_lands(tmp_path: Path) -> None:
    assert shipped_agents_folder() == REPO_ROOT / "rl-trained-agents"
    model_zip = SHIPPED_RUN / f"{ENV_ID}.zip"
    assert optimizer_state_size(model_zip) == 0 and model_zip.stat().st_size < 1_000_000
    for name in ("config.yml", "args.yml", "env_kwargs.yml"):
        assert (SHIPPED_RUN / ENV_ID / name).is_file()
    model = SoftUpdateDQN.load(model_zip, device="cpu")
    result = evaluate_model(model, ENV_ID, n_episodes=5, seed=0)
    assert result["episodes"]["outcomes"] == ["landed"] * 5 and min(result["episodes"]["returns"]) >= 200
    shipped = json.loads((SHIPPED_RUN / "results.json").read_text())  # the figures measured when it was packaged
    assert shipped["n_eval_episodes"] == 100 and shipped["summary"]["outcome_shares"]["landed"] >= 0.9
    proc = check(_zoo("enjoy", "-f", str(REPO_ROOT / "rl-trained-agents"), "--no-render", "-n", "300", cwd=tmp_path))
    assert "LunarLander-v2_1" in proc.stdout + proc.stderr


ZOO_PUSH_WITHOUT_NETWORK = """
import runpy, shutil, sys
from pathlib import Path
import huggingface_hub

def create_repo(self, repo_id, **kwargs):
    return huggingface_hub.RepoUrl(f"https://huggingface.co/{repo_id}")

def snapshot_download(self, repo_id, local_dir, **kwargs):
    Path(local_dir).mkdir(parents=True, exist_ok=True)
    return str(local_dir)

def upload_folder(self, repo_id, folder_path, **kwargs):
    shutil.copytree(folder_path, Path("uploaded") / repo_id)

huggingface_hub.HfApi.create_repo = create_repo
huggingface_hub.HfApi.snapshot_download = snapshot_download
huggingface_hub.HfApi.upload_folder = upload_folder
sys.argv = ["push_to_hub", *sys.argv[1:]]
runpy.run_module("rl_zoo3.push_to_hub", run_name="__main__")
"""


def test_zoos_own_push_to_hub_runs_for_soft_dqn(zoo_run: Path, tmp_path: Path) -> None:
    """rl-zoo3 2.9.2's push_to_hub fails to import with huggingface_sb3 3.x; with lunar_sb3's glue it packages a
    soft_dqn run (HfApi's network calls replaced in the subprocess, the zoo's own code otherwise)."""
    script = tmp_path / "push_without_network.py"
    script.write_text(ZOO_PUSH_WITHOUT_NETWORK)
    logs = zoo_run.parent.parent
    command = [sys.executable, str(script), "--algo", ALGO, "--env", ENV_ID, "-f", str(logs), "-orga", "alice"]
    proc = check(subprocess.run([*command, "--no-render"], cwd=tmp_path, env=zoo_env(), capture_output=True, text=True))
    uploaded = tmp_path / "uploaded" / "alice" / f"{ALGO}-{ENV_ID}"
    assert {f"{ALGO}-{ENV_ID}.zip", "config.yml", "args.yml", "results.json", "README.md"} <= {
        path.name for path in uploaded.iterdir()
    }, proc.stdout
    card = huggingface_hub.ModelCard.load(uploaded / "README.md")
    assert card.data.library_name == "stable-baselines3" and card.data.eval_results[0].metric_type == "mean_reward"
    assert json.loads((uploaded / "results.json").read_text())["n_eval_episodes"] == 10  # the zoo's own evaluation
