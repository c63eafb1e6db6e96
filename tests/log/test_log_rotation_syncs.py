"""The syncs a rotation makes with the log's lock held (a store's writer holds its write
lock through them at every memtable switch).

A rotation must have the old segment's records durable before its successor exists
(docs/format/log.md, "Rotation and the seal"): it synced the old segment every time,
though under ``wal_sync="always"`` the group commit has usually synced every record
already -- one fsync of nothing per rotation.  It syncs only when a record is not
durable yet; the crash states stay those of a rotation that synced.
"""

from __future__ import annotations

import pytest
from log_helpers import open_log, payload

from banyanstore.io.hooked import HookedEnv
from banyanstore.io.memory import MemoryEnv

ROOT = "/r"
LOG = f"{ROOT}/log"
OLD = f"{LOG}/00000000000000000001.log"
NEW = f"{LOG}/00000000000000000011.log"


class SyncRecorder(HookedEnv):
    """Records every sync and directory sync, in order, while ``recording``."""

    def __init__(self, inner: MemoryEnv) -> None:
        super().__init__(inner)
        self.recording = False
        self.syncs: list[tuple[str, str]] = []

    def hook(self, op: str, paths: tuple[str, ...], nbytes: int = 0) -> None:
        if self.recording and op in ("sync", "sync_dir"):
            self.syncs.append((op, paths[0]))


def _rotated(synced: int) -> tuple[MemoryEnv, list[tuple[str, str]]]:
    """A log of 10 records, the first ``synced`` of them appended with a sync, rotated:
    a copy of the disk as the rotation left it and the syncs the rotation made.  The
    test thread is the only one: once every append returned, no group commit round
    runs, so every sync recorded is the rotation's."""
    disk = MemoryEnv()
    disk.mkdir(ROOT)
    env = SyncRecorder(disk)
    with open_log(env, ROOT) as log:
        for seq in range(1, 11):
            assert log.append(payload(seq), sync=seq <= synced) == seq
        env.recording = True
        assert log.rotate() == 11
        env.recording = False
        return disk.clone(), env.syncs  # before close(), which syncs everything


def _records_after_a_power_loss(disk: MemoryEnv) -> dict[int, bytes]:
    disk.crash()  # unsynced bytes and names are lost
    with open_log(disk, ROOT) as log:
        return dict(log.read())


def test_a_rotation_after_every_record_was_synced_syncs_the_old_segment_once() -> None:
    """Failed before: the old segment was synced twice, before its successor was made
    (nothing left to sync) and after its SEAL."""
    disk, syncs = _rotated(synced=10)
    assert syncs == [("sync", NEW), ("sync_dir", LOG), ("sync", OLD)]
    assert _records_after_a_power_loss(disk) == {seq: payload(seq) for seq in range(1, 11)}


@pytest.mark.parametrize("synced", [0, 9])
def test_a_rotation_with_records_not_synced_syncs_them_before_the_successor_exists(synced: int) -> None:
    disk, syncs = _rotated(synced)
    assert syncs == [("sync", OLD), ("sync", NEW), ("sync_dir", LOG), ("sync", OLD)]
    assert _records_after_a_power_loss(disk) == {seq: payload(seq) for seq in range(1, 11)}
