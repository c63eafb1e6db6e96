"""A plain-Python model of the Store's contract (full version history) and a
seeded random workload that checks a store against it."""

from __future__ import annotations

import random
from bisect import bisect_right
from typing import Any

import pytest

from banyanstore.errors import VersionUnavailableError

KEYSPACES = ("default", "index")


class FakeClock:
    """An injectable wall clock that only moves when the test says so."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


class Model:
    """Full version history per keyspace; with ``ttl`` and a clock, expiry follows
    the documented rule (lsm/timemap.py): an entry is past its TTL when it is
    older than the first version committed in the cutoff's second."""

    def __init__(self, clock: FakeClock | None = None, ttl: float | None = None) -> None:
        self.version = 0
        self.data: dict[str, dict[bytes, list[tuple[int, bytes | None]]]] = {k: {} for k in KEYSPACES}
        self.clock, self.ttl = clock, ttl
        self.samples: list[tuple[int, int]] = []  # (first version, second)
        self.ranges: dict[str, list[tuple[bytes, bytes, int]]] = {k: [] for k in KEYSPACES}

    def ttl_floor(self) -> int:
        if self.ttl is None or self.clock is None:
            return 0
        cutoff = int(self.clock() - self.ttl)
        for v, second in self.samples:
            if second >= cutoff:
                return v
        return self.version + 1

    def write(self, ops: list[tuple[str, bytes, bytes | None]]) -> int:
        self.version += 1
        if self.clock is not None:
            second = int(self.clock())
            if not self.samples or second > self.samples[-1][1]:
                self.samples.append((self.version, second))
        for op in ops:
            if len(op) == 4:  # (ks, start, end, "range"): delete_range
                ks, start, end = op[0], op[1], op[2]
                for k, entries in self.data[ks].items():  # the batch's earlier writes go too
                    if start <= k < end and entries and entries[-1][0] == self.version:
                        entries.pop()
                self.ranges[ks].append((start, end, self.version))
                continue
            ks, k, v = op
            entries = self.data[ks].setdefault(k, [])
            if entries and entries[-1][0] == self.version:
                entries[-1] = (self.version, v)  # the last op of a batch on a key wins
            else:
                entries.append((self.version, v))
        return self.version

    def range_version(self, ks: str, key: bytes, version: int) -> int:
        """The newest range tombstone at or below ``version`` covering ``key`` (0: none)."""
        return max((v for s, e, v in self.ranges[ks] if s <= key < e and v <= version), default=0)

    def get(self, ks: str, key: bytes, version: int) -> bytes | None:
        entries = self.data[ks].get(key, [])
        i = bisect_right([e[0] for e in entries], version)
        if not i or entries[i - 1][0] < self.ttl_floor():
            return None
        if entries[i - 1][0] < self.range_version(ks, key, version):
            return None  # deleted by a range
        return entries[i - 1][1]

    def scan(self, ks: str, start: bytes | None, end: bytes | None, version: int,
             reverse: bool, limit: int | None) -> list[tuple[bytes, bytes]]:
        out = []
        for k in sorted(self.data[ks]):
            if (start is not None and k < start) or (end is not None and k >= end):
                continue
            v = self.get(ks, k, version)
            if v is not None:
                out.append((k, v))
        if reverse:
            out.reverse()
        return out if limit is None else out[:limit]

    def history(self, ks: str, key: bytes) -> list[tuple[int, bytes | None]]:
        """Every write of ``key``, newest first; a range tombstone covering it shows as
        ``(version, None)`` unless the key was written again in its batch."""
        floor = self.ttl_floor()
        entries = self.data[ks].get(key, [])
        own = {e[0] for e in entries}
        ranges = {(v, None) for s, e, v in self.ranges[ks] if s <= key < e and v not in own}
        merged = sorted([*entries, *ranges], key=lambda e: -e[0])
        return [e for e in merged if e[0] >= floor]


def _key(rng: random.Random, n_keys: int) -> bytes:
    return b"k%05d" % rng.randrange(n_keys)


def _value(rng: random.Random) -> bytes:
    size = rng.choice((0, 1, 8, 40, 100, 300, 2000))
    return rng.randbytes(size)


