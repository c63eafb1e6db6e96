"""A rotation that cannot open the next segment's file leaves the Log taking appends.

``Log.rotate()`` (a store's memtable switch calls it) syncs the active segment, then
creates its successor.  When the successor's open fails -- no descriptor left (EMFILE),
no room for a new name (ENOSPC) -- no file of it exists and nothing on disk changed but
that sync: the rotation raises, the active segment keeps taking appends, and a later
rotation succeeds once the cause is gone.  Before, the Log refused every append until
it was reopened, and a store over it turned read-only for want of a descriptor.  A
successor whose file was created before the failure still poisons the Log: a reader
beside the writer may have opened it, and its first seq claims seqs the active segment
would then hold.
"""

from __future__ import annotations

import errno

import pytest
from log_helpers import open_log, payload, segments

from banyanstore.errors import DiskFullError, StorageIOError
from banyanstore.io.faults import FaultEnv
from banyanstore.io.memory import MemoryEnv

ROOT = "/r"
LOG = f"{ROOT}/log"


def _disk() -> MemoryEnv:
    disk = MemoryEnv()
    disk.mkdir(ROOT)
    return disk


def _records(disk: MemoryEnv, *, crash: bool) -> dict[int, bytes]:
    copy = disk.clone()
    if crash:
        copy.crash()
    with open_log(copy, ROOT) as log:
        return dict(log.read())


@pytest.mark.parametrize("code, error", [(errno.EMFILE, StorageIOError), (errno.ENOSPC, DiskFullError)])
def test_a_rotation_that_cannot_open_the_next_segment_leaves_the_log_usable(
        code: int, error: type[Exception]) -> None:
    disk = _disk()
    env = FaultEnv(disk)
    log = open_log(env, ROOT)
    acked = {log.append(payload(i)): payload(i) for i in range(1, 21)}
    before = segments(disk, LOG)
    rule = env.inject("open_writable", code, path_contains=".log")
    with pytest.raises(error):
        log.rotate()
    assert rule.fired == 1
    assert log.failure is None  # before: "the log is unusable ...; close and reopen it"
    assert segments(disk, LOG) == before  # no file of the failed successor exists
    for i in range(21, 41):  # into the segment that stayed active
        acked[log.append(payload(i), sync=i % 5 == 0)] = payload(i)
    assert list(acked) == list(range(1, 41))
    assert _records(disk, crash=True) == {s: acked[s] for s in range(1, 41)}  # all synced at 40
    assert log.rotate() == 41  # the cause is gone: the rotation succeeds
    acked[log.append(payload(41))] = payload(41)
    log.close()
    assert _records(disk, crash=False) == acked


@pytest.mark.parametrize("op, code, error", [("map", errno.ENOSPC, DiskFullError),
                                            ("sync_dir", errno.EIO, StorageIOError)])
def test_a_successor_created_before_the_failure_still_poisons_the_log(
        op: str, code: int, error: type[Exception]) -> None:
    disk = _disk()
    env = FaultEnv(disk)
    log = open_log(env, ROOT)
    acked = {log.append(payload(i), sync=True): payload(i) for i in range(1, 11)}
    env.inject(op, code, path_contains=".log" if op == "map" else LOG)
    with pytest.raises(error):
        log.rotate()
    assert isinstance(log.failure, StorageIOError)
    with pytest.raises(StorageIOError, match="unusable"):
        log.append(payload(11))
    env.clear()
    log.close()
    assert _records(disk, crash=True) == acked
    assert _records(disk, crash=False) == acked
