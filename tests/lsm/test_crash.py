"""Crash simulation with the in-memory crash-simulating env (power loss at every step).

A small deterministic workload -- batches over two keyspaces, synced and unsynced
writes, ``sync()``, flushes, merges (``compact()``), a close and reopen -- is run once
to count its mutating IO operations; then it is re-run with a simulated power loss
injected *before* operation N, for every N (see :mod:`tests.lsm.crashenv` for how the
crashed store is retired).  So every step of the flush protocol (table written,
synced, directory synced, manifest edit, view swap, WAL truncation), of the manifest
protocol (new manifest, CURRENT switch, old manifest removal, roll) and of a merge
(output written, manifest edit, input removal) is a crash point.

After each crash a fresh Store opens the same (rebooted) disk and :func:`verify`
proves: every write acknowledged as durable (``sync=True`` returned, or a later
``sync()``/``flush()``/``close()`` returned) is readable at its version; the state is
exactly the model's state after some prefix of the writes (so no partial batch -- each
batch spans two keyspaces -- and no hole); the version never goes below the highest
acknowledged durable version; ``tables/`` holds only files the manifest names; and the
store accepts writes, which survive a clean reopen.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import pytest

import banyanstore
from banyanstore.errors import BanyanStoreError
from banyanstore.io.memory import MemoryEnv
from banyanstore.lsm import compaction, flush

from .crashenv import CrashEnv, abandon, soak

ROOT = "/db"
KEYSPACES = ("default", "index")
OPTS: dict[str, Any] = dict(memtable_size=64 * 1024, block_size=1024, wal_sync="never",
                            compaction=False, compaction_min_width=2, history_retention=1e9,
                            compression="none", block_cache_size=64 * 1024)

Op = tuple[str, bytes, bytes | None]


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """A crashed store's flusher retries against a dead env; keep its back-off tiny so
    retiring it (close waits for three failed attempts) costs milliseconds."""
    monkeypatch.setattr(flush, "BACKOFF_START", 0.001)
    monkeypatch.setattr(flush, "BACKOFF_MAX", 0.002)
    monkeypatch.setattr(compaction, "BACKOFF_START", 0.001)
    monkeypatch.setattr(compaction, "BACKOFF_MAX", 0.002)


def batch_ops(bid: int) -> list[Op]:
    """The operations of batch ``bid``: an overwrite in each keyspace (values derived
    from ``bid``, so every batch changes both keyspaces), sometimes a delete."""
    ops: list[Op] = [
        ("default", b"k%03d" % (bid % 29), b"v%d:" % bid + bytes([65 + bid % 26]) * (50 + bid % 250)),
        ("index", b"i%03d" % (bid % 17), b"x%d" % bid),
        ("default", b"m%05d" % bid, b"%d" % bid),
    ]
    if bid % 7 == 0:
        ops.append(("default", b"k%03d" % ((bid * 3) % 29), None))
    if bid % 11 == 0:
        ops.append(("index", b"i%03d" % ((bid * 5) % 17), None))
    return ops


@dataclass
class Tracker:
    """What the workload was told: every committed write and what is known durable."""

    writes: list[tuple[int, list[Op]]] = field(default_factory=list)
    durable: int = 0  # highest version acknowledged as durable
    in_doubt: list[Op] | None = None  # the write that raised (may or may not have committed)
    created_at: int | None = None  # mutating ops it took to create the store (first open)

    def state_at(self, version: int) -> dict[str, dict[bytes, bytes]]:
        out: dict[str, dict[bytes, bytes]] = {k: {} for k in KEYSPACES}
        for v, ops in self.writes:
            if v > version:
                break
            for ks, k, val in ops:
                if val is None:
                    out[ks].pop(k, None)
                else:
                    out[ks][k] = val
        return out


def _write(store: Any, bid: int, sync: bool, tracker: Tracker) -> None:
    ops = batch_ops(bid)
    tracker.in_doubt = ops
    if bid % 9 == 0:  # a single put in the index keyspace instead of a batch
        ops = ops[1:2]
        tracker.in_doubt = ops
        v = store.keyspace("index").put(ops[0][1], ops[0][2], sync=sync)
    else:
        with store.batch(sync=sync) as b:
            for ks, k, val in ops:
                if val is None:
                    b.delete(k, keyspace=ks)
                else:
                    b.put(k, val, keyspace=ks)
        v = b.version
    tracker.in_doubt = None
    assert v == (tracker.writes[-1][0] + 1 if tracker.writes else 1)
    tracker.writes.append((v, ops))
    if sync:
        tracker.durable = v


def _all_durable(store: Any, tracker: Tracker) -> None:
    tracker.durable = store.version


def workload(env: Any, tracker: Tracker, batches: int = 60) -> None:
    """The deterministic workload: every flush and merge completes before the next
    write, and no memtable fills up by itself, so the IO sequence is the same on
    every run (crash point N means the same step each time)."""
    store = banyanstore.open(ROOT, env=env, **OPTS)
    tracker.created_at = env.ops
    try:
        store.keyspace("index")
        for bid in range(1, batches + 1):
            _write(store, bid, sync=bid % 4 != 0, tracker=tracker)
            if bid % 8 == 0:
                store.sync()
                _all_durable(store, tracker)
            if bid % 10 == 0:
                store.flush()
                _all_durable(store, tracker)
            if bid in (30, 50):
                store.compact()
            if bid == 40:
                store.close()
                _all_durable(store, tracker)
                store = banyanstore.open(ROOT, env=env, **OPTS)
                assert store.version == tracker.writes[-1][0]
        store.close()
        _all_durable(store, tracker)
    except BaseException:
        abandon(store)
        raise


def _state_of(store: Any) -> dict[str, dict[bytes, bytes]]:
    """Both keyspaces' contents, without the ``after-crash*`` keys :func:`verify` adds
    (a second crash may hit while it writes them)."""
    return {name: {k: v for k, v in store.keyspace(name).scan() if not k.startswith(b"after-crash")}
            for name in KEYSPACES}


def verify(env: Any, tracker: Tracker, *, write_more: bool = True) -> int:
    """Open the crashed disk and check everything the module docstring promises.
    Returns the recovered prefix version."""
    store = banyanstore.open(ROOT, env=env, **OPTS)
    try:
        got = _state_of(store)
        last = tracker.writes[-1][0] if tracker.writes else 0
        # The recovered state is the model after some prefix P of the writes (or, for the
        # write that raised, possibly including it), with P >= every durable ack.
        candidates = list(range(last, tracker.durable - 1, -1))
        prefix = next((p for p in candidates if tracker.state_at(p) == got), None)
        if prefix is None and tracker.in_doubt is not None:
            extra = Tracker(tracker.writes + [(last + 1, tracker.in_doubt)], tracker.durable)
            if extra.state_at(last + 1) == got:
                tracker = extra
                prefix = last + 1
        assert prefix is not None, (
            f"recovered state matches no prefix >= durable version {tracker.durable} "
            f"(last written {last}): lost acknowledged write or partial batch")
        assert store.version >= prefix >= tracker.durable
        # every write of the prefix is readable at its own version (and the one before)
        for v, ops in tracker.writes:
            if v > prefix:
                break
            for ks, k, _val in ops:
                want = tracker.state_at(v)[ks].get(k)
                assert store.keyspace(ks).get(k, version=v) == want, (v, ks, k)
                if v - 1 >= store.oldest_version:
                    assert store.keyspace(ks).get(k, version=v - 1) == tracker.state_at(v - 1)[ks].get(k)
        for v in {prefix, prefix // 2, tracker.durable} - {0}:
            for name in KEYSPACES:
                assert dict(store.keyspace(name).scan(version=v)) == tracker.state_at(v)[name]
        # no file in tables/ that the manifest does not name, no stray manifest or temp file
        named = {f"{t['file']:06d}.sst" for ks in store.stats()["keyspaces"].values()
                 for t in ks["table_list"]}
        assert set(env.listdir(f"{ROOT}/tables")) == named
        top = set(env.listdir(ROOT))
        manifests = {n for n in top if n.startswith("MANIFEST-")}
        assert len(manifests) == 1 and top - manifests <= {"CURRENT", "LOCK", "tables", "wal"}, top
        if write_more:
            v0 = store.version
            v = store.put(b"after-crash", b"yes", sync=True)
            assert v == v0 + 1 > prefix
            with store.batch(sync=True) as b:
                b.put(b"after-crash-2", b"a")
                b.put(b"after-crash-2", b"b", keyspace="index")
            store.flush()
            store.close()
            store = banyanstore.open(ROOT, env=env, **OPTS)
            assert store.get(b"after-crash") == b"yes" and store.get(b"after-crash", version=v) == b"yes"
            assert store.keyspace("index").get(b"after-crash-2") == b"b"
            assert store.version == v + 1
        store.close()
        return prefix
    except BaseException:
        abandon(store)
        raise


def run_with_crash(crash_at: int | None, batches: int = 60) -> tuple[CrashEnv, Tracker, MemoryEnv]:
    """Run the workload with a power loss before mutating op ``crash_at``."""
    disk = MemoryEnv()
    disk.mkdir(ROOT)
    env = CrashEnv(disk, crash_at)
    tracker = Tracker()
    try:
        workload(env, tracker, batches)
    except BanyanStoreError:
        assert env.dead, "the workload failed without a crash"
    else:
        assert crash_at is None or not env.dead
    return env, tracker, disk


def _count_ops(batches: int = 60) -> tuple[int, list[tuple[str, str]]]:
    env, _tracker, _disk = run_with_crash(None, batches)
    return env.ops, env.trace


def _created_at() -> int:
    """How many mutating ops the very first open (creating the store) takes."""
    env, tracker, _disk = run_with_crash(None, 1)
    assert tracker.created_at is not None
    return tracker.created_at


def _protocol_points(trace: list[tuple[str, str]]) -> list[int]:
    """Indices of every op after the store's creation (covered by
    test_crash_while_creating_a_new_store) except plain WAL appends/syncs of
    acknowledged writes (those are sampled): the flush, manifest, merge, reopen and
    WAL-cut steps."""
    created = _created_at()
    return [i for i, (op, path) in enumerate(trace)
            if i >= created and not ("/wal/" in path and op in ("write", "sync"))]


def test_crash_while_creating_a_new_store() -> None:
    """Power loss at every step of creating a new store (directories, WAL, first
    manifest, CURRENT): the next open starts (or finishes creating) an empty store
    instead of failing -- nothing was ever acknowledged."""
    created = _created_at()
    assert created > 3
    failures = []
    for n in range(created):
        _env, tracker, disk = run_with_crash(n, 1)
        try:
            verify(disk, Tracker())
        except (AssertionError, BanyanStoreError) as exc:
            failures.append(f"crash before op {n}: {type(exc).__name__}: {exc}")
    assert not failures, "\n".join(failures)


def test_workload_without_crash_is_consistent() -> None:
    """The harness itself: without a crash every write is durable and verifies."""
    env, tracker, disk = run_with_crash(None)
    assert not env.dead and tracker.durable == tracker.writes[-1][0]
    assert verify(disk, tracker) == tracker.durable


def test_crash_at_every_protocol_step() -> None:
    """Power loss before every flush/manifest/merge/WAL-truncation step (and a sample of
    the WAL appends between them) loses nothing acknowledged and leaves no partial
    batch or unreferenced table."""
    total, trace = _count_ops()
    points = _protocol_points(trace)
    rng = random.Random(7)
    wal_points = sorted(set(range(_created_at(), total)) - set(points))
    points += rng.sample(wal_points, len(wal_points) if soak() else min(len(wal_points), 40))
    assert any("MANIFEST" in p for _o, p in trace) and any(".sst" in p for _o, p in trace)
    failures = []
    for n in sorted(points):
        env, tracker, disk = run_with_crash(n)
        assert env.dead, n
        try:
            verify(disk, tracker)
        except (AssertionError, BanyanStoreError) as exc:
            failures.append(f"crash before op {n} {trace[n]}: {type(exc).__name__}: {exc}")
    assert not failures, "\n".join(failures[:10])


def test_crash_points_cover_every_protocol_step() -> None:
    """The op trace contains each step the brief names, so the loop above crashes there:
    table write/sync, directory sync, manifest append/sync, CURRENT rename, WAL cut,
    merge input removal."""
    _total, trace = _count_ops()
    kinds = {(op, "sst" if ".sst" in p else "MANIFEST" if "MANIFEST" in p else
              "CURRENT" if "CURRENT" in p else "wal" if "/wal" in p else p) for op, p in trace}
    for need in [("write", "sst"), ("sync", "sst"), ("sync_dir", f"{ROOT}/tables"),
                 ("write", "MANIFEST"), ("sync", "MANIFEST"), ("rename", "CURRENT"),
                 ("remove", "wal"), ("remove", "sst"), ("remove", "MANIFEST")]:
        assert need in kinds, need


def test_crash_during_recovery_after_a_crash() -> None:
    """A second power loss while the store recovers from the first (manifest rewrite,
    CURRENT switch, orphan removal, WAL replay) or writes right after: still nothing
    acknowledged lost."""
    total, trace = _count_ops()
    rng = random.Random(11)
    firsts = rng.sample(_protocol_points(trace), 24 if soak() else 6)
    for n in firsts:
        _env, tracker, disk = run_with_crash(n)
        probe = CrashEnv(disk.clone())
        verify(probe, tracker)
        seconds = range(probe.ops) if soak() else rng.sample(range(probe.ops), min(probe.ops, 8))
        for m in seconds:
            copy = disk.clone()
            env2 = CrashEnv(copy, m)
            try:
                verify(env2, tracker)
            except BanyanStoreError:
                assert env2.dead
            verify(copy, tracker)


# -- the realistic variant: memtables fill up by themselves, merges run in the background --

BG_OPTS: dict[str, Any] = dict(OPTS, compaction=True, max_immutable_memtables=2,
                               max_tables_before_slowdown=4, max_tables_before_stall=12)


def bg_workload(env: Any, tracker: Tracker, batches: int, big: int) -> None:
    """Batches with large values so memtables switch on their own and merges start in
    the background (non-deterministic interleaving: crash points are sampled)."""
    store = banyanstore.open(ROOT, env=env, **BG_OPTS)
    try:
        store.keyspace("index")
        for bid in range(1, batches + 1):
            ops = batch_ops(bid)
            ops[0] = (ops[0][0], ops[0][1], ops[0][2] + bytes(big))
            tracker.in_doubt = ops
            with store.batch(sync=bid % 3 != 0) as b:
                for ks, k, val in ops:
                    if val is None:
                        b.delete(k, keyspace=ks)
                    else:
                        b.put(k, val, keyspace=ks)
            tracker.in_doubt = None
            tracker.writes.append((b.version, ops))
            if bid % 3 != 0:
                tracker.durable = b.version
        store.close()
        tracker.durable = tracker.writes[-1][0]
    except BaseException:
        abandon(store)
        raise


@pytest.mark.soak
def test_crash_with_background_flushes_and_merges() -> None:
    """Power loss at sampled points while memtables switch by themselves and the
    compaction thread merges concurrently: same guarantees (bounded by default; more
    points with BANYANSTORE_SOAK=1)."""
    batches, big = 120, 3000
    disk = MemoryEnv()
    disk.mkdir(ROOT)
    probe = CrashEnv(disk)
    tracker = Tracker()
    bg_workload(probe, tracker, batches, big)
    verify(disk, tracker, write_more=False)
    assert any(op == "remove" and ".sst" in p for op, p in probe.trace), "no merge ran"
    total = probe.ops
    rng = random.Random(3)
    for n in rng.sample(range(_created_at(), total), 150 if soak() else 25):
        disk = MemoryEnv()
        disk.mkdir(ROOT)
        env = CrashEnv(disk, n)
        tracker = Tracker()
        try:
            bg_workload(env, tracker, batches, big)
        except BanyanStoreError:
            assert env.dead
        verify(disk, tracker)
