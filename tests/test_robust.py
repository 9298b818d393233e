"""Land every time: ``LandingEvalCallback``, the robust-lander preset, the outcome chart and GIF, ``benchmark robust``.

The callback's decisions are tested on scripted evaluations (the evaluation function is replaced, so every score is
chosen by the test and the exact saves and the stopping evaluation are known). The zoo, ``record_video``,
``lunar_sb3.evaluate`` and the benchmark run in real subprocesses with tiny budgets, as users run them.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from stable_baselines3.common.env_util import make_vec_env

import lunar_sb3.landing_eval
from lunar_sb3 import LandingEvalCallback, SoftUpdateDQN
from lunar_sb3.evaluation import evaluate_model, landing_score, meets_bar
from lunar_sb3.pictures import landing_gif, outcome_chart, outcome_shares

ENV_ID = "LunarLander-v2"
PRESET = Path(__file__).resolve().parents[1] / "hyperparams" / "soft_dqn_robust.yml"
TIMEOUT = 600  # seconds per subprocess: generous, the machine is small and shared
BAR = dict(stop_mean_return=250, stop_landed_share=0.95, stop_min_return_share=0.98, stop_max_crashed_share=0.0)


# ---------------------------------------------------------------------------------------------- helpers
def summary(return_mean: float, landed: float, crashed: float = 0.0, solved: float = 0.5) -> dict[str, Any]:
    """An ``evaluate_model`` summary; what did not land or crash timed out."""
    shares = {"landed": landed, "landed_off_pad": 0.0, "crashed": crashed, "out_of_bounds": 0.0}
    shares["timeout"] = 1.0 - landed - crashed
    return {
        "return_mean": return_mean,
        "return_std": 10.0,
        "solved_share": solved,
        "outcome_shares": shares,
        "length_mean": 300.0,
        "main_engine_fires_mean": 50.0,
        "side_engine_fires_mean": 80.0,
    }


class Scripted:
    """Stands in for ``evaluate_model``: returns the given summaries in order, records when it was called."""

    def __init__(self, summaries: list[dict[str, Any]]) -> None:
        self.summaries = list(summaries)
        self.calls: list[dict[str, Any]] = []

    def __call__(self, model: Any, env_id: str, n_episodes: int, seed: int, vec_normalize: Any = None) -> dict:
        self.calls.append(dict(timesteps=model.num_timesteps, env_id=env_id, n_episodes=n_episodes, seed=seed))
        result = self.summaries[min(len(self.calls), len(self.summaries)) - 1]
        return {"summary": result, "episodes": {"returns": [result["return_mean"] - 5, result["return_mean"] + 5]}}


def tiny_model(n_envs: int = 1) -> SoftUpdateDQN:
    """A lab model that never trains (learning starts after the test): rollouts only, fast."""
    env = make_vec_env(ENV_ID, n_envs=n_envs, seed=0) if n_envs > 1 else ENV_ID
    return SoftUpdateDQN("MlpPolicy", env, learning_starts=10**9, buffer_size=1000, seed=0)


def python(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "MPLBACKEND": "Agg", "SDL_VIDEODRIVER": "dummy", "PYTHONHASHSEED": "0"}
    environment.pop("LUNAR_SB3_AUTOLOAD", None)
    command = [sys.executable, *args]
    return subprocess.run(command, cwd=cwd, env=environment, capture_output=True, text=True, timeout=TIMEOUT)


def check(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"{' '.join(proc.args)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def zoo(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return check(python("-m", f"rl_zoo3.{script}", "--algo", "soft_dqn", "--env", ENV_ID, *args, cwd=cwd))


# ---------------------------------------------------------------------------------------------- the score and bar
def test_landing_score_rewards_landing_and_punishes_crashes() -> None:
    assert landing_score(summary(240, landed=0.96)) == pytest.approx(336)
    assert landing_score(summary(250, landed=0.80)) == pytest.approx(330)  # higher return, fewer landings: lower
    assert landing_score(summary(250, landed=0.80, crashed=0.1)) == pytest.approx(320)
    assert landing_score(summary(250, landed=0.80, crashed=0.1), landed_weight=2, crash_penalty=0) == pytest.approx(410)


@pytest.mark.parametrize(
    ("changed", "met"),
    [
        ({}, True),  # exactly at every bar counts as met
        ({"return_mean": 249.9}, False),
        ({"landed": 0.94, "timeout": 0.06}, False),
        ({"solved_share": 0.97}, False),
        ({"crashed": 0.01, "timeout": 0.04}, False),
    ],
)
def test_meets_bar_needs_every_criterion(changed: dict[str, float], met: bool) -> None:
    result = summary(250, landed=0.95, solved=0.98)
    for key, value in changed.items():
        (result if key in result else result["outcome_shares"])[key] = value
    assert meets_bar(result, **BAR) is met


def test_none_disables_a_criterion_and_no_criterion_never_stops() -> None:
    result = summary(100, landed=0.99, crashed=0.01, solved=0.2)
    assert meets_bar(result, stop_landed_share=0.95)
    assert not meets_bar(result, stop_landed_share=0.95, stop_max_crashed_share=0.0)
    assert not meets_bar(summary(300, landed=1.0, solved=1.0))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"eval_freq": 0}, "eval_freq"),
        ({"eval_freq": 2.5}, "eval_freq"),
        ({"eval_freq": True}, "eval_freq"),
        ({"n_eval_episodes": 0}, "n_eval_episodes"),
        ({"eval_seed": -1}, "eval_seed"),
        ({"min_timesteps": -1}, "min_timesteps"),
        ({"landed_weight": -1.0}, "landed_weight"),
        ({"crash_penalty": math.nan}, "crash_penalty"),
        ({"stop_mean_return": math.inf}, "stop_mean_return"),
        ({"stop_landed_share": 1.5}, "stop_landed_share"),
        ({"stop_min_return_share": "all"}, "stop_min_return_share"),
        ({"stop_max_crashed_share": -0.1}, "stop_max_crashed_share"),
        ({"env_id": 3}, "env_id"),
    ],
)
def test_bad_parameters_are_named(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=f"LandingEvalCallback: {name}="):
        LandingEvalCallback(**kwargs)


def test_yaml_floats_are_accepted_as_counts() -> None:
    assert LandingEvalCallback(eval_freq=2.5e4, min_timesteps=1e5).eval_freq == 25_000


def test_refuses_an_env_without_landings() -> None:
    model = SoftUpdateDQN("MlpPolicy", "CartPole-v1", learning_starts=10**9, seed=0)
    with pytest.raises(ValueError, match="cannot evaluate on env 'CartPole-v1'"):
        model.learn(10, callback=LandingEvalCallback(eval_freq=5, verbose=0))


# ---------------------------------------------------------------------------------------------- the callback
def test_keeps_the_best_by_score_and_stops_exactly_when_the_bar_is_met(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = Scripted(
        [
            summary(100, landed=0.5, crashed=0.2),  # score 130: first, saved
            summary(150, landed=0.4),  # 190: saved
            summary(195, landed=0.2, crashed=0.3),  # 185: higher return, lower score, not saved
            summary(300, landed=0.94, crashed=0.03, solved=0.97),  # 391: saved; misses the bar (a crash)
            summary(260, landed=0.94, solved=1.0),  # 354: below the best, misses the bar (94 % landed)
            summary(255, landed=0.97, solved=0.98),  # 352, but meets the bar: saved, training stops here
            summary(400, landed=1.0, solved=1.0),  # never reached
        ]
    )
    monkeypatch.setattr(lunar_sb3.landing_eval, "evaluate_model", script)
    model = tiny_model()
    saves: list[int] = []
    real_save = model.save
    monkeypatch.setattr(model, "save", lambda path, *a, **k: (saves.append(model.num_timesteps), real_save(path)))
    callback = LandingEvalCallback(
        eval_freq=100, n_eval_episodes=3, eval_seed=7, best_model_save_path=tmp_path, n_confirm_episodes=0, **BAR
    )
    model.learn(5_000, callback=callback)

    assert [call["timesteps"] for call in script.calls] == [100, 200, 300, 400, 500, 600]
    assert {(c["env_id"], c["n_episodes"], c["seed"]) for c in script.calls} == {(ENV_ID, 3, 7)}
    assert model.num_timesteps == 600  # stopped at the evaluation that met the bar, not before, not after
    assert saves == [100, 200, 400, 600]
    assert callback.bar_met_at == 600 and callback.best["timesteps"] == 600
    history = json.loads((tmp_path / "landing_evaluations.json").read_text())
    assert [e["saved"] for e in history["evaluations"]] == [True, True, False, True, False, True]
    assert [e["meets_bar"] for e in history["evaluations"]] == [False] * 5 + [True]
    assert [e["score"] for e in history["evaluations"]] == pytest.approx([130, 190, 185, 391, 354, 352])
    assert history["bar_met_at"] == 600
    assert history["best"] == {
        "timesteps": 600, "network": "online", "score": 352, "meets_bar": True, "confirmation": None,
    }  # fmt: skip
    assert history["evaluations"][0]["return_min"] == 95 and history["eval_seeds"] == [7, 9]
    assert SoftUpdateDQN.load(tmp_path / "best_model.zip").num_timesteps == 600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best_model.zip", "landing_evaluations.json"]


def test_counts_env_steps_over_all_envs_and_waits_for_min_timesteps(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two envs add 2 steps per call: evaluations come at the first count at or past each multiple of eval_freq."""
    script = Scripted([summary(0, landed=0.0)])
    monkeypatch.setattr(lunar_sb3.landing_eval, "evaluate_model", script)
    model = tiny_model(n_envs=2)
    callback = LandingEvalCallback(eval_freq=101, min_timesteps=500, verbose=0)  # no folder: nothing written
    model.learn(1_000, callback=callback)
    assert [call["timesteps"] for call in script.calls] == [506, 606, 708, 808, 910]
    assert len(callback.evaluations) == 5 and callback.bar_met_at is None
    assert callback.evaluations[0]["saved"] is False


