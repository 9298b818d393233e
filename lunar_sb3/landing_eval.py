"""Train past "solved" and keep the policy that *lands*: ``LandingEvalCallback``.

The lab stops once the last 100 *training* episodes average 200, but the greedy policy at that moment is noisy: it
lands between the flags in roughly half to four fifths of the episodes. DQN's greedy policy keeps changing while it
trains, so a better lander appears somewhere later and may be lost again. This callback plays fixed-seed greedy
episodes every ``eval_freq`` env steps, keeps the best model by a landing-aware score, and stops training once an
evaluation meets a landing bar. The score and the bar are functions of ``lunar_sb3.evaluation``
(``landing_score``, ``meets_bar``), so reports can apply the same rule.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
from stable_baselines3.common.callbacks import BaseCallback

from lunar_sb3.evaluation import SCORE_FORMULA, evaluate_model, landing_score, meets_bar
from lunar_sb3.landing import LandingOutcome
from lunar_sb3.outputs import write_text_atomic

HISTORY_FILE = "landing_evaluations.json"
"""The evaluation history written beside ``best_model.zip``."""
BEST_MODEL_FILE = "best_model.zip"
"""The file name rl-zoo3's ``--load-best`` looks for in a run folder."""


class LandingEvalCallback(BaseCallback):
    """Every ``eval_freq`` env steps: ``n_eval_episodes`` greedy episodes on fixed seeds, keep the best, maybe stop.

    Episode i of every evaluation is reset with seed ``eval_seed + i`` (``lunar_sb3.evaluate.evaluate_model``), so
    all evaluations of a run, and of different runs, face the same landing sites and start states; a model is
    compared with its predecessors on equal terms. Keep ``eval_seed`` away from the seeds of any final evaluation
    (``python -m lunar_sb3.benchmark robust`` uses 50,000 and up), or the selection sees the test episodes.

    Which model is best: an evaluation that meets the stop bar beats one that does not; among equals the higher
    ``landing_score`` (return_mean + landed_weight·100·landed_share − crash_penalty·100·crashed_share) wins, and a
    tie keeps the earlier model. So the model saved when training stops is the one that met the bar.
    On improvement the model is saved to ``<best_model_save_path>/best_model.zip``, the name rl-zoo3's
    ``--load-best`` loads. After every evaluation the whole history is rewritten atomically to
    ``<best_model_save_path>/landing_evaluations.json``; ``eval/landing_score``, ``eval/landed_share`` and
    ``eval/mean_return`` go to the SB3 logger (CSV, tensorboard) and ``verbose >= 1`` prints one line.

    Training stops (``on_step`` returns False) once an evaluation meets every given criterion — mean return >=
    ``stop_mean_return``, landed share >= ``stop_landed_share``, share of episodes with return >= 200 >=
    ``stop_min_return_share``, crashed share <= ``stop_max_crashed_share`` — *and* the same model meets them again on
    ``n_confirm_episodes`` episodes the selection never saw (seeds ``confirm_seed + i``). Why: the kept model is the
    best of dozens of evaluations, so its selection score is optimistic (a run that met a bar on 50 selection
    episodes landed 3 points less on new ones). A bar met on selection but not confirmed keeps training. None
    disables a criterion; with all four None training never stops early. The kept model's confirmation is also run
    when training ends without one, so ``best`` and ``landing_evaluations.json`` always show both scores side by
    side (``best["confirmation"]``); ``n_confirm_episodes=0`` turns confirmation off.

    The defaults are the robust lander's goal: mean >= 270, >= 98 % landed, >= 98 % of episodes >= 200, no crash,
    judged on 100 selection episodes and confirmed on 100 more.

    Evaluations happen at the first step at or past each multiple of ``eval_freq`` *total env steps*
    (``model.num_timesteps``), so the rate does not change with the number of envs; none happens before
    ``min_timesteps`` (an early greedy policy is not worth the episodes).

    In an rl-zoo3 YAML ``callback:`` list, ``lunar_sb3.LandingEvalCallback: {eval_freq: 25000, ...}``; with
    ``best_model_save_path`` left out, ``--algo soft_dqn`` sets it to the run folder (``logs/soft_dqn/<ENV>_<N>``),
    so ``record_video --load-best`` finds the model. In Python pass the folder yourself; without one, nothing is
    written (the history is still in ``self.evaluations``).

    The evaluation env is ``gym.make(env_id)`` (default: the training env's id) without the training env's
    ``env_kwargs``; if the model trains on ``VecNormalize``-d observations, the current statistics are applied.

    :param eval_freq: env steps between evaluations (all envs together)
    :param n_eval_episodes: greedy episodes per evaluation
    :param eval_seed: episode i of an evaluation is reset with seed ``eval_seed + i``
    :param best_model_save_path: folder for ``best_model.zip`` and ``landing_evaluations.json`` (created if needed)
    :param min_timesteps: no evaluation (hence no stop) before this many env steps
    :param landed_weight: score points per percent of episodes landed between the flags
    :param crash_penalty: score points taken per percent of episodes crashed
    :param stop_mean_return: stop bar: mean greedy return at least this
    :param stop_landed_share: stop bar: share landed between the flags at least this, in [0, 1]
    :param stop_min_return_share: stop bar: share of episodes with return >= 200 at least this, in [0, 1]
    :param stop_max_crashed_share: stop bar: share crashed at most this, in [0, 1]
    :param env_id: evaluation env id (default: the training env's)
    :param evaluate_target_network: also evaluate the target network as a candidate policy: with soft updates it
        is an average of the online weights over the last few thousand steps (τ = 1e-3 every 4 steps), free to
        evaluate and steadier than the online network; when it is the better lander, ``best_model.zip`` holds its
        weights as the Q-network (``record["network"] == "target"``)
    :param n_confirm_episodes: greedy episodes that confirm a model meeting the bar (0: no confirmation)
    :param confirm_seed: episode i of a confirmation is reset with seed ``confirm_seed + i``
    :param verbose: 0 silent, 1 one line per evaluation
    """

    def __init__(
        self,
        eval_freq: int = 25_000,
        n_eval_episodes: int = 100,
        eval_seed: int = 20_000,
        best_model_save_path: str | os.PathLike[str] | None = None,
        min_timesteps: int = 0,
        landed_weight: float = 1.0,
        crash_penalty: float = 1.0,
        stop_mean_return: float | None = 270.0,
        stop_landed_share: float | None = 0.98,
        stop_min_return_share: float | None = 0.98,
        stop_max_crashed_share: float | None = 0.0,
        env_id: str | None = None,
        evaluate_target_network: bool = False,
        n_confirm_episodes: int = 100,
        confirm_seed: int = 30_000,
        verbose: int = 1,
    ) -> None:
        super().__init__(verbose)
        self.eval_freq = _count("eval_freq", eval_freq, 1)
        self.n_eval_episodes = _count("n_eval_episodes", n_eval_episodes, 1)
        self.eval_seed = _count("eval_seed", eval_seed, 0)
        self.min_timesteps = _count("min_timesteps", min_timesteps, 0)
        self.n_confirm_episodes = _count("n_confirm_episodes", n_confirm_episodes, 0)
        self.confirm_seed = _count("confirm_seed", confirm_seed, 0)
        overlap = max(self.eval_seed, self.confirm_seed) < min(
            self.eval_seed + self.n_eval_episodes, self.confirm_seed + self.n_confirm_episodes
        )
        if overlap:
            raise _fail("confirm_seed", confirm_seed, "such that the confirmation episodes are not selection episodes")
        self.landed_weight = _weight("landed_weight", landed_weight)
        self.crash_penalty = _weight("crash_penalty", crash_penalty)
        self.stop_mean_return = _optional_number("stop_mean_return", stop_mean_return)
        self.stop_landed_share = _optional_share("stop_landed_share", stop_landed_share)
        self.stop_min_return_share = _optional_share("stop_min_return_share", stop_min_return_share)
        self.stop_max_crashed_share = _optional_share("stop_max_crashed_share", stop_max_crashed_share)
        if env_id is not None and not isinstance(env_id, str):
            raise ValueError(f"LandingEvalCallback: env_id={env_id!r} must be a gymnasium env id or None")
        self.env_id = env_id
        if not isinstance(evaluate_target_network, bool):
            raise _fail("evaluate_target_network", evaluate_target_network, "True or False")
        self.evaluate_target_network = evaluate_target_network
        self.best_model_save_path = None if best_model_save_path is None else Path(best_model_save_path)
        self.evaluations: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None  # the evaluation whose model is in best_model.zip
        self.bar_met_at: int | None = None  # env steps at the evaluation that stopped training
        self._next_eval_at = self.eval_freq

    # ------------------------------------------------------------------ set-up
    def _init_callback(self) -> None:
        if self.env_id is None:
            self.env_id = self._training_env_id()
        try:
            LandingOutcome(gym.make(self.env_id, render_mode=None)).close()
        except (gym.error.Error, TypeError) as error:
            raise ValueError(f"LandingEvalCallback: cannot evaluate on env {self.env_id!r} ({error})") from None
        if self.best_model_save_path is not None:
            self.best_model_save_path.mkdir(parents=True, exist_ok=True)

    def _training_env_id(self) -> str:
        spec = None
        if self.training_env is not None:
            try:
                spec = self.training_env.get_attr("spec", [0])[0]
            except (AttributeError, IndexError):
                spec = None
        if spec is None:
            raise ValueError("LandingEvalCallback: the training env has no gymnasium spec; pass env_id")
        return spec.id

    def _on_training_start(self) -> None:
        # The first multiple of eval_freq after the current count: -i / reset_num_timesteps=False keep counting
        self._next_eval_at = (self.num_timesteps // self.eval_freq + 1) * self.eval_freq
        self._start_time = time.perf_counter()

    # ------------------------------------------------------------------ the loop
    def _on_step(self) -> bool:
        if self.num_timesteps < self._next_eval_at:
            return True
        self._next_eval_at = (self.num_timesteps // self.eval_freq + 1) * self.eval_freq
        if self.num_timesteps < self.min_timesteps:
            return True
        return self.evaluate()

    def _play(self, n_episodes: int, seed: int) -> dict[str, Any]:
        """``n_episodes`` greedy episodes of the current model from ``seed`` on, summarised for a record."""
        start = time.perf_counter()
        result = evaluate_model(
            self.model,
            env_id=self.env_id,
            n_episodes=n_episodes,
            seed=seed,
            vec_normalize=self.model.get_vec_normalize_env(),
        )
        summary = result["summary"]
        returns = result.get("episodes", {}).get("returns")
        return {
            "score": round(landing_score(summary, self.landed_weight, self.crash_penalty), 3),
            "meets_bar": meets_bar(summary, **self.stop_bar()),
            "return_mean": summary["return_mean"],
            "return_std": _float_or_none(summary.get("return_std")),
            "return_min": None if not returns else float(min(returns)),
            "solved_share": summary["solved_share"],
            "outcome_shares": dict(summary["outcome_shares"]),
            "length_mean": summary.get("length_mean"),
            "main_engine_fires_mean": summary.get("main_engine_fires_mean"),
            "side_engine_fires_mean": summary.get("side_engine_fires_mean"),
            "eval_seconds": round(time.perf_counter() - start, 2),
        }

    def evaluate(self) -> bool:
        """One evaluation now: record it, keep the model if it is the best so far, confirm it if it meets the bar;
        False (stop) once a model meets the bar on selection and on confirmation."""
        met = self._evaluate_network("online")
        if self.evaluate_target_network and not met:
            with self._target_weights_in_q_net():
                met = self._evaluate_network("target")
        return not met

    def _evaluate_network(self, network: str) -> bool:
        """Evaluate the model as it acts now (its Q-network: ``network`` says whose weights); True if the bar is
        met on selection and confirmation."""
        record = {
            "timesteps": int(self.num_timesteps),
            "network": network,
            **self._play(self.n_eval_episodes, self.eval_seed),
        }
        record["saved"] = False
        record["confirmation"] = None
        record["exploration_rate"] = _float_or_none(getattr(self.model, "exploration_rate", None))
        record["elapsed_seconds"] = round(time.perf_counter() - getattr(self, "_start_time", time.perf_counter()), 1)
        if record["meets_bar"] and self.n_confirm_episodes:
            record["confirmation"] = self._play(self.n_confirm_episodes, self.confirm_seed)
        met = record["meets_bar"] and (record["confirmation"] is None or record["confirmation"]["meets_bar"])
        improved = self.best is None or (met, record["meets_bar"], record["score"]) > self._rank(self.best)
        if improved:
            self.best = record
            if self.best_model_save_path is not None:
                self.model.save(self.best_model_save_path / BEST_MODEL_FILE)
                record["saved"] = True
        self.evaluations.append(record)
        if met:
            self.bar_met_at = record["timesteps"]
        self._write_history()
        self._log(record, improved)
        return met

    @contextlib.contextmanager
    def _target_weights_in_q_net(self) -> Iterator[None]:
        """The target network's weights in the Q-network, in place (views of the weights stay valid), then back."""
        online = [p.data for p in self.model.q_net.parameters()]
        target = [p.data for p in self.model.q_net_target.parameters()]
        saved = [w.clone() for w in online]
        for weight, average in zip(online, target, strict=True):
            weight.copy_(average)
        try:
            yield
        finally:
            for weight, kept in zip(online, saved, strict=True):
                weight.copy_(kept)

    @staticmethod
    def _rank(record: dict[str, Any]) -> tuple[bool, bool, float]:
        """Confirmed bar first, then the bar on selection, then the score; a tie keeps the earlier model."""
        confirmation = record["confirmation"]
        confirmed = record["meets_bar"] and (confirmation is None or confirmation["meets_bar"])
        return confirmed, record["meets_bar"], record["score"]

    def _on_training_end(self) -> None:
        """Confirm the kept model on unseen episodes if nothing did yet, so its two scores are always reported."""
        if self.best is None or self.best["confirmation"] is not None or not self.n_confirm_episodes:
            return
        if self.best_model_save_path is None or not (self.best_model_save_path / BEST_MODEL_FILE).is_file():
            return
        kept = type(self.model).load(self.best_model_save_path / BEST_MODEL_FILE, device="cpu")
        current, self.model = self.model, kept
        try:
            self.best["confirmation"] = self._play(self.n_confirm_episodes, self.confirm_seed)
        finally:
            self.model = current
        self._write_history()
        if self.verbose >= 1:
            print(self.kept_line(), flush=True)

    def kept_line(self) -> str:
        """The kept model's selection and confirmation figures in one line."""
        if self.best is None:
            return "No landing evaluation ran."

        def figures(record: dict[str, Any]) -> str:
            shares = record["outcome_shares"]
            return (
                f"return {record['return_mean']:.1f}, >= 200 {record['solved_share']:.0%}, "
                f"landed {shares.get('landed', 0.0):.0%}, crashed {shares.get('crashed', 0.0):.0%}"
            )

        network = " target network" if self.best.get("network") == "target" else ""
        line = f"Kept model ({self.best['timesteps']:,} env steps{network}): selection {figures(self.best)}"
        if self.best["confirmation"] is not None:
            line += f"; confirmation on {self.n_confirm_episodes} new episodes {figures(self.best['confirmation'])}"
        return line + "."

    # ------------------------------------------------------------------ reporting
    def stop_bar(self) -> dict[str, float | None]:
        return {
            "stop_mean_return": self.stop_mean_return,
            "stop_landed_share": self.stop_landed_share,
            "stop_min_return_share": self.stop_min_return_share,
            "stop_max_crashed_share": self.stop_max_crashed_share,
        }

    def _write_history(self) -> None:
        if self.best_model_save_path is None:
            return
        history = {
            "env_id": self.env_id,
            "eval_freq": self.eval_freq,
            "n_eval_episodes": self.n_eval_episodes,
            "eval_seeds": [self.eval_seed, self.eval_seed + self.n_eval_episodes - 1],
            "n_confirm_episodes": self.n_confirm_episodes,
            "confirm_seeds": [self.confirm_seed, self.confirm_seed + self.n_confirm_episodes - 1]
            if self.n_confirm_episodes
            else None,
            "score": SCORE_FORMULA,
            "landed_weight": self.landed_weight,
            "crash_penalty": self.crash_penalty,
            "stop_bar": self.stop_bar(),
            "bar_met_at": self.bar_met_at,
            "best": None
            if self.best is None
            else {k: self.best.get(k) for k in ("timesteps", "network", "score", "meets_bar", "confirmation")},
            "evaluations": self.evaluations,
        }
        write_text_atomic(self.best_model_save_path / HISTORY_FILE, json.dumps(history, indent=1) + "\n")

    def _log(self, record: dict[str, Any], improved: bool) -> None:
        shares = record["outcome_shares"]
        self.logger.record("eval/landing_score", record["score"])
        self.logger.record("eval/landed_share", shares.get("landed", 0.0))
        self.logger.record("eval/mean_return", record["return_mean"])
        self.logger.record("eval/crashed_share", shares.get("crashed", 0.0))
        self.logger.record("eval/solved_share", record["solved_share"])
        self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        self.logger.dump(self.num_timesteps)
        if self.verbose < 1:
            return
        best = "new best" + (", saved" if record["saved"] else "") if improved else f"best {self.best['score']:.1f}"
        network = " target" if record["network"] == "target" else ""
        print(
            f"landing eval {record['timesteps']:9,d} steps{network} | return {record['return_mean']:6.1f} ± "
            f"{record['return_std'] or 0.0:5.1f} | >= 200 {100 * record['solved_share']:3.0f} % | "
            f"landed {100 * shares.get('landed', 0.0):3.0f} % | crashed {100 * shares.get('crashed', 0.0):3.0f} % | "
            f"score {record['score']:6.1f} ({best}) | {record['eval_seconds']:.1f} s",
            flush=True,
        )
        if record["meets_bar"]:
            bar = ", ".join(
                f"{name.removeprefix('stop_')} {value:g}"
                for name, value in self.stop_bar().items()
                if value is not None
            )
            confirmation = record["confirmation"]
            if confirmation is None:
                print(f"Landing bar met at {record['timesteps']:,} env steps ({bar}): stopping training.", flush=True)
            else:
                c_shares = confirmation["outcome_shares"]
                verdict = "confirmed: stopping training" if confirmation["meets_bar"] else "not confirmed: training on"
                print(
                    f"Landing bar ({bar}) met on selection at {record['timesteps']:,} env steps; on "
                    f"{self.n_confirm_episodes} new episodes: return {confirmation['return_mean']:.1f}, landed "
                    f"{100 * c_shares.get('landed', 0.0):.0f} %, crashed {100 * c_shares.get('crashed', 0.0):.0f} % "
                    f"— {verdict}.",
                    flush=True,
                )


def _float_or_none(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- validation
def _fail(name: str, value: object, rule: str) -> ValueError:
    return ValueError(f"LandingEvalCallback: {name}={value!r} is invalid; {name} must be {rule}")


def _count(name: str, value: object, minimum: int) -> int:
    """An integer >= minimum; a whole float (YAML's ``!!float 2.5e4``) is accepted."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer():
        raise _fail(name, value, f"an integer >= {minimum}")
    if value < minimum:
        raise _fail(name, value, f"an integer >= {minimum}")
    return int(value)


def _weight(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise _fail(name, value, "a finite number >= 0")
    return float(value)


def _optional_number(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(name, value, "a finite number or None (no such criterion)")
    return float(value)


def _optional_share(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise _fail(name, value, "a share in [0, 1] or None (no such criterion)")
    return float(value)
