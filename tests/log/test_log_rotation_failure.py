"""A rotation that cannot open the next segment's file leaves the Log taking appends.

``Log.rotate()`` (a store's memtable switch calls it) syncs the active segment, then
creates its successor.  When the successor's open fails -- no descriptor left (EMFILE),
no room for a new name (ENOSPC) -- no file of it exists and nothing on disk changed but
that sync: the rotation raises, the active segment keeps taking appends, and a later
rotation succeeds once the cause is gone.  Before, the Log refused every append until
it was reopened, and a store over it turned read-only for want of a descriptor.  A
successor whose file was created before the failure is never dropped for the active
segment: a reader beside the writer may have opened it, and its first seq claims seqs
the active segment would then hold.  A full disk refusing to reserve its space stops
appends until a later append or rotate() finishes that same rotation; a failed sync
stops them until the log is reopened.
"""

from __future__ import annotations

import errno
import threading
from typing import Any

import pytest
from log_helpers import open_log, payload, segments

from banyanstore.errors import DiskFullError, StorageIOError
from banyanstore.io.faults import FaultEnv
from banyanstore.io.hooked import HookedEnv
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


@pytest.mark.parametrize("op, where", [("sync", "00000000000000000011.log"), ("sync_dir", LOG)])
def test_a_successor_created_before_a_failed_sync_still_poisons_the_log(op: str, where: str) -> None:
    """A failed sync of the successor's header or of the directory: what reached the disk
    is unknown, so appends stop until the log is reopened.  (A full disk refusing to
    reserve space is retried instead: the next test.)"""
    disk = _disk()
    env = FaultEnv(disk)
    log = open_log(env, ROOT)
    acked = {log.append(payload(i), sync=True): payload(i) for i in range(1, 11)}
    env.inject(op, errno.EIO, path_contains=where)
    with pytest.raises(StorageIOError):
        log.rotate()
    assert isinstance(log.failure, StorageIOError)
    with pytest.raises(StorageIOError, match="unusable"):
        log.append(payload(11))
    env.clear()
    log.close()
    assert _records(disk, crash=True) == acked
    assert _records(disk, crash=False) == acked


@pytest.mark.parametrize("after", [0, 1], ids=["successor-header", "successor-window"])
def test_a_full_disk_after_the_successor_was_created_lets_a_later_call_finish_the_rotation(
        after: int) -> None:
    """ENOSPC reserving the successor's space -- its header (the file exists, empty) or,
    after the SEAL, its first window -- wrote nothing and synced nothing that failed:
    the rotation raises DiskFullError, and the log takes no record until a later append
    or rotate() finishes that rotation (the successor keeps the seq it was made for).
    Before, the log refused every append until it was reopened, and a store over it
    turned read-only until reopened though space came back."""
    disk = _disk()
    env = FaultEnv(disk)
    log = open_log(env, ROOT)
    acked = {log.append(payload(i), sync=i % 5 == 0): payload(i) for i in range(1, 21)}
    rule = env.inject("map", errno.ENOSPC, path_contains="00000000000000000021.log", after=after,
                      times=None)
    with pytest.raises(DiskFullError):
        log.rotate()
    assert log.failure is None  # before: "the log is unusable ...; close and reopen it"
    with pytest.raises(DiskFullError):  # still full: the retry fails the same way
        log.append(payload(21))
    with pytest.raises(DiskFullError):
        log.rotate()
    assert rule.fired >= 3 and log.failure is None and log.last_seq == 20
    assert _records(disk, crash=True) == acked  # nothing lost, nothing half-written
    env.clear()  # space is back: the next call finishes the rotation, in the successor for seq 21
    acked[log.append(payload(21), sync=True)] = payload(21)
    assert list(acked) == list(range(1, 22))
    assert segments(disk, LOG)[-1].endswith("00000000000000000021.log")
    assert log.rotate() == 22
    for i in range(22, 31):
        acked[log.append(payload(i), sync=i == 30)] = payload(i)
    assert _records(disk, crash=True) == acked
    log.close()
    assert _records(disk, crash=False) == acked


class _AppendDuringRetry(HookedEnv):
    """Refuses every reservation in the successor's file (a full disk); from the second on
    (a retry of the rotation, holding the log's lock) it lets ``other`` run an append in
    another thread and waits a little for it to finish."""

    def __init__(self, inner: MemoryEnv) -> None:
        super().__init__(inner)
        self.log: Any = None
        self.seen = 0
        self.other: list[BaseException] = []

    def hook(self, op: str, paths: tuple[str, ...], nbytes: int = 0) -> None:
        if op != "map" or not paths[0].endswith("00000000000000000011.log"):
            return
        self.seen += 1
        if self.seen == 2:
            def other() -> None:
                try:
                    self.log.append(payload(99))
                except BaseException as exc:  # noqa: BLE001 - recorded for the test
                    self.other.append(exc)
            done = threading.Thread(target=other)
            done.start()
            self.thread = done
            done.join(0.2)  # a correct log keeps it waiting for the lock: it finishes later
        raise DiskFullError("map failed (full disk)", path=paths[0], op="map", errno=errno.ENOSPC)


def test_an_append_racing_a_retried_rotation_hears_the_full_disk() -> None:
    """While a rotation stopped by a full disk is retried (under the log's lock), another
    thread's append must wait for it and hear ``DiskFullError`` -- not "log ... is not
    writable" (StoreClosedError) from the lock-free check, which saw appends stopped and
    no rotation due while the retry ran."""
    disk = _disk()
    env = _AppendDuringRetry(disk)
    log = env.log = open_log(env, ROOT)
    for i in range(1, 11):
        log.append(payload(i))
    with pytest.raises(DiskFullError):
        log.rotate()
    with pytest.raises(DiskFullError):
        log.append(payload(11))  # the retry: the other thread's append runs meanwhile
    env.thread.join()
    assert [type(e) for e in env.other] == [DiskFullError]
    assert log.failure is None
    log.close()
