"""Pictures of how landings go: an outcome chart (PNG) and a GIF of greedy episodes.

A table of shares says *that* a lander misses; a stacked bar per agent shows at a glance which misses dominate
(crashes, landings beside the pad, hovering until the time limit), and a short GIF shows what they look like.
Both files are written whole or not at all (``lunar_sb3.outputs.atomic_path``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.vec_env import VecNormalize

from lunar_sb3.landing import OUTCOMES, LandingOutcome, greedy_episode
from lunar_sb3.outputs import atomic_path

OUTCOME_COLOURS = {
    "landed": "#2ca02c",
    "landed_off_pad": "#e6b000",
    "crashed": "#d62728",
    "out_of_bounds": "#9467bd",
    "timeout": "#8c8c8c",
}
"""One fixed colour per outcome, so charts of different runs read the same way."""
OUTCOME_LABELS = {
    "landed": "landed between the flags",
    "landed_off_pad": "landed off the pad",
    "crashed": "crashed",
    "out_of_bounds": "out of bounds",
    "timeout": "timeout (still flying)",
}
CHART_FORMATS = ("png", "svg", "pdf")
"""File types ``outcome_chart`` writes, chosen by the path's suffix."""

OutcomeResult = Mapping[str, Any] | Sequence[Mapping[str, Any]]


def outcome_shares(result: OutcomeResult) -> dict[str, float]:
    """The outcome shares of one bar: a shares dict, an ``evaluate_model`` summary (its ``outcome_shares``), or a
    list of either (e.g. one summary per seed), averaged with equal weight per item.

    :raises ValueError: for an unknown outcome name, a share outside [0, 1] or an empty list
    """
    if isinstance(result, Mapping):
        shares = result.get("outcome_shares", result)
        if not isinstance(shares, Mapping):
            raise ValueError(f"outcome_shares must be a dict of shares, got {shares!r}")
        unknown = set(shares) - set(OUTCOMES)
        if unknown:
            raise ValueError(f"unknown outcome(s) {sorted(unknown)}; outcomes are {', '.join(OUTCOMES)}")
        values = {name: float(shares.get(name, 0.0)) for name in OUTCOMES}
        bad = {name: share for name, share in values.items() if not 0.0 <= share <= 1.0}
        if bad:
            raise ValueError(f"outcome shares must be in [0, 1], got {bad}")
        return values
    items = [outcome_shares(item) for item in result]
    if not items:
        raise ValueError("an empty list of results has no outcome shares")
    return {name: float(np.mean([item[name] for item in items])) for name in OUTCOMES}


