"""Checkpoints that are whole or absent, and the newest intact one to resume from.

SB3's ``CheckpointCallback`` writes the model zip and then the replay memory straight under their final names. A
full disk or a ``kill -9`` in between leaves a truncated file beside a good one, and resuming with ``-i`` then fails
(or, worse, resumes with half a memory). Here every file of a checkpoint is written under a temporary name and
renamed into place, and an empty ``<prefix>_<N>_steps.complete`` marker is created last: a checkpoint is intact
exactly when its marker exists.

A replay memory is large (100k transitions of LunarLander are ~8 MB), so by default only the newest checkpoint keeps
its memory; ``keep_replay_buffers`` keeps more (``-1``: all).
"""

import errno
import os
import re
from pathlib import Path

from stable_baselines3.common.callbacks import CheckpointCallback

from lunar_sb3.soft_dqn.model_file import saved_algorithm

MARKER_SUFFIX = ".complete"
_CHECKPOINT = re.compile(r"(?P<prefix>.+)_(?P<steps>\d+)_steps\.zip")


def marker_of(checkpoint: str | Path) -> Path:
    """``rl_model_8000_steps.zip`` → ``rl_model_8000_steps.complete``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name.removesuffix(".zip") + MARKER_SUFFIX)


def replay_buffer_of(checkpoint: str | Path) -> Path:
    """``rl_model_8000_steps.zip`` → ``rl_model_replay_buffer_8000_steps.pkl`` (SB3's naming)."""
    checkpoint = Path(checkpoint)
    match = _CHECKPOINT.fullmatch(checkpoint.name)
    if match is None:
        raise ValueError(f"{checkpoint} is not named like a checkpoint (<prefix>_<steps>_steps.zip)")
    return checkpoint.with_name(f"{match['prefix']}_replay_buffer_{match['steps']}_steps.pkl")


def is_checkpoint(path: str | Path) -> bool:
    return _CHECKPOINT.fullmatch(Path(path).name) is not None


def is_intact(checkpoint: str | Path) -> bool:
    """Whether ``checkpoint`` was completely written and still reads as a model zip.

    Its marker says it was completed; checkpoints from before the markers (a folder without any marker) count when
    the zip can be read.
    """
    checkpoint = Path(checkpoint)
    legacy = not any(checkpoint.parent.glob(f"*_steps{MARKER_SUFFIX}"))
    if not (marker_of(checkpoint).exists() or legacy):
        return False
    try:
        saved_algorithm(checkpoint)
    except ValueError:
        return False
    return True


def checkpoint_steps(path: str | Path) -> int:
    """``rl_model_8000_steps.zip`` → 8000."""
    match = _CHECKPOINT.fullmatch(Path(path).name)
    if match is None:
        raise ValueError(f"{path} is not named like a checkpoint (<prefix>_<steps>_steps.zip)")
    return int(match["steps"])


def intact_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """Every intact checkpoint in ``folder`` as (env steps, path), oldest first."""
    found = [(checkpoint_steps(path), path) for path in Path(folder).glob("*_steps.zip") if is_checkpoint(path)]
    return sorted(entry for entry in found if is_intact(entry[1]))


def newest_intact_checkpoint(folder: str | Path) -> Path | None:
    """The intact checkpoint with the most env steps in ``folder``, or None."""
    candidates = [path for path in Path(folder).glob("*_steps.zip") if is_checkpoint(path)]
    candidates.sort(key=checkpoint_steps, reverse=True)
    return next((path for path in candidates if is_intact(path)), None)


class WholeCheckpointCallback(CheckpointCallback):
    """SB3's ``CheckpointCallback`` with whole-or-absent checkpoints and pruned replay memories.

    :param save_freq: save a checkpoint every ``save_freq`` calls (vec-env steps)
    :param save_path: the folder of the checkpoints
    :param name_prefix: the checkpoints' file name prefix
    :param save_replay_buffer: also save the replay memory
    :param save_vecnormalize: also save the ``VecNormalize`` statistics
    :param keep_replay_buffers: how many of the newest checkpoints keep their replay memory (-1: all)
    :param verbose: 2 prints each file written
    """

    def __init__(
        self,
        save_freq: int,
        save_path: str,
        name_prefix: str = "rl_model",
        save_replay_buffer: bool = True,
        save_vecnormalize: bool = True,
        keep_replay_buffers: int = 1,
        verbose: int = 0,
    ) -> None:
        super().__init__(save_freq, save_path, name_prefix, save_replay_buffer, save_vecnormalize, verbose)
        if not (isinstance(keep_replay_buffers, int) and keep_replay_buffers >= -1):
            raise ValueError(f"keep_replay_buffers={keep_replay_buffers!r} must be -1 (all), 0 or a positive integer")
        self.keep_replay_buffers = keep_replay_buffers

    def _on_step(self) -> bool:
        if self.n_calls % self.save_freq == 0:
            self.save_checkpoint()
        return True

    def save_checkpoint(self) -> Path:
        """Write the model (and memory, statistics) under temporary names, rename them, then mark it complete."""
        model_path = Path(self._checkpoint_path(extension="zip"))
        writes = [(model_path, self.model.save)]
        keeps_memory = self.save_replay_buffer and self.keep_replay_buffers != 0
        if keeps_memory and getattr(self.model, "replay_buffer", None) is not None:
            replay_buffer_path = Path(self._checkpoint_path("replay_buffer_", extension="pkl"))
            writes.append((replay_buffer_path, self.model.save_replay_buffer))
        vec_normalize = self.model.get_vec_normalize_env()
        if self.save_vecnormalize and vec_normalize is not None:
            writes.append((Path(self._checkpoint_path("vecnormalize_", extension="pkl")), vec_normalize.save))
        temporary = [path.with_name(f".partial-{path.name}") for path, _ in writes]
        try:
            for (_, write), partial in zip(writes, temporary, strict=True):
                write(partial)
            for (final, _), partial in reversed(list(zip(writes, temporary, strict=True))):  # the model zip last
                os.replace(partial, final)
            marker_of(model_path).touch()
        except OSError as error:
            for partial in temporary:
                partial.unlink(missing_ok=True)
            newest = newest_intact_checkpoint(model_path.parent)
            fallback = f"the newest intact checkpoint is {newest}" if newest else "no intact checkpoint exists yet"
            reason = "no space left on device" if error.errno == errno.ENOSPC else (error.strerror or str(error))
            raise OSError(
                error.errno, f"could not write the checkpoint {model_path.name} ({reason}); {fallback}"
            ) from error
        if self.verbose >= 2:
            print(f"Saving model checkpoint to {model_path}")
        self._prune_replay_buffers()
        return model_path

    def _prune_replay_buffers(self) -> None:
        """Delete the replay memories of all but the ``keep_replay_buffers`` newest intact checkpoints."""
        if self.keep_replay_buffers < 0:
            return
        folder, prefix = Path(self.save_path), self.name_prefix
        checkpoints = sorted(
            (path for path in folder.glob(f"{prefix}_*_steps.zip") if marker_of(path).exists()),
            key=lambda path: int(_CHECKPOINT.fullmatch(path.name)["steps"]),  # type: ignore[index]
            reverse=True,
        )
        for checkpoint in checkpoints[self.keep_replay_buffers :]:
            replay_buffer_of(checkpoint).unlink(missing_ok=True)
