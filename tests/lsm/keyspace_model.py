"""A model of several keyspaces -- each with its own TTL, lowered, dropped and created
again -- and a seeded random workload that checks a store against it through every
read the API offers: get (by item too), ``in``, multi_get, scans with bounds, prefix,
limit, keys_only and reverse, the keys/values/items views, history, snapshots (their
views too), a read-only store beside the writer and a checkpoint.

Keys are short strings over ``\\x00 \\x01 a \\xfe \\xff`` (the empty key too), so bounds,
prefixes and range tombstones meet at the bytes where successor and prefix arithmetic
goes wrong.  Time is a :class:`FakeClock`: an entry must vanish exactly when the
documented rule says (lsm/timemap.py), never earlier; with ``history_retention`` the
history floor must not pass a version younger than the retention."""

from __future__ import annotations

import copy
import random
import shutil
from bisect import bisect_right
from collections.abc import Callable
from typing import Any

import banyanstore
from banyanstore.errors import VersionUnavailableError

from .model import FakeClock

ALPHABET = b"\x00\x01a\xfe\xff"
KEY_LENGTHS = (0, 1, 1, 2, 2, 2, 3, 3, 3, 3)
OPTIONS: dict[str, Any] = dict(memtable_size=64 * 1024, block_size=1024, compaction_min_width=2,
                               compaction_max_width=4, block_cache_size=256 * 1024,
                               wal_sync="never", io_mode="sync")


class KeyspaceModel:
    """One keyspace: every write of every key, range tombstones and the TTL."""

    def __init__(self, ttl: float | None, generation: int = 0) -> None:
        self.writes: dict[bytes, list[tuple[int, bytes | None]]] = {}
        self.ranges: list[tuple[bytes, bytes, int]] = []
        self.ttl = ttl
        self.generation = generation  # a snapshot reads a keyspace of its own generation only