def outcome_chart(results: Mapping[str, OutcomeResult], path: str | Path, title: str | None = None) -> Path:
    """One horizontal stacked bar per label (landed / off pad / crashed / out of bounds / timeout), percentages
    written in the segments that are wide enough, a legend with every outcome; saved atomically to ``path``
    (PNG, SVG or PDF by suffix). ``results`` maps a label to anything ``outcome_shares`` accepts.
    """
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in CHART_FORMATS:
        raise ValueError(f"chart {path}: the file name must end in {', '.join('.' + f for f in CHART_FORMATS)}")
    if not results:
        raise ValueError("outcome_chart needs at least one result")
    bars = {str(label): outcome_shares(result) for label, result in results.items()}

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(bars)
    rows = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(8, max(1.6, 0.8 + 0.45 * len(labels))))
    try:
        left = np.zeros(len(labels))
        for name in OUTCOMES:
            widths = np.array([100 * bars[label][name] for label in labels])
            ax.barh(rows, widths, left=left, color=OUTCOME_COLOURS[name], label=OUTCOME_LABELS[name], height=0.7)
            for row, (start, width) in enumerate(zip(left, widths, strict=True)):
                if width >= 6:
                    text_colour = "black" if name in ("landed_off_pad",) else "white"
                    ax.text(
                        start + width / 2,
                        row,
                        f"{width:.0f} %",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color=text_colour,
                    )
            left += widths
        ax.set_yticks(rows, labels)
        ax.invert_yaxis()  # first label on top, as in the dict
        ax.set_xlim(0, 100)
        ax.set_xlabel("share of evaluation episodes (%)")
        if title:
            ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)  # outside, at the right
        with atomic_path(path) as temporary:
            fig.savefig(temporary, dpi=100, format=fmt, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def landing_gif(
    model: BaseAlgorithm,
    env_id: str,
    seeds: Iterable[int],
    path: str | Path,
    fps: int = 25,
    frame_skip: int = 2,
    max_frames: int = 600,
    scale: float = 0.5,
    hold_seconds: float = 1.0,
    vec_normalize: VecNormalize | None = None,
) -> list[dict[str, Any]]:
    """Play one greedy episode per seed (reset with that seed), render it and write the episodes one after the
    other as a GIF, each captioned with its seed, outcome and return, its last frame held ``hold_seconds``.

    Kept small on purpose (a README picture, not a video): every ``frame_skip``-th step is drawn (50 steps/s in
    the env, so ``frame_skip=2`` at ``fps=25`` is real time), frames are scaled by ``scale`` (600x400 → 300x200)
    and share one 64-colour palette, and an episode longer than its share of ``max_frames`` (a lander hovering
    until the time limit) is thinned out, so it plays faster instead of making the file long. Three landings
    take well under 1 MB. Returns one dict per episode: ``seed``, ``outcome``, ``return``, ``length``.
    """
    from PIL import Image, ImageDraw

    seeds = [int(seed) for seed in seeds]
    if not seeds or min(seeds) < 0:
        raise ValueError(f"landing_gif needs one or more seeds >= 0, got {seeds}")
    for name, value in (("fps", fps), ("frame_skip", frame_skip), ("max_frames", max_frames)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"landing_gif: {name}={value!r} must be an integer >= 1")
    if not 0 < scale <= 1 or not math.isfinite(hold_seconds) or hold_seconds < 0:
        raise ValueError(f"landing_gif: scale={scale!r} must be in (0, 1] and hold_seconds={hold_seconds!r} >= 0")
    per_episode = max(2, max_frames // len(seeds))
    env = LandingOutcome(gym.make(env_id, render_mode="rgb_array"))
    episodes: list[dict[str, Any]] = []
    clips: list[list[Image.Image]] = []
    try:
        for seed in seeds:
            frames, skip = [], frame_skip

            def record(step: int, done: bool) -> None:
                nonlocal frames, skip
                if step % skip == 0 or done:
                    frames.append(_shrink(env.render(), scale))
                if len(frames) > per_episode:  # thin out: keep every other frame and draw half as often
                    frames, skip = frames[::2], skip * 2

            env.reset(seed=seed)  # the first frame: the lander at the top, before any action
            frames.append(_shrink(env.render(), scale))
            episode_return, step, info = greedy_episode(model, env, seed, vec_normalize, on_step=record)
            episode = {"seed": seed, "outcome": info["outcome"], "return": round(episode_return, 1), "length": step}
            episodes.append(episode)
            caption = f"seed {seed}: {info['outcome'].replace('_', ' ')}, return {episode_return:.0f}"
            for frame in frames:
                ImageDraw.Draw(frame).text((4, 3), caption, fill=(255, 255, 255))
            clips.append(frames)
    finally:
        env.close()
    frames = [frame for clip in clips for frame in clip]
    frame_ms = round(1000 / fps)
    durations = [
        frame_ms if i < len(clip) - 1 else max(frame_ms, round(1000 * hold_seconds))
        for clip in clips
        for i in range(len(clip))
    ]
    palette = _shared_palette(frames)
    indexed = [frame.quantize(palette=palette, dither=Image.Dither.NONE) for frame in frames]
    with atomic_path(path) as temporary:
        indexed[0].save(
            temporary,
            format="GIF",
            save_all=True,
            append_images=indexed[1:],
            duration=durations,
            loop=0,
            optimize=False,
        )
    return episodes


def _shrink(frame: np.ndarray, scale: float) -> Any:
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(frame))
    if scale == 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)


