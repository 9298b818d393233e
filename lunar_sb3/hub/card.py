"""The model card (``README.md``) of a packaged lander: Hub metadata, how often it lands, how to load and watch it.

The YAML header is what the Hub reads: ``library_name``, ``tags`` and a ``model-index`` whose first metric is
``mean_reward`` as ``"mean +/- std"`` (the form huggingface_sb3 writes and the Deep RL course leaderboard parses),
followed by the landing shares. It is built with ``huggingface_hub``'s own ``ModelCardData``.
"""

from __future__ import annotations

from typing import Any

import yaml
from huggingface_hub import EvalResult, ModelCardData

from lunar_sb3.hub.files import CHART_FILE, GIF_FILE, ZOO_ALGO, model_file_name
from lunar_sb3.landing import OUTCOMES
from lunar_sb3.pictures import OUTCOME_LABELS

PLACEHOLDER_REPO = "USER/NAME"
"""Shown in the commands of a card packaged without ``--repo-id``."""
TAGS = ("deep-reinforcement-learning", "reinforcement-learning", "stable-baselines3", "rl-zoo3", "dqn", "lunar_sb3")

# Attributes of a SoftUpdateDQN that the card lists, with the lab's value (None: the lab has no such option)
_HYPERPARAMETERS: tuple[tuple[str, Any], ...] = (
    ("gamma", 0.995),
    ("tau", 1e-3),
    ("target_update_interval", 4),
    ("batch_size", 64),
    ("buffer_size", 100_000),
    ("train_freq", 4),
    ("gradient_steps", 1),
    ("exploration_decay", 0.995),
    ("exploration_final_eps", 0.01),
    ("loss", "mse"),
    ("double_q", False),
    ("dueling", False),
    ("n_steps", 1),
    ("prioritized_replay", False),
)


def card_metadata(results: dict[str, Any]) -> ModelCardData:
    """The Hub metadata: library, tags and the model-index of the package's evaluation."""
    summary, env_id = results["summary"], results["env_id"]

    def metric(metric_type: str, name: str, value: Any) -> EvalResult:
        return EvalResult(
            task_type="reinforcement-learning",
            task_name="reinforcement-learning",
            dataset_type=env_id,
            dataset_name=env_id,
            metric_type=metric_type,
            metric_name=name,
            metric_value=value,
        )

    episodes = results["n_eval_episodes"]
    metrics = [metric("mean_reward", "mean_reward", f"{summary['return_mean']:.2f} +/- {summary['return_std']:.2f}")]
    metrics.append(metric("landed_share", f"landed between the flags (% of {episodes})", _percent(summary, "landed")))
    metrics.append(metric("crashed_share", f"crashed (% of {episodes})", _percent(summary, "crashed")))
    metrics.append(metric("solved_share", f"return >= 200 (% of {episodes})", round(100 * summary["solved_share"], 1)))
    return ModelCardData(
        library_name="stable-baselines3",
        tags=[env_id, *TAGS],
        model_name=results["model_class"],
        eval_results=metrics,
    )


def _percent(summary: dict[str, Any], outcome: str) -> float:
    return round(100 * summary["outcome_shares"][outcome], 1)