def _range(rng: random.Random, n_keys: int) -> tuple[bytes, bytes]:
    """A non-empty key range: mostly a few keys wide, sometimes most of the keyspace."""
    width = rng.choice((1, 3, 10, 40, n_keys // 2))
    lo = rng.randrange(n_keys)
    start = b"k%05d" % lo
    return start, (b"k%05d" % (lo + width)) if rng.random() < 0.8 else start + b"\x00"


def _bound(rng: random.Random, n_keys: int) -> bytes | None:
    return None if rng.random() < 0.3 else _key(rng, n_keys)


def check_read_at(store: Any, version: int, fn: Any, expected: Any, pinned: set[int]) -> None:
    """``fn()`` must equal ``expected``, or raise VersionUnavailableError when the
    version is below the store's history floor and no live snapshot (``pinned``: their
    versions) pins it."""
    assert store.oldest_version == min(pinned | {store.history_floor})
    if version < store.history_floor and version not in pinned:
        with pytest.raises(VersionUnavailableError):
            fn()
    else:
        assert fn() == expected


def run_workload(open_store: Any, seed: int, steps: int, n_keys: int = 300,
                 allow_reopen: bool = True, clock: FakeClock | None = None,
                 ttl: float | None = None, ranges: bool = True) -> Any:
    """Random operations against ``open_store()`` and the model; asserts equality.
    With ``clock``, some steps move time forward (for TTL and history retention);
    with ``ranges``, some writes are range tombstones (``delete_range``)."""
    rng = random.Random(seed)
    model = Model(clock, ttl)
    store = open_store()
    spaces = {"default": store, "index": store.keyspace("index")}
    snapshots: list[tuple[Any, int]] = []
    try:
        for step in range(steps):
            op = rng.random()
            ksname = rng.choice(KEYSPACES)
            ks = spaces[ksname]
            if op < 0.30:
                k, v = _key(rng, n_keys), _value(rng)
                assert ks.put(k, v) == model.write([(ksname, k, v)])
            elif op < 0.38:
                k = _key(rng, n_keys)
                assert ks.delete(k) == model.write([(ksname, k, None)])
            elif op < 0.45:
                ops: list[Any] = []
                with store.batch() as b:
                    for _ in range(rng.randrange(1, 8)):
                        name = rng.choice(KEYSPACES)
                        k = _key(rng, n_keys)
                        if ranges and rng.random() < 0.1:
                            lo, hi = _range(rng, n_keys)
                            b.delete_range(lo, hi, keyspace=name)
                            ops.append((name, lo, hi, "range"))
                            continue
                        v = None if rng.random() < 0.2 else _value(rng)
                        if v is None:
                            b.delete(k, keyspace=name)
                        else:
                            b.put(k, v, keyspace=name)
                        ops.append((name, k, v))
                assert b.version == model.write(ops)
            elif ranges and op < 0.47:
                lo, hi = _range(rng, n_keys)
                assert ks.delete_range(lo, hi) == model.write([(ksname, lo, hi, "range")])
            elif op < 0.60:
                k = _key(rng, n_keys)
                assert ks.get(k) == model.get(ksname, k, model.version), (step, k)
                if model.version:
                    v = rng.randrange(0, model.version + 1)
                    if snapshots and rng.random() < 0.3:  # a version a live snapshot pins
                        v = rng.choice(snapshots)[1]
                    check_read_at(store, v, lambda: ks.get(k, version=v), model.get(ksname, k, v),
                                  {sv for _, sv in snapshots})
            elif op < 0.66:
                keys = [_key(rng, n_keys) for _ in range(rng.randrange(1, 30))]
                v = model.version if rng.random() < 0.5 else rng.randrange(0, model.version + 1)
                check_read_at(store, v, lambda: ks.multi_get(keys, version=v),
                              [model.get(ksname, k, v) for k in keys], {sv for _, sv in snapshots})
            elif op < 0.74:
                start, end = _bound(rng, n_keys), _bound(rng, n_keys)
                reverse = rng.random() < 0.4
                limit = None if rng.random() < 0.6 else rng.randrange(0, 50)
                v = model.version if rng.random() < 0.5 else rng.randrange(0, model.version + 1)
                if snapshots and rng.random() < 0.3:  # a version a live snapshot pins
                    v = rng.choice(snapshots)[1]
                check_read_at(store, v,
                              lambda: list(ks.scan(start, end, version=v, reverse=reverse, limit=limit)),
                              model.scan(ksname, start, end, v, reverse, limit), {sv for _, sv in snapshots})
            elif op < 0.77:
                prefix = b"k%03d" % rng.randrange(n_keys // 100 + 1)
                assert list(ks.scan(prefix=prefix)) == [
                    (k, v) for k, v in model.scan(ksname, None, None, model.version, False, None)
                    if k.startswith(prefix)]
            elif op < 0.80:
                k = _key(rng, n_keys)
                got = list(ks.history(k))
                want = model.history(ksname, k)
                floor = store.history_floor
                assert [e for e in got if e[0] >= floor] == [e for e in want if e[0] >= floor]
                assert all(e in want for e in got)
            elif op < 0.84:
                if snapshots and rng.random() < 0.5:
                    snap, sv = snapshots.pop(rng.randrange(len(snapshots)))
                    k = _key(rng, n_keys)
                    assert snap.get(k, keyspace=ksname) == model.get(ksname, k, sv)
                    assert list(snap.scan(keyspace=ksname)) == model.scan(ksname, None, None, sv, False, None)
                    snap.close()
                elif len(snapshots) < 4:
                    s = store.snapshot()
                    assert s.version == model.version
                    snapshots.append((s, s.version))
            elif op < 0.88:
                store.flush()
            elif op < 0.91:
                store.compact()
            elif op < 0.92 and model.version:
                store.set_history_floor(rng.randrange(store.history_floor, model.version + 1))
            elif op < 0.93 and clock is not None:
                clock.now += rng.choice((0.2, 0.7, 1.0, 3.0, 10.0))
            elif op < 0.94 and allow_reopen:
                for s, _ in snapshots:
                    s.close()
                snapshots.clear()
                store.close()
                store = open_store()
                spaces = {"default": store, "index": store.keyspace("index")}
                assert store.version == model.version
        # full comparison at the end, at the latest and at every retained version
        for name in KEYSPACES:
            assert list(spaces[name].scan()) == model.scan(name, None, None, model.version, False, None)
        return store, model
    finally:
        for s, _ in snapshots:
            s.close()