def _shared_palette(frames: list[Any], colours: int = 64) -> Any:
    """One palette for every frame (from a mosaic of up to 16 frames): unchanged pixels keep their index from
    frame to frame, so the GIF encoder only stores the part of each frame that moved."""
    from PIL import Image

    sample = frames[:: max(1, len(frames) // 16)][:16]
    width, height = sample[0].size
    mosaic = Image.new("RGB", (width, height * len(sample)))
    for i, frame in enumerate(sample):
        mosaic.paste(frame, (0, i * height))
    return mosaic.quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)


CHART_INPUTS = (
    "solve.json / robust.json / peers.json of python -m lunar_sb3.benchmark (a 'runs' list), or the evaluation.json "
    "python -m lunar_sb3.evaluate writes (a 'summary')"
)
"""What ``python -m lunar_sb3.pictures chart`` reads, said in its help and in its one-line error."""


def results_by_agent(files: Sequence[str | Path]) -> dict[str, list[dict[str, Any]]]:
    """Evaluation summaries grouped by agent label, in the order they appear: from ``benchmark solve``/``ablation``
    (solve.json), ``benchmark robust`` (robust.json) and ``benchmark peers`` (peers.json, every agent with our
    preset) files, and from the evaluation.json that ``python -m lunar_sb3.evaluate`` writes (one bar per model).

    :raises ValueError: for a JSON file that is none of these, naming what is accepted
    """
    import json

    from lunar_sb3.presets import LABELS

    grouped: dict[str, list[dict[str, Any]]] = {}
    for file in files:
        data = json.loads(Path(file).read_text())
        if isinstance(data, dict) and isinstance(data.get("summary"), dict) and "runs" not in data:
            model = Path(str(data.get("model", file)))  # an evaluation.json: one model, one bar
            label = f"{model.parent.name}/{model.name}" if model.parent.name else model.name
            grouped.setdefault(label, []).append(data["summary"])
            continue
        if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
            raise ValueError(f"{file} is not a results file: expected {CHART_INPUTS}")
        robust_label = f"robust preset ({Path(data.get('meta', {}).get('conf', 'soft_dqn_robust.yml')).stem})"
        for run in data["runs"]:
            if "evaluation" not in run:  # a failed training run of the benchmark has nothing to show
                continue
            if "label" in run:
                label = run["label"]
            elif "agent" in run:
                label = LABELS.get(run["agent"], run["agent"])
            else:
                label = robust_label
            grouped.setdefault(label, []).append(run["evaluation"])
    return grouped


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m lunar_sb3.pictures chart OUT.png RESULTS.json...``: outcome shares per agent, one bar each.

    RESULTS are benchmark files (solve.json, robust.json, peers.json) or evaluation.json files of
    ``python -m lunar_sb3.evaluate``, in any mix.
    """
    from lunar_sb3.outputs import OneLineArgumentParser, OutputError, check_writable_folder

    parser = OneLineArgumentParser(prog="python -m lunar_sb3.pictures", description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    chart = commands.add_parser("chart", help="landing outcomes per agent from benchmark or evaluation JSON files")
    chart.add_argument("output", type=Path, help="the chart to write (.png, .svg or .pdf)")
    chart.add_argument("results", nargs="+", type=Path, help=CHART_INPUTS)
    chart.add_argument("--title", default="Greedy evaluation episodes: how they end")
    args = parser.parse_args(argv)
    try:
        check_writable_folder(args.output.parent if str(args.output.parent) else ".")
        grouped = results_by_agent(args.results)
        outcome_chart(grouped, args.output, title=args.title)
    except (ValueError, OutputError) as error:  # JSON that is not a results file, a bad share, a bad suffix
        chart.error(str(error))
    except (OSError, KeyError) as error:
        chart.error(f"{type(error).__name__}: {error}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
