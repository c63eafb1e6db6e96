"""A coarse map from versions to commit times, for ``ttl`` and ``history_retention``.

Entries carry no timestamps; instead the store remembers the *first version
committed in each wall-clock second* (``(version, second)`` samples, at most
one per second, appended by the writer and persisted in manifest edits).  A
version ``v`` belongs to the second of the last sample at or below it.

Both uses are conservative -- data is never expired or reclaimed *early*:

* an entry is past a TTL when its whole second lies before the cutoff, so it
  disappears between 0 and 1 s after ``ttl`` (later only if the map was thinned);
* history is kept from the first version of the cutoff's second on.

When the map grows past :data:`LIMIT` samples, the older half is thinned by
merging neighbours into ``(first version, later second)``: versions are then
attributed to a *later* second than their real one, which only delays expiry.

>>> tm = TimeMap()
>>> for v, ms in [(1, 1000), (2, 1500), (3, 2000), (4, 5000)]:
...     tm.note(v, ms)
>>> tm.samples
[(1, 1), (3, 2), (4, 5)]
>>> [tm.first_version_since(s, latest=4) for s in (2, 3, 6)]
[3, 4, 5]
>>> [tm.second_of(v) for v in (0, 1, 2, 3, 9)]
[-1, 1, 1, 2, 5]
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from operator import itemgetter

__all__ = ["TimeMap", "LIMIT"]

LIMIT = 8192
_second = itemgetter(1)


class TimeMap:
    """``(version, second)`` samples, ascending in both."""

    __slots__ = ("samples", "last_second")

    def __init__(self, samples: Iterable[tuple[int, int]] = ()) -> None:
        self.samples: list[tuple[int, int]] = []
        self.last_second = -1
        for v, s in samples:
            self.add(v, s)

    def note(self, version: int, ms: int) -> None:
        """Record that ``version`` committed at ``ms`` (wall clock, milliseconds)."""
        second = ms // 1000
        if second > self.last_second:
            self.add(version, second)

    def add(self, version: int, second: int) -> None:
        if second <= self.last_second or (self.samples and version <= self.samples[-1][0]):
            return
        self.samples.append((version, second))
        self.last_second = second
        if len(self.samples) > LIMIT:
            self._thin()

    def _thin(self) -> None:
        half = len(self.samples) // 2
        old = self.samples[:half]
        merged = [(old[i][0], old[i + 1][1] if i + 1 < len(old) else old[i][1])
                  for i in range(0, len(old), 2)]
        self.samples = merged + self.samples[half:]

    def first_version_since(self, second: int, latest: int) -> int:
        """The first version committed at or after ``second`` (``latest + 1`` if
        none): every version below it committed before ``second`` began."""
        i = bisect_left(self.samples, second, key=_second)
        return self.samples[i][0] if i < len(self.samples) else latest + 1

    def second_of(self, version: int) -> int:
        """The second this map dates ``version`` to (-1 before every sample)."""
        i = bisect_left(self.samples, version + 1, key=itemgetter(0))
        return self.samples[i - 1][1] if i else -1

    def since_version(self, version: int) -> list[tuple[int, int]]:
        """Samples with versions above ``version`` (what a manifest edit persists)."""
        i = bisect_left(self.samples, version + 1, key=itemgetter(0))
        return self.samples[i:]