class StoreModel:
    """Keyspaces sharing one version sequence and one map of commit seconds."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.version = 0
        self.samples: list[tuple[int, int]] = []  # (first version, second), as TimeMap
        self.committed_at: dict[int, float] = {}
        self.keyspaces = {"default": KeyspaceModel(None)}

    def ttl_floor(self, name: str) -> int:
        """Versions below this are past the keyspace's TTL (lsm/timemap.py's rule)."""
        ttl = self.keyspaces[name].ttl
        if ttl is None:
            return 0
        cutoff = int(self.clock() - ttl)
        return next((v for v, second in self.samples if second >= cutoff), self.version + 1)

    def write(self, ops: list[tuple[Any, ...]]) -> int:
        """Commit ``ops`` -- ``(name, key, value-or-None)`` or ``("range", name, start,
        end)`` -- under the next version."""
        self.version += 1
        self.committed_at[self.version] = self.clock()
        second = int(self.clock())
        if not self.samples or second > self.samples[-1][1]:
            self.samples.append((self.version, second))
        for op in ops:
            if op[0] == "range":
                self._delete_range(*op[1:])
            else:
                self._put(*op)
        return self.version

    def _put(self, name: str, key: bytes, value: bytes | None) -> None:
        entries = self.keyspaces[name].writes.setdefault(key, [])
        if entries and entries[-1][0] == self.version:
            entries[-1] = (self.version, value)  # the last op of a batch on a key wins
        else:
            entries.append((self.version, value))

    def _delete_range(self, name: str, start: bytes, end: bytes) -> None:
        ks = self.keyspaces[name]
        for key, entries in ks.writes.items():  # the batch's earlier writes go too
            if start <= key < end and entries and entries[-1][0] == self.version:
                entries.pop()
        ks.ranges.append((start, end, self.version))

    def get(self, name: str, key: bytes, version: int) -> bytes | None:
        ks = self.keyspaces[name]
        entries = ks.writes.get(key, [])
        i = bisect_right([v for v, _ in entries], version)
        if not i or entries[i - 1][0] < self.ttl_floor(name):
            return None
        deleted_at = max((v for s, e, v in ks.ranges if s <= key < e and v <= version), default=0)
        return None if entries[i - 1][0] < deleted_at else entries[i - 1][1]

    def scan(self, name: str, version: int, start: bytes | None = None, end: bytes | None = None,
             prefix: bytes | None = None, reverse: bool = False,
             limit: int | None = None) -> list[tuple[bytes, bytes]]:
        rows = []
        for key in sorted(self.keyspaces[name].writes):
            if in_bounds(key, start, end, prefix) and (value := self.get(name, key, version)) is not None:
                rows.append((key, value))
        if reverse:
            rows.reverse()
        return rows if limit is None else rows[:limit]

    def history(self, name: str, key: bytes) -> list[tuple[int, bytes | None]]:
        """Every write of ``key``, newest first; a range tombstone over it shows as
        ``(version, None)`` unless its batch wrote the key again."""
        ks = self.keyspaces[name]
        entries = ks.writes.get(key, [])
        own = {v for v, _ in entries}
        ranges = {(v, None) for s, e, v in ks.ranges if s <= key < e and v not in own}
        floor = self.ttl_floor(name)
        return [e for e in sorted([*entries, *ranges], key=lambda e: -e[0]) if e[0] >= floor]


def in_bounds(key: bytes, start: bytes | None, end: bytes | None, prefix: bytes | None) -> bool:
    return ((start is None or key >= start) and (end is None or key < end)
            and (prefix is None or key.startswith(prefix)))


class Workload:
    """Random operations on a store and on the model, each read compared."""

    def __init__(self, path: str, seed: int, retention: float | None) -> None:
        self.path, self.retention = path, retention
        self.rng = random.Random(seed)
        self.clock = FakeClock()
        self.model = StoreModel(self.clock)
        self.model.keyspaces["index"] = KeyspaceModel(None)
        self.model.keyspaces["hot"] = KeyspaceModel(5.0)
        self.snapshots: list[tuple[Any, int, dict[str, int]]] = []  # (snapshot, version, generations)
        self.user_floor = 0
        self.store = self._open()
        self.handles: dict[str, Any] = {}
        self._take_handles()

    def _open(self) -> Any:
        return banyanstore.open(self.path, clock=self.clock, history_retention=self.retention, **OPTIONS)

    def _take_handles(self) -> None:
        self.handles = {name: self.store if name == "default" else
                        self.store.keyspace(name, ttl=self.model.keyspaces[name].ttl)
                        for name in self.model.keyspaces}

    # -- random arguments ---------------------------------------------------------------------
    def key(self) -> bytes:
        length = self.rng.randrange(4, 30) if self.rng.random() < 0.05 else self.rng.choice(KEY_LENGTHS)
        return bytes(self.rng.choice(ALPHABET) for _ in range(length))

    def value(self) -> bytes:
        return self.rng.randbytes(self.rng.choice((0, 1, 5, 30, 200, 900)))

    def bound(self) -> bytes | None:
        return None if self.rng.random() < 0.35 else self.key()

    def prefix(self) -> bytes | None:
        if self.rng.random() < 0.6:
            return None
        return bytes(self.rng.choice(ALPHABET) for _ in range(self.rng.randrange(3)))

    def key_range(self) -> tuple[bytes, bytes]:
        while True:
            a, b = self.key(), self.key()
            if self.rng.random() < 0.2:
                b = a + b"\x00"
            if a != b:
                return min(a, b), max(a, b)

    def read_version(self) -> int:
        """The latest version, a snapshot's, or any other (maybe no longer readable)."""
        r = self.rng.random()
        if r < 0.5 or not self.model.version:
            return self.model.version
        if self.snapshots and r < 0.7:
            return self.rng.choice(self.snapshots)[1]
        return self.rng.randrange(self.model.version + 1)

    # -- checks -------------------------------------------------------------------------------
    def readable(self, version: int) -> bool:
        return version >= self.store.history_floor or any(v == version for _, v, _ in self.snapshots)

    def check_at(self, version: int, read: Any, expected: Any, what: str) -> None:
        """``read()`` (at ``version``) equals ``expected``, or raises
        VersionUnavailableError when the version is not readable."""
        if self.readable(version):
            try:
                got = read()
            except VersionUnavailableError:  # a background merge raised the floor meanwhile
                assert not self.readable(version), (what, version)
                return
            assert got == expected, (what, version, got, expected)
            return
        try:
            read()
        except VersionUnavailableError:
            return
        raise AssertionError(f"{what}: a read at {version}, below the floor "
                             f"{self.store.history_floor}, answered")

    def check_retention(self) -> None:
        """The floor never passes a version committed less than ``retention`` ago
        (unless set_history_floor asked for it)."""
        if self.retention is None:
            return
        floor = self.store.history_floor
        for v in range(max(floor - 3, self.user_floor, 1), floor):
            age = self.clock() - self.model.committed_at[v]
            assert age >= self.retention, (f"history floor {floor} passed version {v}, "
                                           f"committed {age:.2f}s ago")

    # -- operations ---------------------------------------------------------------------------
    def run(self, steps: int) -> None:
        """``steps`` random operations (each on a random keyspace), then a full compare
        and :meth:`finish`."""
        table = self.operations()
        try:
            for _ in range(steps):
                name = self.rng.choice(list(self.model.keyspaces))
                r = self.rng.random()
                next(op for limit, op in table if r < limit)(name)
                self.check_retention()
            self.compare_all()
            self.finish()
        finally:
            self.close()

    def finish(self) -> None:
        """Checks after the last step's full compare (none here)."""

    def operations(self) -> list[tuple[float, Callable[[str], None]]]:
        """``(cumulative probability, operation)`` pairs, in ascending order."""
        return [(0.22, self.put), (0.28, self.delete), (0.30, self.delete_range), (0.36, self.batch),
                 (0.44, self.get), (0.48, self.multi_get), (0.56, self.scan), (0.60, self.views),
                 (0.63, self.history), (0.68, self.snapshot), (0.70, self.read_snapshot),
                 (0.74, self.flush), (0.77, self.compact), (0.79, self.set_history_floor),
                 (0.85, self.tick), (0.86, self.lower_ttl), (0.87, self.drop_keyspace),
                 (0.885, self.reopen), (0.893, self.read_beside), (1.0, self.compare_all)]

    def close(self) -> None:
        for snap, _, _ in self.snapshots:
            snap.close()
        self.snapshots.clear()
        self.store.close()

    def put(self, name: str) -> None:
        key, value = self.key(), self.value()
        if self.rng.random() < 0.2:
            self.handles[name][key] = value
            self.model.write([(name, key, value)])
        else:
            assert self.handles[name].put(key, value) == self.model.write([(name, key, value)])

    def delete(self, name: str) -> None:
        key = self.key()
        if self.rng.random() < 0.6:
            assert self.handles[name].delete(key) == self.model.write([(name, key, None)])
            return
        present = self.model.get(name, key, self.model.version) is not None
        try:
            del self.handles[name][key]
        except KeyError:
            assert not present, key
        else:
            assert present, key
            self.model.write([(name, key, None)])

    def delete_range(self, name: str) -> None:
        start, end = self.key_range()
        assert self.handles[name].delete_range(start, end) == self.model.write([("range", name, start, end)])

    def batch(self, _name: str) -> None:
        batch, ops = self.store.batch(), []
        for _ in range(self.rng.randrange(7)):
            name = self.rng.choice(list(self.model.keyspaces))
            target = self.rng.choice((name, self.handles[name], None if name == "default" else name))
            r = self.rng.random()
            if r < 0.12:
                start, end = self.key_range()
                batch.delete_range(start, end, keyspace=target)
                ops.append(("range", name, start, end))
            elif r < 0.3:
                key = self.key()
                batch.delete(key, keyspace=target)
                ops.append((name, key, None))
            else:
                key, value = self.key(), self.value()
                batch.put(key, value, keyspace=target)
                ops.append((name, key, value))
        if self.rng.random() < 0.1:
            batch.discard()
            assert batch.version is None
            return
        if ops and ops[0][0] != "range":  # no read sees the batch before it commits
            name, key = ops[0][0], ops[0][1]
            assert self.handles[name].get(key) == self.model.get(name, key, self.model.version)
        batch.commit()
        assert batch.version == (self.model.write(ops) if ops else None)

    def get(self, name: str) -> None:
        ks, key = self.handles[name], self.key()
        want = self.model.get(name, key, self.model.version)
        assert ks.get(key) == want, (name, key)
        assert ks.get(key, default=b"-") == (b"-" if want is None else want)
        assert (key in ks) == (want is not None)
        try:
            assert ks[key] == want
        except KeyError:
            assert want is None
        v = self.read_version()
        self.check_at(v, lambda: ks.get(key, version=v), self.model.get(name, key, v), "get")

    def multi_get(self, name: str) -> None:
        keys, v = [self.key() for _ in range(self.rng.randrange(20))], self.read_version()
        self.check_at(v, lambda: self.handles[name].multi_get(keys, version=v),
                      [self.model.get(name, k, v) for k in keys], "multi_get")

    def scan(self, name: str) -> None:
        start, end, prefix = self.bound(), self.bound(), self.prefix()
        reverse, keys_only = self.rng.random() < 0.4, self.rng.random() < 0.3
        limit = None if self.rng.random() < 0.6 else self.rng.randrange(12)
        v = self.read_version()
        want: list[Any] = self.model.scan(name, v, start, end, prefix, reverse, limit)
        if keys_only:
            want = [k for k, _ in want]
        self.check_at(v, lambda: list(self.handles[name].scan(
            start, end, prefix=prefix, version=v, reverse=reverse, limit=limit, keys_only=keys_only)),
            want, f"scan {start!r} {end!r} {prefix!r} {reverse} {limit} {keys_only}")

    def views(self, name: str) -> None:
        ks = self.handles[name]
        start, end, prefix = self.bound(), self.bound(), self.prefix()
        bounds: dict[str, Any] = dict(start=start, end=end, prefix=prefix, reverse=self.rng.random() < 0.3)
        at_latest = self.rng.random() < 0.7
        v = self.model.version if at_latest else self.read_version()
        if not at_latest:
            bounds["version"] = v
        rows = self.model.scan(name, v, start, end, prefix, bounds["reverse"])
        key = self.key()
        value = self.model.get(name, key, v)
        inside = value is not None and in_bounds(key, start, end, prefix)
        reads = [(lambda: list(ks.keys(**bounds)), [k for k, _ in rows]),
                 (lambda: list(ks.values(**bounds)), [x for _, x in rows]),
                 (lambda: list(ks.items(**bounds)), rows),
                 (lambda: list(reversed(ks.items(**bounds))), rows[::-1]),
                 (lambda: key in ks.keys(**bounds), inside),
                 (lambda: (key, value if value is not None else b"x") in ks.items(**bounds), inside),
                 (lambda: (key, (value or b"") + b"!") in ks.items(**bounds), False)]
        for read, want in reads:
            if at_latest:
                assert read() == want, (bounds, key)
            else:
                self.check_at(v, read, want, f"view {bounds}")

    def history(self, name: str) -> None:
        key = self.key()
        got, want = list(self.handles[name].history(key)), self.model.history(name, key)
        floor = self.store.history_floor
        assert [e for e in got if e[0] >= floor] == [e for e in want if e[0] >= floor], key
        assert all(e in want for e in got), (key, got, want)  # older ones: what merges left

    def snapshot(self, _name: str = "") -> None:
        if self.snapshots and (self.rng.random() < 0.5 or len(self.snapshots) >= 4):
            snap, version, generations = self.snapshots.pop(self.rng.randrange(len(self.snapshots)))
            self.check_snapshot(snap, version, generations)
            snap.close()
        else:
            snap = self.store.snapshot()
            assert snap.version == self.model.version
            generations = {name: ks.generation for name, ks in self.model.keyspaces.items()}
            self.snapshots.append((snap, snap.version, generations))

    def read_snapshot(self, _name: str = "") -> None:
        if self.snapshots:
            self.check_snapshot(*self.rng.choice(self.snapshots))

    def check_snapshot(self, snap: Any, version: int, generations: dict[str, int]) -> None:
        for name, ks in self.model.keyspaces.items():
            if generations.get(name) != ks.generation:
                continue  # dropped since (a drop is not versioned)
            target = None if name == "default" and self.rng.random() < 0.5 else name
            key, keys = self.key(), [self.key() for _ in range(5)]
            assert snap.get(key, keyspace=target) == self.model.get(name, key, version)
            assert snap.multi_get(keys, keyspace=target) == [self.model.get(name, k, version) for k in keys]
            start, end, prefix = self.bound(), self.bound(), self.prefix()
            reverse = self.rng.random() < 0.4
            limit = None if self.rng.random() < 0.6 else self.rng.randrange(12)
            rows = self.model.scan(name, version, start, end, prefix, reverse)
            assert list(snap.scan(start, end, prefix=prefix, reverse=reverse, limit=limit,
                                  keyspace=target)) == (rows if limit is None else rows[:limit])
            assert list(snap.keys(start, end, prefix=prefix, reverse=reverse, keyspace=target)) == [
                k for k, _ in rows]
            history = list(snap.history(key, keyspace=target))
            want = [e for e in self.model.history(name, key) if e[0] <= version]
            assert all(e in want for e in history), (key, history, want)
            if self.model.get(name, key, version) is not None:
                assert want[0] in history, (key, history, want)  # the version it reads

    def flush(self, _name: str = "") -> None:
        self.store.flush()

    def compact(self, name: str) -> None:
        r = self.rng.random()
        if r < 0.5:
            self.store.compact()
        elif r < 0.75:
            self.store.compact(name)
        else:
            start, end = self.key_range()
            self.store.compact(name, start=start, end=end)

    def set_history_floor(self, _name: str = "") -> None:
        if not self.model.version:
            return
        low = min(self.store.history_floor, self.model.version + 1)
        top = self.model.version + 1  # the next write's version: nothing before stays readable
        floor = top if self.rng.random() < 0.2 else self.rng.randrange(low, top + 1)
        self.store.set_history_floor(floor)
        self.user_floor = max(self.user_floor, floor)

    def tick(self, _name: str = "") -> None:
        self.clock.now += self.rng.choice((0.05, 0.3, 0.5, 0.9, 1.0, 1.7, 3.0, 6.0))

    def lower_ttl(self, name: str) -> None:
        """A TTL set or lowered (raising one may bring back what merges have not dropped
        yet, which no model can tell)."""
        current = self.model.keyspaces[name].ttl
        choices = [t for t in (0.5, 1.0, 2.5, 4.0, 10.0, 30.0) if current is None or t < current]
        if name == "default" or not choices:
            return
        ttl = self.rng.choice(choices)
        self.handles[name] = self.store.keyspace(name, ttl=ttl)
        self.model.keyspaces[name].ttl = ttl
        assert self.store.keyspace_info()[name]["ttl"] == ttl

    def drop_keyspace(self, name: str) -> None:
        if name == "default":
            return
        self.store.drop_keyspace(name)
        ttl = None if self.rng.random() < 0.5 else self.rng.choice((2.0, 8.0))
        self.model.keyspaces[name] = KeyspaceModel(ttl, self.model.keyspaces[name].generation + 1)
        self.handles[name] = self.store.keyspace(name, ttl=ttl)

    def reopen(self, _name: str = "") -> None:
        self.close()
        self.store = self._open()
        self._take_handles()
        assert self.store.version == self.model.version
        info = self.store.keyspace_info()
        assert {name: info[name]["ttl"] for name in info} == {
            name: ks.ttl for name, ks in self.model.keyspaces.items()}

    def read_beside(self, _name: str = "") -> None:
        """A read-only store opened beside the writer, or a checkpoint, reads what the
        model holds at its version."""
        checkpoint = self.rng.random() < 0.5
        path = self.path
        if checkpoint:
            path = f"{self.path}.checkpoint"
            self.store.checkpoint(path)
        reader = banyanstore.open(path, read_only=True, clock=self.clock, io_mode="sync")
        try:
            v = reader.version
            assert v == self.model.version if checkpoint else v <= self.model.version
            for name in self.model.keyspaces:
                assert list(reader.keyspace(name).scan()) == self.model.scan(name, v), name
        finally:
            reader.close()
            if checkpoint:
                shutil.rmtree(path)

    def compare_all(self, _name: str = "") -> None:
        for name, ks in self.handles.items():
            rows = self.model.scan(name, self.model.version)
            assert list(ks.scan()) == rows, name
            assert list(ks) == [k for k, _ in rows], name


