"""Readers beside a writer in another process: read-only opens, refresh(), follow=True.

The writer is tests/lsm/follow_child.py: a tiny memtable, tiny WAL segments and eager
merges, so flushes, WAL cuts, merges and table deletions happen every few milliseconds
under the readers.  Long forms: ``BANYANSTORE_SOAK=1``.
"""

from __future__ import annotations

import bisect
import random
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import banyanstore
from banyanstore.errors import CorruptionError, ReadOnlyError, StorageIOError, VersionUnavailableError
from banyanstore.io.hooked import HookedEnv
from banyanstore.io.memory import MemoryEnv

from . import follow_child
from .crashenv import soak
from .follow_child import check_churn, model_ops

CHILD = Path(follow_child.__file__)


class Writer:
    """The writer process; ``acked`` is the newest version it acknowledged (model mode)."""

    def __init__(self, path: Path, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, str(CHILD), str(path), *args],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("ready "), f"writer failed to start: {line!r}"
        self.opened_at = int(line.split()[1])  # its version after recovery
        self.acked = 0
        self._reader = threading.Thread(target=self._read_acks, daemon=True)
        self._reader.start()

    def _read_acks(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("ack "):
                self.acked = int(line.split()[1])

    def wait_for(self, version: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.acked < version:
            assert self.proc.poll() is None, "writer died"
            assert time.monotonic() < deadline, f"writer stuck below version {version}"
            time.sleep(0.005)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self._reader.join(timeout=10)


@pytest.fixture
def writer_factory(tmp_path: Path) -> Iterator[Any]:
    writers: list[Writer] = []

    def start(*args: str) -> Writer:
        w = Writer(tmp_path / "db", *args)
        writers.append(w)
        return w

    yield start
    for w in writers:
        w.stop()


def churn_get(store: Any, version: int) -> Any:
    def get(key: bytes, keyspace: str) -> bytes | None:
        return store.keyspace(keyspace).get(key, version=version)
    return get


def seconds(default: float, long: float) -> float:
    return long if soak() else default


# -- issue 9, finding 4: read-only opens beside a running writer ----------------------------------
@pytest.mark.soak
def test_read_only_opens_beside_a_writer_never_fail(tmp_path: Path, writer_factory: Any) -> None:
    """Every open succeeds while the writer flushes, cuts its WAL and merges, and shows a
    complete state.  Before the fix most failed with "table named by the manifest is
    missing", some with a raw FileNotFoundError for a WAL segment, and others opened
    at a version whose writes they could not see (the manifest's last_version counts
    writes still in the writer's buffer; or the WAL was cut between reading the
    manifest and the WAL)."""
    writer = writer_factory("churn")
    rng = random.Random(4)
    errors: Counter[str] = Counter()
    opens = 0
    deadline = time.monotonic() + seconds(3, 60)
    while time.monotonic() < deadline or opens < 20:
        try:
            with banyanstore.open(tmp_path / "db", read_only=True, io_mode="sync") as r:
                v = r.version
                check_churn(churn_get(r, v), v, rng)
                assert sum(1 for _ in r.scan(prefix=b"k:", limit=50)) == min(50, v)
        except (banyanstore.BanyanStoreError, OSError) as exc:
            errors[f"{type(exc).__name__}: {str(exc)[:70]}"] += 1
        except AssertionError:
            errors["inconsistent state (version without its writes, or writes lost)"] += 1
        opens += 1
    assert writer.proc.poll() is None
    assert not errors, f"{sum(errors.values())} of {opens} read-only opens failed: {errors.most_common()}"


# -- refresh() --------------------------------------------------------------------------------
@pytest.mark.soak
def test_refresh_follows_flushes_merges_and_wal(tmp_path: Path, writer_factory: Any) -> None:
    """One reader refreshes again and again: versions only rise, every state is complete
    (no half batch, nothing missing), and a snapshot and an iterator taken before a
    refresh keep their view while the writer merges their tables away."""
    writer_factory("churn")
    rng = random.Random(5)
    with banyanstore.open(tmp_path / "db", read_only=True, io_mode="sync") as r:
        last = r.version
        deadline = time.monotonic() + seconds(3, 60)
        rounds = 0
        while time.monotonic() < deadline or rounds < 30:
            snap = r.snapshot()
            it = r.scan(prefix=b"k:")
            first = next(it, None)
            time.sleep(0.01)
            v = r.refresh()
            assert v >= last
            last = v
            check_churn(churn_get(r, v), v, rng)
            check_churn(lambda k, ks: snap.get(k, keyspace=ks), snap.version, rng)
            rest = list(it)  # its tables may have been merged and deleted meanwhile
            assert len(rest) + (first is not None) == min(follow_child.KEYS, snap.version)
            snap.close()
            rounds += 1
        stats = r.stats()["follower"]
        assert stats["refreshes"] == rounds and stats["version"] == last
    assert last > 1000, "the writer made too little progress for this test to mean anything"


@pytest.mark.soak
def test_follower_across_writer_kill9_and_restart(tmp_path: Path, writer_factory: Any) -> None:
    """The writer is killed with SIGKILL mid-write and restarted (recovery, a new manifest,
    orphans removed) again and again: the follower's refreshes never fail, its version
    never goes back, and every state is complete."""
    rng = random.Random(6)
    writer = writer_factory("churn")
    time.sleep(0.3)
    lost: set[int] = set()
    with banyanstore.open(tmp_path / "db", read_only=True, io_mode="sync") as r:
        last = r.version
        for _ in range(4 if not soak() else 40):
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                v = r.refresh()
                assert v >= last
                last = v
                check_churn(churn_get(r, v), v, rng, frozenset(lost))
            writer.proc.kill()
            writer.proc.wait()
            after = r.refresh()  # all the killed writer left in the OS: nothing it showed is lost
            assert after >= last
            last = after
            writer = writer_factory("churn")
            assert writer.opened_at >= last
            lost.update(range(last, writer.opened_at))  # versions last+1.. died in its buffer
        v = r.refresh()
        check_churn(churn_get(r, v), v, rng, frozenset(lost))
    assert last > 0


class Model:
    """The state of the model writer at every version: per (keyspace, key), the
    versions and values written, ascending."""

    def __init__(self, seed: int) -> None:
        self._ops = model_ops(seed)
        self.version = 0
        self.history: dict[tuple[str, bytes], tuple[list[int], list[bytes | None]]] = {}

    def advance(self, version: int) -> None:
        while self.version < version:
            kind, ops = next(self._ops)
            if kind != "write":
                continue
            self.version += 1
            for _op, ks, key, value in ops:
                versions, values = self.history.setdefault((ks, key), ([], []))
                if versions and versions[-1] == self.version:
                    values[-1] = value  # the same key twice in a batch: the last op wins
                else:
                    versions.append(self.version)
                    values.append(value)

    def get(self, ks: str, key: bytes, version: int) -> bytes | None:
        versions, values = self.history.get((ks, key), ([], []))
        i = bisect.bisect_right(versions, version)
        return values[i - 1] if i else None

    def state(self, ks: str, version: int) -> dict[bytes, bytes]:
        out = {}
        for (k_ks, key) in self.history:
            if k_ks == ks and (value := self.get(ks, key, version)) is not None:
                out[key] = value
        return out


def check_against_model(r: Any, model: Model, rng: random.Random) -> None:
    """The reader's state equals the model's: whole keyspaces at one version (a
    snapshot: a following reader may move on meanwhile), and keys at older versions."""
    with r.snapshot() as snap:
        v = snap.version
        model.advance(v)
        for ks in ("default", "index"):
            assert dict(snap.scan(keyspace=ks)) == model.state(ks, v), (ks, v)
    for _ in range(20):
        lowest = max(r.oldest_version, 1)
        if lowest > v:  # a following reader moved on past v
            break
        at = rng.randint(lowest, v)
        ks = rng.choice(("default", "index"))
        key = b"m:%03d" % rng.randrange(300)
        try:
            got = r.keyspace(ks).get(key, version=at)
        except VersionUnavailableError:
            assert at < r.oldest_version  # the floor rose meanwhile (it never falls)
            continue
        assert got == model.get(ks, key, at), (ks, key, at, v)


@pytest.mark.soak
@pytest.mark.parametrize("seed", [1, 2])
def test_refresh_model_check(tmp_path: Path, writer_factory: Any, seed: int) -> None:
    """Random puts, deletes, cross-keyspace batches, flushes and compactions: after
    refresh() the reader sees every acknowledged write, and its state at every
    version it can read equals the model's."""
    writer = writer_factory("model", str(seed))
    model = Model(seed)
    rng = random.Random(seed)
    with banyanstore.open(tmp_path / "db", read_only=True, io_mode="sync") as r:
        deadline = time.monotonic() + seconds(2, 60)
        while time.monotonic() < deadline or r.version < 1000:
            acked = writer.acked
            r.refresh()
            assert r.version >= acked
            check_against_model(r, model, rng)
            time.sleep(rng.random() * 0.02)


@pytest.mark.soak
def test_follow_sees_acknowledged_writes_within_the_interval(tmp_path: Path,
                                                             writer_factory: Any) -> None:
    """follow=True: without refresh() calls, an acknowledged write becomes visible within
    about the interval, and every state the reader shows is the model's."""
    writer = writer_factory("model", "3")
    model = Model(3)
    rng = random.Random(3)
    with banyanstore.open(tmp_path / "db", read_only=True, io_mode="sync", follow=True,
                          follow_interval_ms=20) as r:
        target = 0
        for _ in range(8 if not soak() else 100):
            target += 150
            writer.wait_for(target)
            deadline = time.monotonic() + 30  # generous: a loaded machine, not a timing claim
            while r.version < target:
                assert time.monotonic() < deadline, f"follower stuck at {r.version} < {target}"
                time.sleep(0.005)
            check_against_model(r, model, rng)
        st = r.stats()["follower"]
        assert st["following"] and st["refreshes"] > 0 and st["failures"] == 0


# -- in-process checks ------------------------------------------------------------------------
def test_refresh_in_process(tmp_path: Path) -> None:
    path = tmp_path / "db"
    with banyanstore.open(path, io_mode="sync", wal_sync="never", memtable_size=64 * 1024,
                          compaction=False) as w:
        w.put(b"a", b"1")
        with banyanstore.open(path, read_only=True, io_mode="sync") as r:
            assert r.get(b"a") == b"1" and r.version == 1
            w.keyspace("new").put(b"x", b"y")
            w.put(b"a", b"2")
            with pytest.raises(VersionUnavailableError):
                r.get(b"a", version=3)  # not refreshed yet
            # No sync needed: a write is in the WAL file once its call returned.
            assert r.refresh() == 3 and r.get(b"a") == b"2" and r.get(b"a", version=1) == b"1"
            assert r.keyspace("new").get(b"x") == b"y" and r.keyspaces() == ["default", "new"]
            w.flush()
            w.compact()
            for i in range(2000):
                w.put(b"k%d" % i, b"v" * 100)
            w.sync()
            assert r.refresh() == w.version
            assert r.get(b"k1999") == b"v" * 100 and r.get(b"a") == b"2"
            with pytest.raises(ReadOnlyError):
                r.put(b"a", b"3")
            with pytest.raises(ReadOnlyError):
                r.keyspace("missing")


class FlushBeforeOpen(HookedEnv):
    """The follower's env: right before it opens ``path`` (after listing the WAL),
    the writer flushes -- a new WAL segment, then every older one removed."""

    def __init__(self, inner: MemoryEnv, writer: Any) -> None:
        super().__init__(inner)
        self.writer = writer
        self.path: str | None = None

    def arm(self) -> None:
        """Fire at the writer's newest WAL segment."""
        self.path = "/db/wal/" + sorted(n for n in self.inner.listdir("/db/wal") if n.endswith(".log"))[-1]

    def hook(self, op: str, paths: tuple[str, ...], nbytes: int = 0) -> None:
        if op == "open_readable" and paths[0] == self.path:
            self.path = None
            self.writer.flush()


def test_refresh_when_the_writer_cuts_the_wal_segment_just_listed() -> None:
    """Writes in a WAL segment the follower lists, then finds removed by a flush when it
    opens it: refresh() still reaches every write made before it was called (the
    writes are in tables now).  It used to return the version before them: the Log
    reported itself ending where the removed segment began, which is also where the
    manifest it had read said replay starts, so nothing looked missing
    (test_refresh_model_check's rare 'assert 768 >= 774')."""
    env = MemoryEnv()
    with banyanstore.open("/db", env=env, wal_sync="never", compaction=False) as w:
        w.put(b"a", b"1")
        hooked = FlushBeforeOpen(env, w)
        with banyanstore.open("/db", env=hooked, read_only=True) as r:
            w.flush()  # the WAL goes on in a segment the follower has not seen
            w.put(b"b", b"2")
            w.put(b"c", b"3")
            hooked.arm()
            assert r.refresh() == w.version == 3
            assert hooked.path is None  # the race happened
            assert [r.get(k) for k in (b"a", b"b", b"c")] == [b"1", b"2", b"3"]
            w.put(b"d", b"4")
            assert r.refresh() == 4 and r.get(b"d") == b"4"


def test_read_only_open_when_the_writer_cuts_the_wal_segment_just_listed() -> None:
    """The same race while a read-only store opens.  The store's catch-up at open already
    coped before the fix (its Log came out empty at seq 1, below the manifest's replay
    start, so it retried); the Log's own open is tested in tests/log/test_log_follow.py."""
    env = MemoryEnv()
    with banyanstore.open("/db", env=env, wal_sync="never", compaction=False) as w:
        w.put(b"a", b"1")
        w.flush()
        w.put(b"b", b"2")
        hooked = FlushBeforeOpen(env, w)
        hooked.arm()
        with banyanstore.open("/db", env=hooked, read_only=True) as r:
            assert hooked.path is None
            assert r.version == w.version == 2 and r.get(b"b") == b"2"


def test_refresh_across_writer_restarts(tmp_path: Path) -> None:
    """Each writer open starts a new manifest and removes the old one: a follower reads
    the new one whole and keeps what it had (tables, WAL position, memtables)."""
    path = tmp_path / "db"
    opts = dict(io_mode="sync", wal_sync="never", memtable_size=64 * 1024, compaction=False)
    w = banyanstore.open(path, **opts)
    w.put(b"a", b"0")
    w.sync()
    with banyanstore.open(path, read_only=True, io_mode="sync") as r:
        for round_ in range(1, 4):
            for i in range(300):
                w.put(b"k%d" % i, b"%d" % round_ * 50)
            if round_ % 2:  # a restart (close flushes), or records left in the WAL
                w.close()
                w = banyanstore.open(path, **opts)
            else:
                w.sync()
            with r.snapshot() as before:
                assert r.refresh() == 1 + 300 * round_
                assert before.get(b"k1") == (b"%d" % (round_ - 1) * 50 if round_ > 1 else None)
            assert dict(r.scan(prefix=b"k")) == {b"k%d" % i: b"%d" % round_ * 50 for i in range(300)}
    w.close()


def test_missing_table_with_unchanged_manifest_is_corruption(tmp_path: Path) -> None:
    """Only a file the writer could have removed is retried: a table the manifest names,
    gone while the manifest has not changed, is damage."""
    path = tmp_path / "db"
    with banyanstore.open(path, io_mode="sync") as w:
        for i in range(100):
            w.put(b"k%d" % i, b"v")
        w.flush()
    table = next((path / "tables").glob("*.sst"))
    with banyanstore.open(path, read_only=True, io_mode="sync") as r:
        table.unlink()
        assert r.get(b"k1") == b"v"  # pinned
        assert r.refresh() == 100
    with pytest.raises(CorruptionError, match="table named by the manifest is missing"):
        banyanstore.open(path, read_only=True, io_mode="sync")


def test_wal_gap_is_corruption(tmp_path: Path) -> None:
    """A WAL segment removed from the middle (not by the writer, which only cuts the
    front) while the manifest has not changed: CorruptionError, not a silently
    shorter store."""
    path = tmp_path / "db"
    with banyanstore.open(path, io_mode="sync", wal_sync="never", segment_size=64 * 1024,
                          compaction=False) as w:
        for i in range(3000):
            w.put(b"k%05d" % i, b"v" * 100)
        w.sync()
        wal = sorted((path / "wal").glob("*.log"))
        assert len(wal) >= 3
        wal[1].unlink()
        with pytest.raises(CorruptionError, match="WAL records .* are missing"):
            banyanstore.open(path, read_only=True, io_mode="sync")


def test_follow_needs_read_only(tmp_path: Path) -> None:
    with pytest.raises(banyanstore.ConfigError, match="follow"):
        banyanstore.open(tmp_path / "db", follow=True)


class OpenAtEveryStep(HookedEnv):
    """The writer's env: before each of its operations, a read-only open of the same store
    (on the inner env) runs and its outcome is kept."""

    def __init__(self, inner: MemoryEnv) -> None:
        super().__init__(inner)
        self.outcomes: list[tuple[str, str]] = []
        self.busy = False

    def hook(self, op: str, paths: tuple[str, ...], nbytes: int = 0) -> None:
        if self.busy:
            return
        self.busy = True
        try:
            with banyanstore.open("/db", env=self.inner, read_only=True) as r:
                self.outcomes.append((op, f"version {r.version}"))
        except banyanstore.BanyanStoreError as exc:
            self.outcomes.append((op, type(exc).__name__))
        finally:
            self.busy = False


def test_read_only_open_of_a_store_being_created() -> None:
    """While a writer creates a store, a read-only open finds no store yet
    (StoreNotFoundError) or the new, empty store -- never damage.  It used to raise
    CorruptionError ("directory is not a banyanstore store") from the moment the writer
    made tables/ until it renamed CURRENT into place."""
    inner = MemoryEnv()
    env = OpenAtEveryStep(inner)
    banyanstore.open("/db", env=env, wal_sync="never").close()
    seen = Counter(outcome for _op, outcome in env.outcomes)
    assert set(seen) == {"StoreNotFoundError", "version 0"}, seen
    assert seen["StoreNotFoundError"] > 5  # the creation's steps before CURRENT


def test_data_files_without_current_are_damage_to_a_reader(tmp_path: Path) -> None:
    """A store's tables or WAL segments without CURRENT: CorruptionError naming CURRENT
    (read-only, or create_if_missing=False), as for a writer."""
    path = tmp_path / "db"
    with banyanstore.open(path, io_mode="sync") as w:
        w.put(b"k", b"v")
    (path / "CURRENT").unlink()
    for opts in (dict(read_only=True), dict(create_if_missing=False)):
        with pytest.raises(CorruptionError, match="CURRENT is missing") as err:
            banyanstore.open(path, io_mode="sync", **opts)
        assert err.value.path == str(path / "CURRENT")


def test_refresh_reports_damage_in_the_live_wal_segment(tmp_path: Path) -> None:
    """A damaged WAL record with intact records after it, in the segment the writer
    still appends to: refresh() raises CorruptionError naming the segment and keeps the
    reader's state.  It used to return the version before the damage, again and
    again, while the writer acknowledged synced writes after it."""
    path = tmp_path / "db"
    with banyanstore.open(path, io_mode="sync", wal_sync="always", compaction=False) as w:
        for i in range(200):
            w.put(b"k%03d" % i, b"v%d" % i * 20)
        r = banyanstore.open(path, read_only=True, io_mode="sync")
        for i in range(200, 400):
            w.put(b"k%03d" % i, b"v%d" % i * 20)
        segment = sorted((path / "wal").glob("*.log"))[-1]
        with open(segment, "r+b") as f:
            data = f.read()
            f.seek(data.index(b"v250v250"))
            f.write(b"X")
        with r:
            for _ in range(2):
                with pytest.raises(CorruptionError) as err:
                    r.refresh()
                assert err.value.path == str(segment) and err.value.offset is not None
                assert r.version == 200 and r.get(b"k199") == b"v199" * 20


def test_refresh_without_the_wal_directory_is_corruption(tmp_path: Path) -> None:
    """wal/ removed under a follower: refresh() raises CorruptionError naming it (as a
    read-only open does), not a bare FileNotFoundError."""
    path = tmp_path / "db"
    with banyanstore.open(path, io_mode="sync") as w:
        w.put(b"k", b"v")
    with banyanstore.open(path, read_only=True, io_mode="sync") as r:
        for segment in (path / "wal").iterdir():
            segment.unlink()
        (path / "wal").rmdir()
        with pytest.raises(CorruptionError) as err:
            r.refresh()
        assert err.value.path == str(path / "wal")
        assert r.get(b"k") == b"v"


class FailOnce(HookedEnv):
    """Fails the next ``op`` on a path under ``prefix`` once armed (an EIO)."""

    armed: tuple[str, str] | None = None

    def hook(self, op: str, paths: tuple[str, ...], nbytes: int = 0) -> None:
        if self.armed is not None and op == self.armed[0] and paths[0].startswith(self.armed[1]):
            self.armed = None
            raise StorageIOError("injected EIO", path=paths[0], op=op)


def test_refresh_after_a_failed_refresh_publishes_what_that_one_read() -> None:
    """A refresh fails (an IO error reading the WAL) after it read the writer's new
    manifest edits; the next refresh succeeds and shows them.  It used to find nothing
    new to read and publish nothing: keyspaces the writer created or dropped stayed
    unseen until some later change of the writer."""
    env = MemoryEnv()
    with banyanstore.open("/db", env=env, wal_sync="never", compaction=False) as w:
        w.keyspace("old").put(b"k", b"v")
        failing = FailOnce(env)
        with banyanstore.open("/db", env=failing, read_only=True) as r:
            w.keyspace("new")
            w.drop_keyspace("old")
            failing.armed = ("listdir", "/db/wal")
            with pytest.raises(StorageIOError, match="injected"):
                r.refresh()
            assert r.keyspaces() == ["default", "old"]  # the last state, kept whole
            assert r.refresh() == w.version
            assert r.keyspaces() == ["default", "new"]


def test_read_only_snapshot_reads_exact_and_the_store_refuses_its_old_version(tmp_path: Path) -> None:
    """docs/api.md (Snapshots): a read-only store's snapshot keeps its tables and reads
    exact across the writer's merges; the store's own reads at its version follow the
    writer's history floor -- VersionUnavailableError, never the newer value."""
    with banyanstore.open(tmp_path / "db") as w:
        w.put(b"k", b"old")
        w.flush()
        with banyanstore.open(tmp_path / "db", read_only=True) as r, r.snapshot() as snap:
            w.put(b"k", b"new")
            w.flush()
            w.set_history_floor(w.version)
            w.compact()
            r.refresh()
            assert snap.get(b"k") == b"old" and r.get(b"k") == b"new"
            with pytest.raises(VersionUnavailableError):
                r.get(b"k", version=snap.version)
            assert r.oldest_version == r.history_floor == w.version


def test_keyspace_lookup_while_refreshes_see_it_dropped_and_created(tmp_path: Path) -> None:
    """``reader.keyspace(name)`` on threads while another thread refreshes and the writer
    drops and creates that keyspace again and again: each call returns a handle or raises
    ReadOnlyError (the reader has no such keyspace) -- never an internal error from
    looking the name up twice across a refresh."""
    path = tmp_path / "db"
    with banyanstore.open(path, wal_sync="never") as writer, \
            banyanstore.open(path, read_only=True) as reader:
        writer.keyspace("churn")
        stop = threading.Event()
        failures: list[BaseException] = []

        def look_up() -> None:
            while not stop.is_set():
                try:
                    reader.keyspace("churn")
                except ReadOnlyError:
                    pass
                except BaseException as exc:  # noqa: BLE001 - reported below
                    failures.append(exc)

        def refresh() -> None:
            while not stop.is_set():
                reader.refresh()

        threads = [threading.Thread(target=f, daemon=True) for f in (look_up, look_up, refresh)]
        old = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
        try:
            for t in threads:
                t.start()
            for _ in range(200):
                writer.drop_keyspace("churn")
                time.sleep(0.0005)
                writer.keyspace("churn")
                time.sleep(0.0005)
        finally:
            stop.set()
            sys.setswitchinterval(old)
            for t in threads:
                t.join(30)
        assert failures == []


def test_reader_never_dates_versions_early_after_the_manifest_thinned(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader holds the five time samples it opened with; the writer then flushes
    past the map's limit (here 16 samples), so the manifest it refreshes from holds
    thinned pairs (first version, second of the later) -- one starting at the reader's
    last sample, merging the sample after it, which the reader never saw (its WAL
    record was flushed first).  The refresh must keep the pair's later second: with
    the reader's earlier one, k05 (written after a 1000 s gap, still 500 s inside its
    TTL) expired early on the reader only."""
    from .model import FakeClock
    monkeypatch.setattr("banyanstore.lsm.timemap.LIMIT", 16)
    clock = FakeClock()
    path = tmp_path / "db"
    opts: dict[str, Any] = dict(io_mode="sync", compaction=False, wal_sync="never")
    with banyanstore.open(path, clock=clock, **opts) as s:
        hot = s.keyspace("hot", ttl=10000)
        written = {}
        for i in range(18):  # one version a second: one sample each
            clock.now += 1000 if i == 5 else 1
            hot.put(b"k%02d" % i, b"v")
            written[b"k%02d" % i] = clock.now
            if i == 4:
                s.flush()
                reader = banyanstore.open(path, read_only=True, clock=clock, io_mode="sync")
        s.flush()  # the reader never reads these versions' WAL records
        clock.now = written[b"k05"] + 9500
        assert hot.get(b"k05") == b"v"
        reader.refresh()
        assert reader.keyspace("hot").get(b"k05") == b"v"
        reader.close()


# -- a store replaced under its reader ------------------------------------------------------------
def _fill(path: Path, prefix: bytes, n: int, value: bytes) -> None:
    """A writer open: ``n`` puts, a flush of the first half, the rest left in the WAL."""
    with banyanstore.open(path, io_mode="sync", compaction=False) as w:
        for i in range(n):
            w.put(b"%s%03d" % (prefix, i), value)
            if i == n // 2:
                w.flush()


@pytest.mark.parametrize("reopens", [0, 3])
def test_refresh_of_a_store_replaced_under_the_reader_is_an_error(tmp_path: Path, reopens: int) -> None:
    """The directory is deleted and a new store created at the path (``reopens``: the
    old store's writer opened more often, so the two manifests have different names;
    with none both are MANIFEST-000001).  Before, refresh() returned as if nothing had
    changed and reads went on answering with the old store's data (the new store's
    manifest, under the old one's name, was read from the old one's offset; its
    tables share the old ones' file numbers); once the new store wrote more, a refresh
    failed with "the WAL starts at seq ..., the records in it are lost (open with
    wal_recovery='skip_missing' ...)".  Now every refresh raises a CorruptionError
    saying the store was replaced, and the reader keeps its last state."""
    path = tmp_path / "db"
    _fill(path, b"old", 100, b"old")
    for _ in range(reopens):
        _fill(path, b"more", 4, b"old")
    with banyanstore.open(path, read_only=True, io_mode="sync") as r:
        before = list(r.scan())
        version = r.version
        shutil.rmtree(path)
        _fill(path, b"new", 20, b"new")
        for _ in range(2):  # the error stays: the reader cannot go on from its state
            with pytest.raises(CorruptionError, match="replaced"):
                r.refresh()
            assert r.version == version and list(r.scan()) == before
    with banyanstore.open(path, read_only=True, io_mode="sync") as fresh:  # a new reader reads it
        assert [k for k, _ in fresh.scan()] == [b"new%03d" % i for i in range(20)]


def test_refresh_after_a_restore_over_the_store_is_an_error(tmp_path: Path) -> None:
    """``restore(..., overwrite=True)`` of an older backup while a reader is open (no
    writer: restore allows it).  Before, the reader's refresh() returned the version it
    already had and it went on reading the store that was swapped away."""
    path, backups = tmp_path / "db", str(tmp_path / "backups")
    _fill(path, b"a", 50, b"1")
    banyanstore.backup(str(path), backups)
    _fill(path, b"b", 50, b"2")
    with banyanstore.open(path, read_only=True, io_mode="sync") as r:
        assert r.get(b"b000") == b"2"
        banyanstore.restore(backups, str(path), overwrite=True)
        with pytest.raises(CorruptionError, match="replaced"):
            r.refresh()
        assert r.get(b"b000") == b"2"  # the last state stays readable


class WriteDuringFlush(HookedEnv):
    """A writer's env: when a flush syncs its new table (before the manifest edit naming
    it), ``action`` runs once -- on the flusher's thread."""

    action: Any = None

    def hook(self, op: str, paths: tuple[str, ...], nbytes: int = 0) -> None:
        if op == "sync" and paths[0].startswith("/db/tables/") and self.action is not None:
            action, self.action = self.action, None
            action()


