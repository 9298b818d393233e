"""The files of a shareable lander: names in rl-zoo3's Hub convention, a model zip without training state.

rl-zoo3's ``push_to_hub`` names a repository's files ``<algo>-<ENV>.zip``, ``config.yml``, ``args.yml``,
``env_kwargs.yml``, ``train_eval_metrics.zip`` and ``vec_normalize.pkl``, and its ``load_from_hub`` fetches exactly
those. A package written here uses the same names, so both tools read it; it adds ``results.json``, ``README.md`` and
the pictures.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import torch

from lunar_sb3.outputs import atomic_path
from lunar_sb3.presets import ALGO_NAME

ZOO_ALGO = ALGO_NAME
CONFIG_FILES = ("config.yml", "args.yml", "env_kwargs.yml")
"""Written by ``rl_zoo3.train`` into ``<run>/<ENV>/``; ``enjoy`` needs ``config.yml`` and reads the other two."""
METRICS_FILE = "train_eval_metrics.zip"
HUB_VEC_NORMALIZE_FILE = "vec_normalize.pkl"
"""A Hub repo's name for the statistics that a zoo run folder keeps as ``<ENV>/vecnormalize.pkl``."""
RESULTS_FILE = "results.json"
CARD_FILE = "README.md"
CHART_FILE = "outcomes.png"
GIF_FILE = "landing.gif"
OPTIMIZER_ENTRY = "policy.optimizer.pth"
"""The entry of an SB3 model zip with the optimizer's state dict (Adam's moments: as large as the network)."""


def env_name(env_id: str) -> str:
    """An env id fit for a file name, as ``huggingface_sb3.EnvironmentName`` makes it (``ALE/Pong-v5``: ALE-Pong-v5)."""
    return env_id.replace("/", "-")


def model_file_name(env_id: str, algo: str = ZOO_ALGO) -> str:
    """``soft_dqn-LunarLander-v2.zip``: the model zip's name in a zoo Hub repo (``huggingface_sb3.ModelName``)."""
    return f"{algo}-{env_name(env_id)}.zip"


def split_model_file_name(name: str) -> tuple[str, str] | None:
    """(algo, env name) from ``<algo>-<ENV>.zip``, or None; zoo algorithm names have no ``-``, env ids do."""
    if not name.endswith(".zip") or "-" not in name:
        return None
    algo, env = name[: -len(".zip")].split("-", 1)
    return (algo, env) if algo and env else None


def write_model_for_inference(source: str | Path, destination: str | Path) -> Path:
    """Copy an SB3 model zip without its optimizer state: what ``load`` and ``predict`` need, half the size.

    SB3's ``save`` already leaves the replay memory out, but keeps Adam's two moment tensors per parameter, which
    only matter to continue training. ``load`` insists on every saved object (``set_parameters(exact_match=True)``),
    so the entry stays, with the optimizer's settings (``param_groups``) and an empty ``state``: a model trained on
    from this file starts Adam afresh. Every other entry is copied byte for byte.
    """
    with zipfile.ZipFile(source) as archive, atomic_path(destination) as temporary:
        with zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as stripped:
            for entry in archive.infolist():
                content = archive.read(entry)
                if entry.filename == OPTIMIZER_ENTRY:
                    state = torch.load(io.BytesIO(content), map_location="cpu", weights_only=True)
                    buffer = io.BytesIO()
                    torch.save({"state": {}, "param_groups": state["param_groups"]}, buffer)
                    content = buffer.getvalue()
                info = zipfile.ZipInfo(entry.filename, date_time=entry.date_time)  # same bytes on every run
                stripped.writestr(info, content, compress_type=zipfile.ZIP_DEFLATED)
    return Path(destination)


def optimizer_state_size(model_zip: str | Path) -> int:
    """How many parameters' optimizer states a model zip holds (0 after ``write_model_for_inference``)."""
    with zipfile.ZipFile(model_zip) as archive:
        if OPTIMIZER_ENTRY not in archive.namelist():
            return 0
        state = torch.load(io.BytesIO(archive.read(OPTIMIZER_ENTRY)), map_location="cpu", weights_only=True)
    return len(state["state"])