class ExtendedWorkload(Workload):
    """:class:`Workload` with more ways to come back to the store and to read it: reopens
    with other options (compression, block and memtable sizes, a changed
    ``history_retention``), checkpoints opened as writers (every keyspace at the latest
    and at older versions, then a write), reverse scans with a limit against the forward
    scan, sweeps of every readable version, copied snapshots, ``ttl=0`` and
    ``oldest_version``."""

    def __init__(self, path: str, seed: int, retention: float | None) -> None:
        self.extra: dict[str, Any] = dict(compaction_mode="thread")  # (a worker process: 0.3 s a start)
        super().__init__(path, seed, retention)

    def _open(self) -> Any:
        return banyanstore.open(self.path, clock=self.clock, history_retention=self.retention,
                                **{**OPTIONS, **self.extra})

    def operations(self) -> list[tuple[float, Callable[[str], None]]]:
        return [(0.20, self.put), (0.26, self.delete), (0.29, self.delete_range), (0.35, self.batch),
                 (0.41, self.get), (0.44, self.multi_get), (0.50, self.scan), (0.53, self.views),
                 (0.56, self.history), (0.61, self.snapshot), (0.63, self.read_snapshot),
                 (0.67, self.flush), (0.70, self.compact), (0.72, self.set_history_floor),
                 (0.78, self.tick), (0.79, self.lower_ttl), (0.80, self.drop_keyspace),
                 (0.81, self.reopen), (0.825, self.reopen_other), (0.84, self.checkpoint_writer),
                 (0.90, self.reverse_against_forward), (0.94, self.sweep_versions),
                 (0.95, self.read_beside), (1.0, self.compare_all)]

    def finish(self) -> None:
        for name in self.model.keyspaces:
            self.sweep_versions(name)

    def reopen_other(self, _name: str = "") -> None:
        """Reopen with other table options, sometimes another retention: nothing read changes
        (a floor raised under the old retention stays where it is)."""
        self.close()
        self.extra = dict(compression=self.rng.choice(("none", "lz4", "zstd")),
                          memtable_size=self.rng.choice((64 * 1024, 128 * 1024)),
                          block_size=self.rng.choice((1024, 2048, 4096)),
                          compaction_mode="process" if self.rng.random() < 0.25 else "thread")
        if self.rng.random() < 0.4:
            self.retention = self.rng.choice((None, 0.0, 1.0, 3.0, 100.0))
        self.store = self._open()
        self._take_handles()
        assert self.store.version == self.model.version
        self.user_floor = max(self.user_floor, self.store.history_floor)

    def checkpoint_writer(self, _name: str = "") -> None:
        """A checkpoint opened as a writer holds every keyspace at the store's version and
        at every version from its floor, and takes writes."""
        path = f"{self.path}.copy"
        assert self.store.checkpoint(path) == self.model.version
        copy = banyanstore.open(path, clock=self.clock, history_retention=self.retention,
                                **{**OPTIONS, **self.extra})
        try:
            assert copy.version == self.model.version
            info = copy.keyspace_info()
            assert {name: info[name]["ttl"] for name in info} == {
                name: ks.ttl for name, ks in self.model.keyspaces.items()}
            for name in self.model.keyspaces:
                ks = copy if name == "default" else copy.keyspace(name)
                assert list(ks.scan(reverse=True)) == self.model.scan(name, self.model.version, reverse=True)
                versions = range(max(copy.history_floor, 1), self.model.version + 1)
                for v in self.rng.sample(versions, min(3, len(versions))):
                    assert list(ks.scan(version=v)) == self.model.scan(name, v), (name, v)
            assert copy.put(b"copy", b"x") == self.model.version + 1
        finally:
            copy.close()
            shutil.rmtree(path)

    def reverse_against_forward(self, name: str) -> None:
        """A reverse scan (with a limit, values only) is the forward scan backwards."""
        ks = self.handles[name]
        start, end, prefix = self.bound(), self.bound(), self.prefix()
        v, limit = self.read_version(), self.rng.randrange(8)

        def read() -> list[tuple[bytes, bytes]]:
            forward = list(ks.scan(start, end, prefix=prefix, version=v))
            backward = forward[::-1]
            assert list(ks.scan(start, end, prefix=prefix, version=v, reverse=True)) == backward
            assert list(ks.scan(start, end, prefix=prefix, version=v, reverse=True,
                                limit=limit)) == backward[:limit]
            assert list(ks.values(start, end, prefix=prefix, version=v, reverse=True)) == [
                value for _, value in backward]
            return forward
        self.check_at(v, read, self.model.scan(name, v, start, end, prefix), "reverse")

    def sweep_versions(self, name: str) -> None:
        """Whole-keyspace scans at readable versions (some at random, every snapshot's),
        and ``oldest_version`` is the oldest of the floor and the snapshots'."""
        pinned = [v for _, v, _ in self.snapshots]
        assert self.store.oldest_version == min([self.store.history_floor, *pinned])
        versions = list(range(max(self.store.history_floor, 1), self.model.version + 1))
        for v in self.rng.sample(versions, min(4, len(versions))) + pinned:
            self.check_at(v, lambda: list(self.handles[name].scan(version=v)),
                          self.model.scan(name, v), f"sweep {v}")

    def snapshot(self, _name: str = "") -> None:
        """Sometimes a copy of a live snapshot (its own pin), else as :class:`Workload`."""
        if self.snapshots and len(self.snapshots) < 6 and self.rng.random() < 0.2:
            snap, version, generations = self.rng.choice(self.snapshots)
            twin = copy.copy(snap)
            assert twin.version == version
            self.snapshots.append((twin, version, dict(generations)))
            return
        super().snapshot(_name)

    def lower_ttl(self, name: str) -> None:
        """As :meth:`Workload.lower_ttl`, ``ttl=0`` among the choices."""
        current = self.model.keyspaces[name].ttl
        choices = [t for t in (0.0, 0.5, 1.0, 4.0, 30.0) if current is None or t < current]
        if name == "default" or not choices:
            return
        ttl = self.rng.choice(choices)
        self.handles[name] = self.store.keyspace(name, ttl=ttl)
        self.model.keyspaces[name].ttl = ttl