def test_history_of_a_reader_lists_each_version_once() -> None:
    """The reader reads a write made after the writer's memtable switch, before that
    flush's edit: once the edit is there, its memtables hold copies of what the new
    table holds (they are kept for the later write).  history() listed those versions
    twice -- [(3, b'3'), (2, b'2'), (2, b'2'), (1, b'1'), (1, b'1')] -- in the store's and
    in a snapshot's; now once each, as the writer lists them."""
    mem = MemoryEnv()
    env = WriteDuringFlush(mem)
    with banyanstore.open("/db", env=env, wal_sync="never", compaction=False,
                          compaction_mode="thread") as w:
        w.put(b"k", b"1")
        w.put(b"k", b"2")
        with banyanstore.open("/db", env=mem, read_only=True) as r:
            def during_flush() -> None:
                w.put(b"k", b"3")
                r.refresh()
            env.action = during_flush
            w.flush()
            assert env.action is None  # the flush ran it
            assert r.refresh() == 3
            want = [(3, b"3"), (2, b"2"), (1, b"1")]
            assert list(w.history(b"k")) == want
            assert list(r.history(b"k")) == want
            with r.snapshot() as snap:
                assert list(snap.history(b"k")) == want
            assert [r.get(b"k", version=v) for v in (1, 2, 3)] == [b"1", b"2", b"3"]


