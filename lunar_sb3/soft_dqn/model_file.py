"""What a saved model zip holds, read without loading its networks.

SB3's ``load`` trusts the file: ``SoftUpdateDQN.load`` on a PPO zip fails deep inside with
``'ActorCriticPolicy' object has no attribute 'q_net'``, and on an SB3 ``DQN`` zip it succeeds but silently gives
the model SoftUpdateDQN's defaults for everything DQN does not save. Reading the zip's ``data`` first turns both, and
empty or damaged files, into one sentence that names the file and what it holds.
"""

import base64
import json
import zipfile
from pathlib import Path
from typing import Any

import cloudpickle
from stable_baselines3.dqn.policies import DQNPolicy

SOFT_DQN = "soft_dqn"
SB3_DQN = "dqn"
# Attributes that SoftUpdateDQN sets and saves but SB3's DQN does not (DQN does save `exploration_schedule`).
SOFT_UPDATE_DQN_KEYS = frozenset({"exploration_decay", "finished_episodes"})


def zip_path(path: str | Path) -> Path:
    """The file SB3's ``load`` would open: ``path`` itself, or ``path.zip`` when only that exists."""
    path = Path(path)
    if not path.exists() and path.with_name(path.name + ".zip").exists():
        return path.with_name(path.name + ".zip")
    return path


def saved_algorithm(path: str | Path) -> str:
    """``"soft_dqn"``, ``"dqn"`` (SB3's DQN) or a description of the other algorithm that saved ``path``.

    :raises ValueError: if the file is missing, empty or not a Stable-Baselines3 model zip
    """
    path = zip_path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such model file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is an empty file, not a Stable-Baselines3 model zip")
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data"))
    except (zipfile.BadZipFile, KeyError, UnicodeDecodeError, json.JSONDecodeError, EOFError) as error:
        raise ValueError(f"{path} is not a Stable-Baselines3 model zip, or it is damaged ({error})") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a Stable-Baselines3 model zip (its 'data' is not a JSON object)")
    policy_class = _saved_policy_class(path, data)
    if not issubclass(policy_class, DQNPolicy):
        return _algorithm_name(data, policy_class)
    return SOFT_DQN if SOFT_UPDATE_DQN_KEYS & data.keys() else SB3_DQN


def check_soft_dqn_zip(path: str | Path) -> None:
    """Raise a ValueError naming what ``path`` holds unless it is a SoftUpdateDQN model."""
    algorithm = saved_algorithm(path)
    if algorithm == SB3_DQN:
        raise ValueError(
            f"{zip_path(path)} holds a model of Stable-Baselines3's DQN, not soft_dqn: load it with "
            "stable_baselines3.DQN (rl-zoo3: --algo dqn)"
        )
    if algorithm != SOFT_DQN:
        raise ValueError(f"{zip_path(path)} holds a model of another algorithm ({algorithm}), not soft_dqn")


def _saved_policy_class(path: Path, data: dict[str, Any]) -> type:
    """The policy class SB3 cloudpickled into the zip's data (unpickling it is what ``load`` does anyway)."""
    entry = data.get("policy_class")
    if not isinstance(entry, dict) or ":serialized:" not in entry:
        raise ValueError(f"{path} is not a Stable-Baselines3 model zip (it saves no policy class)")
    try:
        policy_class = cloudpickle.loads(base64.b64decode(entry[":serialized:"]))
    except Exception as error:  # a class from a package not installed here, or garbage
        raise ValueError(f"cannot read the policy class saved in {path} ({type(error).__name__}: {error})") from error
    if not isinstance(policy_class, type):
        raise ValueError(f"{path} is not a Stable-Baselines3 model zip (its policy class is {policy_class!r})")
    return policy_class


def _algorithm_name(data: dict[str, Any], policy_class: type) -> str:
    """A best guess at which algorithm saved a non-DQN zip, for the error message."""
    module = policy_class.__module__.split(".")
    name = f"policy {policy_class.__name__}"
    if len(module) == 3 and module[0] in ("stable_baselines3", "sb3_contrib") and module[1] != "common":
        return f"{module[1].upper()}, {name}"  # e.g. stable_baselines3.sac.policies
    if "clip_range" in data:
        return f"PPO, {name}"
    if "gae_lambda" in data:
        return f"A2C, {name}"
    return name
