"""Checkpoints are whole or absent: temporary names, renames, a completion marker last, pruned replay memories."""

import errno
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from lunar_sb3 import SoftUpdateDQN
from lunar_sb3.checkpoints import (
    WholeCheckpointCallback,
    is_intact,
    marker_of,
    newest_intact_checkpoint,
    replay_buffer_of,
)
from lunar_sb3.zoo.experiment import _check_trained_agent


def trained_with_checkpoints(folder: Path, steps: int = 600, keep: int = 1) -> SoftUpdateDQN:
    model = SoftUpdateDQN("MlpPolicy", "CartPole-v1", batch_size=16, buffer_size=1000, seed=0)
    model.learn(steps, callback=WholeCheckpointCallback(200, str(folder), keep_replay_buffers=keep))
    return model


def test_each_checkpoint_is_marked_and_only_the_newest_keeps_its_memory(tmp_path: Path) -> None:
    trained_with_checkpoints(tmp_path)
    zips = sorted(tmp_path.glob("rl_model_*_steps.zip"))
    assert [z.name for z in zips] == [f"rl_model_{n}_steps.zip" for n in (200, 400, 600)]
    assert all(marker_of(z).exists() and is_intact(z) for z in zips)
    assert [p.name for p in tmp_path.glob("*replay_buffer*")] == ["rl_model_replay_buffer_600_steps.pkl"]
    assert not list(tmp_path.glob(".partial-*"))
    assert newest_intact_checkpoint(tmp_path) == tmp_path / "rl_model_600_steps.zip"
    resumed = SoftUpdateDQN.load(tmp_path / "rl_model_600_steps.zip")
    resumed.load_replay_buffer(replay_buffer_of(tmp_path / "rl_model_600_steps.zip"))
    assert resumed.replay_buffer.size() > 0


def test_keep_all_replay_buffers(tmp_path: Path) -> None:
    trained_with_checkpoints(tmp_path, keep=-1)
    assert len(list(tmp_path.glob("*replay_buffer*"))) == 3


def test_keep_no_replay_buffer_writes_none(tmp_path: Path) -> None:
    trained_with_checkpoints(tmp_path, keep=0)
    assert len(list(tmp_path.glob("*_steps.complete"))) == 3 and not list(tmp_path.glob("*replay_buffer*"))


def test_keep_replay_buffers_is_checked() -> None:
    with pytest.raises(ValueError, match="keep_replay_buffers"):
        WholeCheckpointCallback(100, "x", keep_replay_buffers=-2)


def test_a_failed_write_leaves_no_partial_file_and_names_the_newest_intact(tmp_path: Path, monkeypatch) -> None:
    model = trained_with_checkpoints(tmp_path, steps=400)
    callback = WholeCheckpointCallback(200, str(tmp_path))
    callback.init_callback(model)
    model.num_timesteps = 800

    def disk_full(path, *args, **kwargs):
        Path(path).write_bytes(b"half")  # something was written before the disk filled up
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(model, "save_replay_buffer", disk_full)
    with pytest.raises(OSError, match="no space left on device.*newest intact checkpoint is .*rl_model_400_steps.zip"):
        callback.save_checkpoint()
    assert not list(tmp_path.glob(".partial-*"))
    assert not (tmp_path / "rl_model_800_steps.zip").exists()
    assert newest_intact_checkpoint(tmp_path) == tmp_path / "rl_model_400_steps.zip"
    assert replay_buffer_of(tmp_path / "rl_model_400_steps.zip").exists()  # not pruned by the failed one


def test_a_model_without_its_marker_is_incomplete_and_resuming_names_the_intact_one(tmp_path: Path) -> None:
    trained_with_checkpoints(tmp_path, steps=400)
    marker_of(tmp_path / "rl_model_400_steps.zip").unlink()  # killed between the renames and the marker
    assert not is_intact(tmp_path / "rl_model_400_steps.zip")
    with pytest.raises(SystemExit, match=r"incomplete checkpoint.*newest intact checkpoint is .*rl_model_200_steps"):
        _check_trained_agent(tmp_path / "rl_model_400_steps.zip")
    (tmp_path / "rl_model_200_steps.zip").write_bytes(b"")  # damaged too: then none is left
    with pytest.raises(SystemExit) as stopped:
        _check_trained_agent(tmp_path / "rl_model_400_steps.zip")
    assert "newest intact" not in str(stopped.value)


def test_checkpoints_from_before_the_markers_count_when_readable(tmp_path: Path) -> None:
    trained_with_checkpoints(tmp_path, steps=400)
    for marker in tmp_path.glob("*.complete"):
        marker.unlink()
    assert is_intact(tmp_path / "rl_model_400_steps.zip")
    (tmp_path / "rl_model_400_steps.zip").write_bytes(b"PK\x03\x04 truncated")
    assert not is_intact(tmp_path / "rl_model_400_steps.zip")
    assert newest_intact_checkpoint(tmp_path) == tmp_path / "rl_model_200_steps.zip"


@pytest.fixture
def small_disk(tmp_path: Path):
    """A real 400 kB filesystem (tmpfs), where the machine lets the test mount one."""
    mount_point = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount_point.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command on this machine")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount_point)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_keeps_the_newest_intact_checkpoint(small_disk: Path) -> None:
    """On a real full disk: the checkpoint that does not fit is absent, the one before it whole."""
    model = SoftUpdateDQN("MlpPolicy", "CartPole-v1", batch_size=16, buffer_size=2000, seed=0)
    callback = WholeCheckpointCallback(300, str(small_disk))
    with pytest.raises(OSError) as raised:
        model.learn(3000, callback=callback)  # each replay memory is ~100 kB more than the one before
    assert raised.value.errno == errno.ENOSPC
    assert not list(small_disk.glob(".partial-*"))
    newest = newest_intact_checkpoint(small_disk)
    assert newest is not None and SoftUpdateDQN.load(newest).num_timesteps > 0
    SoftUpdateDQN("MlpPolicy", "CartPole-v1", batch_size=16, buffer_size=2000).load_replay_buffer(
        replay_buffer_of(newest)
    )  # the newest intact checkpoint's memory reads back whole
    for zip_path in small_disk.glob("rl_model_*_steps.zip"):
        assert is_intact(zip_path)