def test_a_readers_stats_count_the_memtables_it_holds(tmp_path: Path) -> None:
    """A read-only store holds the writer's unflushed writes in memtables of its own
    (read from the WAL), and stats()["keyspaces"] showed them, but its
    stats()["memtable_bytes"] said 0 however much it held.  Now it is the sum of its
    keyspaces' memtable bytes, as on the writer -- the same figures as the writer's for
    the same writes -- and 0 again once the writer's flush is caught up with."""
    path = tmp_path / "db"
    with banyanstore.open(path, io_mode="sync", wal_sync="never", compaction=False) as w:
        idx = w.keyspace("idx")
        for i in range(200):
            w.put(b"k%03d" % i, b"v" * (i % 50))
            idx.put(b"i%03d" % i, b"x" * 10)
        w.delete_range(b"k050", b"k060")
        with banyanstore.open(path, read_only=True, io_mode="sync") as r:
            for _ in range(2):
                ws, rs = w.stats(), r.stats()
                per_ks = {n: (k["memtable_bytes"], k["memtable_entries"], k["immutable_memtables"])
                          for n, k in rs["keyspaces"].items()}
                assert per_ks == {n: (k["memtable_bytes"], k["memtable_entries"], k["immutable_memtables"])
                                  for n, k in ws["keyspaces"].items()}
                assert rs["memtable_bytes"] == sum(b for b, _, _ in per_ks.values())
                assert rs["memtable_bytes"] == ws["memtable_bytes"] > 0
                assert (rs["version"], rs["read_only"]) == (ws["version"], True)
                w.put(b"k999", b"later")  # seen at the refresh
                r.refresh()
            w.flush()
            r.refresh()
            rs = r.stats()
            assert rs["memtable_bytes"] == w.stats()["memtable_bytes"] == 0
            assert rs["follower"]["refreshes"] == 3 and rs["follower"]["pinned_tables"] == 2


