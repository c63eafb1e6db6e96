"""A writer on a nearly full disk: the reserved window shrinks to what the records need.

A writer reserves its segment's space a window at a time (1 MiB, ``posix_fallocate``,
log/writer.py).  When the disk has less free space than a window, the reservation falls
back to the whole blocks the next record needs.  Before, a Log (and a store, whose WAL is
one) with less than 1 MiB free could not even be opened for writing -- ``DiskFullError``
from the open -- though its next records fitted easily; and a writer whose next window did
not fit turned unusable though the record did.
"""

from __future__ import annotations

import errno
import os

import pytest
from log_helpers import payload

import banyanstore
from banyanstore.errors import DiskFullError, from_oserror
from banyanstore.io.hooked import HookedEnv
from banyanstore.io.memory import MemoryEnv
from banyanstore.log import Log
from banyanstore.log.format import BLOCK_SIZE
from banyanstore.options import Options

ROOT = "/r"
OPTS = Options(segment_size=4 << 20, log_index_interval=4, wal_sync="never")


class NearlyFull(HookedEnv):
    """A disk on which no reservation of more than ``room`` bytes at once succeeds."""

    def __init__(self, inner: MemoryEnv, room: int) -> None:
        super().__init__(inner)
        self.room = room
        self.refused = 0

    def hook(self, op: str, paths: tuple[str, ...], nbytes: int = 0) -> None:
        if op == "map" and nbytes > self.room:
            self.refused += 1
            path = paths[0]
            raise from_oserror(op, path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path))


def _disk() -> MemoryEnv:
    disk = MemoryEnv()
    disk.mkdir(ROOT)
    return disk


def test_a_log_opens_and_appends_with_less_free_space_than_a_window() -> None:
    disk = _disk()
    env = NearlyFull(disk, room=4 * BLOCK_SIZE)
    acked: dict[int, bytes] = {}
    with Log.open(f"{ROOT}/log", env=env, options=OPTS) as log:  # before: DiskFullError
        for i in range(1, 3001):  # ~0.6 MiB: many reservations, records across blocks
            acked[log.append(payload(i, 100 + i % 700))] = payload(i, 100 + i % 700)
        acked[log.append(payload(0, 3 * BLOCK_SIZE))] = payload(0, 3 * BLOCK_SIZE)
        assert log.failure is None
    assert env.refused > 0
    with Log.open(f"{ROOT}/log", env=env, options=OPTS) as log:
        assert dict(log.read()) == acked
        with pytest.raises(DiskFullError):  # a record larger than any reservation
            log.append(bytes(5 * BLOCK_SIZE))


def test_a_store_opens_for_writing_with_less_free_space_than_a_wal_window() -> None:
    disk = _disk()
    env = NearlyFull(disk, room=2 * BLOCK_SIZE)
    store = banyanstore.open(f"{ROOT}/db", env=env, wal_sync="never")  # before: DiskFullError
    for i in range(2000):
        store.put(b"key%06d" % i, b"value %d" % i)
    store.close()
    with banyanstore.open(f"{ROOT}/db", env=disk) as again:
        assert len(dict(again.scan())) == 2000