def test_prints_one_line_per_evaluation(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setattr(lunar_sb3.landing_eval, "evaluate_model", Scripted([summary(260, landed=1.0, solved=1.0)]))
    tiny_model().learn(500, callback=LandingEvalCallback(eval_freq=100, n_confirm_episodes=0, **BAR))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("landing eval       100 steps | return  260.0") and "landed 100 %" in lines[0]
    assert lines[1].startswith("Landing bar met at 100 env steps") and len(lines) == 2


# ---------------------------------------------------------------------------------------------- through the zoo
def test_preset_trains_through_the_zoo_and_the_zoo_eval_leaves_best_model_alone(tmp_path: Path) -> None:
    zoo("train", "-conf", str(PRESET), "-n", "2000", "-f", "logs", "--eval-freq", "1000", "--eval-episodes", "1",
        cwd=tmp_path)  # fmt: skip
    run = tmp_path / "logs" / "soft_dqn" / f"{ENV_ID}_1"
    model = SoftUpdateDQN.load(run / f"{ENV_ID}.zip", device="cpu")
    assert model.num_timesteps == 2000 and model.double_q and model.exploration_final_eps == 0.0
    assert model.n_steps == 3 and not model.dueling
    assert model.policy_kwargs["net_arch"] == [256, 256]
    assert "lunar_sb3.LandingEvalCallback" in (run / ENV_ID / "config.yml").read_text()
    assert (run / "evaluations.npz").is_file()  # the zoo's own evaluation still ran ...
    assert not (run / "best_model.zip").exists()  # ... but best_model.zip belongs to LandingEvalCallback (25k steps)


@pytest.fixture(scope="module")
def quick_benchmark(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """``benchmark robust --quick --seeds 1``: one zoo run of the preset whose callback evaluates every 1000 steps."""
    folder = tmp_path_factory.mktemp("robust")
    check(python("-m", "lunar_sb3.benchmark", "robust", "--quick", "--seeds", "1", "--seed0", "3", "--out", "out",
                 cwd=folder))  # fmt: skip
    return folder / "out", json.loads((folder / "out" / "robust.json").read_text())


def test_benchmark_robust_quick_writes_its_three_files(quick_benchmark: tuple[Path, dict[str, Any]]) -> None:
    out, data = quick_benchmark
    (result,) = data["runs"]
    assert result["seed"] == 3 and result["model"] == "best_model.zip" and result["steps"] == 2000
    assert result["evaluation"]["n_episodes"] == 2 and result["test_seeds"] == [53_000, 53_001]
    assert result["selection_evaluations"] == 2 and result["wall_seconds"] > 0
    assert "--eval-freq -1" in result["command"] and "-conf" in result["command"]
    assert data["aggregate"]["seeds"] == 1 and set(data["aggregate"]["outcome_shares"]) >= {"landed", "crashed"}
    table = (out / "robust.md").read_text()
    assert table.startswith("| seed | model tested |") and "| 3 | best_model.zip | 2,000 |" in table
    with Image.open(out / "robust_outcomes.png") as image:
        assert image.format == "PNG" and image.width > 300
    summary = (out / "logs" / "seed_3" / "train.log").read_text()  # what the user saw at the end of training
    assert "Kept model (" in summary and "; confirmation on 2 new episodes" in summary
    assert "--load-best -n 1000" in summary and "best_model.zip   # 100 greedy episodes" in summary
    assert "Landing check" not in summary  # the landing evaluations said it already


def test_benchmark_robust_resumes_without_training_again(quick_benchmark: tuple[Path, dict[str, Any]]) -> None:
    """The same command again reuses each seed's result; with the result gone but the run trained, it only tests."""
    out, data = quick_benchmark
    seed_folder = out / "logs" / "seed_3"
    trained_at = (seed_folder / "train.log").stat().st_mtime
    check(python("-m", "lunar_sb3.benchmark", "robust", "--quick", "--seeds", "1", "--seed0", "3", "--out", "out",
                 cwd=out.parent))  # fmt: skip
    assert json.loads((out / "robust.json").read_text())["runs"] == data["runs"]
    (seed_folder / "result.json").unlink()  # as if the benchmark had been stopped after training
    check(python("-m", "lunar_sb3.benchmark", "robust", "--quick", "--seeds", "1", "--seed0", "3", "--out", "out",
                 cwd=out.parent))  # fmt: skip
    again = json.loads((out / "robust.json").read_text())["runs"][0]
    assert (seed_folder / "train.log").stat().st_mtime == trained_at  # not trained again
    assert not (seed_folder / "soft_dqn" / f"{ENV_ID}_2").exists()
    assert again["evaluation"] == data["runs"][0]["evaluation"] and 0 < again["wall_seconds"]


def test_zoo_run_folder_gets_best_model_and_record_video_loads_it(
    quick_benchmark: tuple[Path, dict[str, Any]],
) -> None:
    out, data = quick_benchmark
    run = Path(data["runs"][0]["run"])
    assert run == out / "logs" / "seed_3" / "soft_dqn" / f"{ENV_ID}_1"  # the zoo set the callback's folder
    history = json.loads((run / "landing_evaluations.json").read_text())
    assert [e["timesteps"] for e in history["evaluations"]] == [1000, 2000] and (run / "best_model.zip").is_file()
    zoo("record_video", "-f", str(out / "logs" / "seed_3"), "--load-best", "-n", "100", cwd=out)
    assert list((run / "videos").glob("best-model-*.mp4"))


# ---------------------------------------------------------------------------------------------- pictures
def test_outcome_chart_accepts_shares_summaries_and_lists(tmp_path: Path) -> None:
    assert outcome_shares([{"landed": 1.0}, summary(0, landed=0.5, crashed=0.5)])["landed"] == 0.75
    path = outcome_chart(
        {"shares": {"landed": 0.9, "timeout": 0.1}, "summary": summary(200, 0.6, 0.2), "seeds": [summary(0, 1.0)] * 2},
        tmp_path / "chart.png",
        title="three bars",
    )
    with Image.open(path) as image:
        assert image.format == "PNG"
    assert [p.name for p in tmp_path.iterdir()] == ["chart.png"]  # no temporary file left behind
    with pytest.raises(ValueError, match="unknown outcome"):
        outcome_chart({"bad": {"hovered": 1.0}}, tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"must end in \.png"):
        outcome_chart({"a": {"landed": 1.0}}, tmp_path / "chart.jpg")


def test_gif_shows_the_evaluated_episodes(tmp_path: Path) -> None:
    """Rendering does not change an episode: the GIF's episodes are the evaluation's, seed for seed."""
    model = SoftUpdateDQN("MlpPolicy", ENV_ID, seed=0)
    episodes = landing_gif(model, ENV_ID, [5, 6], tmp_path / "two.gif", max_frames=40)
    evaluation = evaluate_model(model, ENV_ID, n_episodes=2, seed=5)["episodes"]
    assert [e["return"] for e in episodes] == [round(r, 1) for r in evaluation["returns"]]
    assert [e["outcome"] for e in episodes] == evaluation["outcomes"]
    with Image.open(tmp_path / "two.gif") as image:
        assert 2 < image.n_frames <= 40 + 2 and image.size == (300, 200)


def test_evaluate_writes_gif_and_chart(tmp_path: Path) -> None:
    SoftUpdateDQN("MlpPolicy", ENV_ID, seed=0).save(tmp_path / "model.zip")
    done = check(python("-m", "lunar_sb3.evaluate", "model.zip", "--gif", "x.gif", "--chart", "c.png", "-n", "2",
                        cwd=tmp_path))  # fmt: skip
    assert "wrote c.png" in done.stdout and "wrote x.gif (seed 0 " in done.stdout
    with Image.open(tmp_path / "x.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames > 1
    with Image.open(tmp_path / "c.png") as chart:
        assert chart.format == "PNG"
    assert (tmp_path / "x.gif").stat().st_size < 3_000_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gif", "x.png"], "--gif x.png: the file name must end in .gif"),
        (["--chart", "nowhere/c.png"], "cannot write nowhere/c.png: folder nowhere does not exist"),
        (["--chart", "c.jpg"], "--chart c.jpg: the file name must end in .png, .svg, .pdf"),
        (["--gif-seeds", "1"], "--gif-seeds chooses the episodes of a GIF: pass --gif PATH too"),
        (
            ["--gif", "x.gif", "--gif-seeds", "-1"],
            "--gif-seeds must be >= 0 (gymnasium rejects negative seeds), got -1",
        ),
    ],
)
def test_evaluate_rejects_bad_picture_options_before_playing(tmp_path: Path, args: list[str], message: str) -> None:
    SoftUpdateDQN("MlpPolicy", ENV_ID, seed=0).save(tmp_path / "model.zip")
    done = python("-m", "lunar_sb3.evaluate", "model.zip", "-n", "2", *args, cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == ""  # no episode was played
    assert done.stderr.strip().splitlines()[-1] == f"python -m lunar_sb3.evaluate: error: {message}"


def test_pictures_chart_command_groups_benchmark_files_by_agent(tmp_path):
    import json
    import subprocess
    import sys

    from PIL import Image

    shares = {"landed": 0.5, "landed_off_pad": 0.2, "crashed": 0.1, "out_of_bounds": 0.0, "timeout": 0.2}
    solve = {"runs": [{"agent": "soft_dqn", "evaluation": {"outcome_shares": shares}}] * 2}
    robust = {"meta": {"conf": "hyperparams/soft_dqn_robust.yml"}, "runs": [{"evaluation": {"outcome_shares": shares}}]}
    (tmp_path / "solve.json").write_text(json.dumps(solve))
    (tmp_path / "robust.json").write_text(json.dumps(robust))
    from lunar_sb3.pictures import results_by_agent

    grouped = results_by_agent([tmp_path / "solve.json", tmp_path / "robust.json"])
    assert list(grouped) == ["SoftUpdateDQN (defaults)", "robust preset (soft_dqn_robust)"]
    assert len(grouped["SoftUpdateDQN (defaults)"]) == 2
    command = [sys.executable, "-m", "lunar_sb3.pictures", "chart", str(tmp_path / "c.png")]
    result = subprocess.run(
        [*command, str(tmp_path / "solve.json"), str(tmp_path / "robust.json")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert Image.open(tmp_path / "c.png").size[0] > 100
    bad = subprocess.run([*command, str(tmp_path / "missing.json")], capture_output=True, text=True)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "missing.json" in bad.stderr


def test_the_bar_must_hold_on_unseen_episodes_before_training_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """A model that meets the bar on selection but not on the confirmation episodes keeps training."""
    script = Scripted(
        [
            summary(280, landed=0.99, solved=0.99),  # 100: selection meets the bar...
            summary(262, landed=0.93, solved=0.95),  # ...confirmation does not: kept, but training goes on
            summary(200, landed=0.70),  # 200: worse, not kept
            summary(275, landed=0.98, solved=0.99),  # 300: selection meets the bar...
            summary(272, landed=0.98, solved=0.98),  # ...and confirmation too: kept, stop
            summary(400, landed=1.0, solved=1.0),  # never reached
        ]
    )
    monkeypatch.setattr(lunar_sb3.landing_eval, "evaluate_model", script)
    bar = dict(stop_mean_return=270, stop_landed_share=0.98, stop_min_return_share=0.98, stop_max_crashed_share=0.0)
    callback = LandingEvalCallback(
        eval_freq=100, n_eval_episodes=5, eval_seed=7, n_confirm_episodes=4, confirm_seed=100,
        best_model_save_path=tmp_path, **bar,
    )  # fmt: skip
    model = tiny_model()
    model.learn(5_000, callback=callback)

    assert [(c["timesteps"], c["n_episodes"], c["seed"]) for c in script.calls] == [
        (100, 5, 7), (100, 4, 100), (200, 5, 7), (300, 5, 7), (300, 4, 100),
    ]  # fmt: skip
    assert model.num_timesteps == 300 and callback.bar_met_at == 300
    assert callback.best["timesteps"] == 300 and callback.best["confirmation"]["return_mean"] == 272
    history = json.loads((tmp_path / "landing_evaluations.json").read_text())
    assert [e["saved"] for e in history["evaluations"]] == [True, False, True]
    assert history["evaluations"][0]["confirmation"]["meets_bar"] is False
    assert history["confirm_seeds"] == [100, 103] and history["best"]["confirmation"]["score"] == 370
    out = capsys.readouterr().out
    assert "met on selection at 100 env steps; on 4 new episodes: return 262.0" in out and "not confirmed" in out
    assert "confirmed: stopping training" in out


def test_the_kept_model_is_confirmed_when_training_ends_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = Scripted([summary(240, landed=0.9), summary(230, landed=0.85)])
    monkeypatch.setattr(lunar_sb3.landing_eval, "evaluate_model", script)
    callback = LandingEvalCallback(eval_freq=100, n_confirm_episodes=3, best_model_save_path=tmp_path)
    tiny_model().learn(150, callback=callback)
    assert [(c["timesteps"], c["n_episodes"]) for c in script.calls] == [(100, 100), (100, 3)]  # the kept model's
    assert callback.best["confirmation"]["return_mean"] == 230
    assert "Kept model (100 env steps): selection return 240.0" in callback.kept_line()
    assert "confirmation on 3 new episodes return 230.0" in callback.kept_line()
    assert json.loads((tmp_path / "landing_evaluations.json").read_text())["best"]["confirmation"]["score"] == 315


def test_the_defaults_are_the_goal() -> None:
    callback = LandingEvalCallback()
    assert callback.stop_bar() == {
        "stop_mean_return": 270.0, "stop_landed_share": 0.98, "stop_min_return_share": 0.98,
        "stop_max_crashed_share": 0.0,
    }  # fmt: skip
    assert (callback.n_eval_episodes, callback.n_confirm_episodes) == (100, 100)
    with pytest.raises(ValueError, match="confirmation episodes are not selection episodes"):
        LandingEvalCallback(eval_seed=0, n_eval_episodes=100, confirm_seed=50)


def test_the_target_network_is_a_candidate_and_the_online_weights_come_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With evaluate_target_network, the target network's weights act in the Q-network for its evaluation; if it
    lands better, best_model.zip holds them; training continues with the online weights unchanged."""
    import torch as th

    model = tiny_model()
    with th.no_grad():
        for parameter in model.q_net_target.parameters():
            parameter.add_(1.0)  # tell the two networks apart
    seen: list[str] = []

    def scripted(model_: Any, env_id: str, n_episodes: int, seed: int, vec_normalize: Any = None) -> dict:
        is_target = all(
            th.equal(a, b) for a, b in zip(model_.q_net.parameters(), model_.q_net_target.parameters(), strict=True)
        )
        seen.append("target" if is_target else "online")
        result = summary(250, landed=0.95) if is_target else summary(200, landed=0.5)
        return {"summary": result, "episodes": {"returns": [result["return_mean"]]}}

    monkeypatch.setattr(lunar_sb3.landing_eval, "evaluate_model", scripted)
    online_before = [p.detach().clone() for p in model.q_net.parameters()]
    callback = LandingEvalCallback(
        eval_freq=100, n_confirm_episodes=0, evaluate_target_network=True, best_model_save_path=tmp_path
    )
    model.learn(150, callback=callback)
    assert seen == ["online", "target"]
    assert callback.best["network"] == "target" and "target network" in callback.kept_line()
    kept = SoftUpdateDQN.load(tmp_path / "best_model.zip")
    for kept_weight, target_weight in zip(kept.q_net.parameters(), model.q_net_target.parameters(), strict=True):
        assert th.equal(kept_weight, target_weight)
    for weight, before in zip(model.q_net.parameters(), online_before, strict=True):
        assert th.equal(weight, before)  # learning_starts is after the test: nothing trained, all restored