def test_a_readers_memtables_are_charged_to_its_block_cache(tmp_path: Path) -> None:
    """With memtables_share_cache (the default) a store's memtables are charged to its
    block cache (README, options): a reader's were not -- a reader holding 1.8 MB of the
    writer's WAL tail kept a 2 MiB cache beside it (stats()["block_cache"]["limit"]
    2 MiB).  Now the limit gives up what its memtables hold, down to a quarter, and
    grows back once the writer's flush is caught up with; memtables_share_cache=False
    leaves it whole."""
    path = tmp_path / "db"
    cap = 2 << 20
    with banyanstore.open(path, io_mode="sync", wal_sync="never", compaction=False) as w:
        for i in range(4000):
            w.put(b"k%05d" % i, b"v" * (i % 300))
        with banyanstore.open(path, read_only=True, io_mode="sync", block_cache_size=cap) as r, \
                banyanstore.open(path, read_only=True, io_mode="sync", block_cache_size=cap,
                                 memtables_share_cache=False) as apart:
            held = r.stats()["memtable_bytes"]
            assert cap // 4 < cap - held < cap
            assert r.stats()["block_cache"]["limit"] == cap - held
            assert apart.stats()["block_cache"]["limit"] == cap
            for i in range(4000):
                w.put(b"j%05d" % i, b"v" * 300)
            r.refresh()
            assert r.stats()["block_cache"]["limit"] == cap // 4
            w.flush()
            r.refresh()
            assert r.stats()["memtable_bytes"] == 0 and r.stats()["block_cache"]["limit"] == cap


def test_a_reader_asked_for_a_keyspace_it_lacks_says_so(tmp_path: Path) -> None:
    """A reader's ``keyspace(name)`` for a name its writer has not created (yet), or has
    dropped, said only "store X was opened read-only" -- as if the call were a write. It
    is still a ReadOnlyError (a reader creates nothing) that names the keyspace, the ones
    there are, and refresh()."""
    path = tmp_path / "s"
    with banyanstore.open(path) as w, banyanstore.open(path, read_only=True) as r:
        w.keyspace("made-later").put(b"k", b"v")
        with pytest.raises(ReadOnlyError) as caught:
            r.keyspace("made-later")
        message = str(caught.value)
        assert "'made-later'" in message and "'default'" in message, message
        assert "refresh()" in message, message
        r.refresh()
        assert r.keyspace("made-later").get(b"k") == b"v"
        w.drop_keyspace("made-later")
        r.refresh()
        with pytest.raises(ReadOnlyError, match="no keyspace 'made-later'"):
            r.keyspace("made-later")
        with pytest.raises(ReadOnlyError, match="read-only"):  # an existing one, a new TTL
            r.keyspace("default", ttl=5)