def _hyperparameter_rows(model: Any) -> list[str]:
    rows = []
    for name, lab in _HYPERPARAMETERS:
        if not hasattr(model, name):
            continue
        value = getattr(model, name)
        value = getattr(value, "frequency", value)  # SB3's TrainFreq
        rows.append(f"| `{name}` | {value!r} | {'' if value == lab else f'{lab!r}'} |")
    net_arch = (getattr(model, "policy_kwargs", None) or {}).get("net_arch", [64, 64])
    rows.append(f"| `net_arch` | {net_arch!r} | {'' if net_arch == [64, 64] else '[64, 64]'} |")
    return rows


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def model_card(results: dict[str, Any], model: Any, config: dict[str, Any], repo_id: str | None = None) -> str:
    """The whole ``README.md``: YAML header, then the card's text."""
    summary, env_id, training = results["summary"], results["env_id"], results["training"]
    repo = repo_id or PLACEHOLDER_REPO
    first, last = results["eval_seeds"]
    model_file = model_file_name(env_id)
    trained = f"This model was saved at **{training['model_env_steps']:,} env steps**"
    if "run_env_steps" in training:
        trained += (
            f"; its training run played {training['run_episodes']:,} episodes ({training['run_env_steps']:,} env "
            f"steps) in {_duration(training['run_wall_clock_s'])} of wall-clock time (from its Monitor file)"
        )
    best = training.get("best_landing_evaluation")
    if best:
        trained += (
            f". It is the run's best landing evaluation (at {best['timesteps']:,} env steps, "
            f"{'meeting' if best.get('meets_bar') else 'not meeting'} the preset's landing bar)"
        )
    outcome_rows = "\n".join(
        f"| {OUTCOME_LABELS[name]} | {100 * summary['outcome_shares'][name]:.0f} % |" for name in OUTCOMES
    )
    gif = ", ".join(
        f"seed {e['seed']}: {e['outcome'].replace('_', ' ')}, return {e['return']:.0f}" for e in results["gif_episodes"]
    )
    episodes = results["n_eval_episodes"]
    evaluate_options = "" if (first, episodes) == (0, 100) else f" -n {episodes} --seed {first}"
    command = training.get("command", f"python -m rl_zoo3.train --algo {ZOO_ALGO} --env {env_id}")
    body = f"""
# {results["model_class"]} landing {env_id}

A Lunar Lander trained with **{results["model_class"]}**: the soft-update Deep Q-Network of the "Deep Q-Learning –
Lunar Lander" lab (a Q-network and a target network that follows it by w⁻ ← τ·w + (1 − τ)·w⁻ every C steps,
ε-greedy exploration decaying per episode), as a [Stable-Baselines3](https://github.com/DLR-RM/stable-baselines3)
`DQN` subclass from the `lunar_sb3` package, trained with the [RL Zoo](https://github.com/DLR-RM/rl-baselines3-zoo)
as `--algo {ZOO_ALGO}`.

## How often it lands

{results["n_eval_episodes"]} greedy episodes, episode i reset with seed {first} + i (seeds {first}..{last}):

| | |
| --- | --- |
| return | {summary["return_mean"]:.1f} ± {summary["return_std"]:.1f} |
| return ≥ 200 | {100 * summary["solved_share"]:.0f} % |
{outcome_rows}
| main engine fires per episode (fuel) | {summary["main_engine_fires_mean"]:.1f} |
| side engine fires per episode | {summary["side_engine_fires_mean"]:.1f} |
| episode length (steps) | {summary["length_mean"]:.1f} |

![How the {results["n_eval_episodes"]} evaluation episodes end]({CHART_FILE})

![Greedy episodes: {gif}]({GIF_FILE})

*{gif}.* Per-episode returns and outcomes are in `results.json`.

## Load it, watch it, evaluate it

{"" if repo_id else "(Packaged without `--repo-id`: USER/NAME stands for the repo it is pushed to.)" + chr(10)}
```bash
# with lunar_sb3 installed (it adds --algo soft_dqn to rl-zoo3):
# put the package into rl-zoo3's folder layout (logs/{ZOO_ALGO}/{env_id}_N/)
python -m lunar_sb3.hub pull {repo} -f logs --trust-remote-code
python -m rl_zoo3.enjoy --algo {ZOO_ALGO} --env {env_id} -f logs
python -m lunar_sb3.evaluate -f logs{evaluate_options}   # the table above, episode for episode
```

In Python:

```python
from huggingface_hub import hf_hub_download
from lunar_sb3 import SoftUpdateDQN

model = SoftUpdateDQN.load(hf_hub_download("{repo}", "{model_file}"))
```

`{model_file}` holds the network and the optimizer's settings but not its state, nor the replay memory: it
plays, and training on from it starts Adam afresh. `python -m lunar_sb3.export` writes the greedy policy as ONNX and
TorchScript files that need neither Stable-Baselines3 nor `lunar_sb3`.

## Training

```bash
{command}
```

{trained}.

Hyperparameters (the run's `config.yml`; everything it does not set is the lab's default):

```yaml
{yaml.safe_dump(config, sort_keys=False).strip()}
```

| | this model | the lab's default, where different |
| --- | --- | --- |
{chr(10).join(_hyperparameter_rows(model))}
"""
    return f"---\n{card_metadata(results).to_yaml()}\n---\n{body}"
