"""The crash simulator itself: a power loss falls between operations, never inside one.

A crash raised by one thread's mutating operation once ran while another thread's
operation was between passing the hook and reaching the disk, so that operation ran on
the "rebooted" disk: a read of a table the crash had just lost raised a plain
FileNotFoundError out of ``Store.close()`` (seen once in a salvage test's workload),
and a write could have landed after the power loss.
"""

from __future__ import annotations

import threading

from banyanstore.errors import BanyanStoreError
from banyanstore.io.memory import MemoryEnv

from .crashenv import CrashEnv


class SlowOpenDisk(MemoryEnv):
    """A MemoryEnv whose ``open_readable`` of ``/slow`` waits for ``go`` once it started."""

    def __init__(self) -> None:
        super().__init__()
        self.started, self.go = threading.Event(), threading.Event()

    def open_readable(self, path: str):  # type: ignore[no-untyped-def]
        if path == "/slow":
            self.started.set()
            assert self.go.wait(10)
        return super().open_readable(path)


def test_a_crash_waits_for_an_operation_already_past_the_hook() -> None:
    disk = SlowOpenDisk()
    f = disk.open_writable("/slow")  # created, written, synced, but its directory never synced:
    f.write(b"data")                 # a power loss loses the file
    f.sync()
    f.close()
    env = CrashEnv(disk, crash_at=0)  # the next mutating operation loses the power
    outcome: list[object] = []

    def read() -> None:
        try:
            outcome.append(env.open_readable("/slow").read(0, 4))
        except BaseException as exc:  # noqa: BLE001 -- the test reports what it was
            outcome.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    assert disk.started.wait(10)
    crasher = threading.Thread(target=lambda: _swallow(lambda: env.mkdir("/d")))
    crasher.start()
    crasher.join(0.3)
    crash_waited = crasher.is_alive()
    disk.go.set()
    reader.join(10)
    crasher.join(10)
    assert env.dead
    # The read began before the power loss, so it sees the disk as it was before it --
    # or, at worst, fails like every call of the dead process; never the rebooted disk.
    assert outcome and not isinstance(outcome[0], FileNotFoundError), outcome
    assert crash_waited
    assert not disk.exists("/slow")  # the power loss happened, after the read


def _swallow(call) -> None:  # type: ignore[no-untyped-def]
    try:
        call()
    except BanyanStoreError:
        pass
