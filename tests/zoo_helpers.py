"""Helpers shared by the tests that drive rl-zoo3's scripts in subprocesses (not a test module)."""

import os
import subprocess
from pathlib import Path

ENV_ID = "LunarLander-v2"
ALGO = "soft_dqn"


def zoo_env(pythonpath_prepend: Path | None = None, **overrides: str) -> dict[str, str]:
    """The current environment, made reproducible and headless, with the start-up hook on unless overridden."""
    env = dict(os.environ)
    env.pop("LUNAR_SB3_AUTOLOAD", None)
    env.update(PYTHONHASHSEED="0", MPLBACKEND="Agg", SDL_VIDEODRIVER="dummy")
    if pythonpath_prepend is not None:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(pythonpath_prepend), env.get("PYTHONPATH")) if p)
    env.update(overrides)
    return env


def describe(proc: subprocess.CompletedProcess[str], chars: int = 3000) -> str:
    """A failed command with the tails of its output, for assertion messages."""
    return (
        f"command: {' '.join(map(str, proc.args))}\nexit code: {proc.returncode}\n"
        f"--- stdout (tail) ---\n{proc.stdout[-chars:]}\n--- stderr (tail) ---\n{proc.stderr[-chars:]}"
    )


def check(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, describe(proc)
    return proc


def run_dir(log_folder: Path, exp_id: int = 1) -> Path:
    return log_folder / ALGO / f"{ENV_ID}_{exp_id}"


def load(zip_path: Path):  # type: ignore[no-untyped-def]
    from lunar_sb3 import SoftUpdateDQN

    return SoftUpdateDQN.load(zip_path, device="cpu")
