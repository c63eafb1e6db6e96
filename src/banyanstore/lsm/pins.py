"""The versions live snapshots read at, shared by every thread of a store.

Snapshots are taken and closed on any thread -- and closed by the garbage collector
(``Snapshot.__del__``) on whichever thread it runs -- while merges read the set to
decide which old versions they must keep.  A bare ``Counter`` lost updates there: two
closes at once raised ``KeyError`` or left a count behind (the history it pinned was
never reclaimed), a close racing a take could drop a live snapshot's pin (a merge could
then drop versions it reads), and a merge iterating the counter while it changed
failed.  So every access goes through one lock, held for a few dictionary operations.

A release never takes that lock: the garbage collector runs at any allocation, also
one made while this very thread holds the lock (the list ``versions`` builds), and a
``Snapshot.__del__`` there that waited would wait for itself.  A release is queued (a
list append, atomic) and applied by the next access, which applies the queue first --
so no reader of the pins sees a release it missed.  (It used to take the lock when free,
by a non-blocking acquire: a Ctrl-C landing just after that acquire, before its ``try``,
left the lock held for good -- every later snapshot, merge and ``oldest_version`` hung.)
Applying one is interrupt-safe too: the count changes before the queue loses it, with
no call between in which a Ctrl-C could land.

>>> pins = SnapshotPins()
>>> pins.take(7); pins.take(7); pins.take(9); pins.release(7)
>>> pins.versions(), pins.live()
([7, 9], 2)
"""

from __future__ import annotations

import threading

__all__ = ["SnapshotPins"]


class SnapshotPins:
    """A thread-safe multiset of versions (one entry per live snapshot)."""

    __slots__ = ("_lock", "_counts", "_released")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[int, int] = {}  # (a dict: a Counter's methods are Python calls)
        self._released: list[int] = []  # releases not applied yet (see the module docstring)

    def take(self, version: int) -> None:
        with self._lock:
            self._apply_releases()
            self._counts[version] = self._counts.get(version, 0) + 1

    def release(self, version: int) -> None:
        """Drop one pin of ``version`` (one taken before: a snapshot closes once); takes no
        lock: the next access applies it."""
        self._released.append(version)

    def _apply_releases(self) -> None:
        """REQUIRES: the lock."""
        while self._released:
            version = self._released[-1]
            left = self._counts[version] - 1
            if left > 0:
                self._counts[version] = left
            else:
                del self._counts[version]
            self._released.pop()  # (after the count: an interrupt before it changed nothing)

    def holds(self, version: int) -> bool:
        """Whether a live snapshot reads at ``version``."""
        with self._lock:
            self._apply_releases()
            return version in self._counts

    def versions(self) -> list[int]:
        """The pinned versions, ascending (a copy: merges iterate it unlocked)."""
        with self._lock:
            self._apply_releases()
            return sorted(self._counts)

    def live(self) -> int:
        """How many snapshots are open."""
        with self._lock:
            self._apply_releases()
            return sum(self._counts.values())
