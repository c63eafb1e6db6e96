"""A Ctrl-C (KeyboardInterrupt) anywhere in a write, a memtable switch or a keyspace
change leaves the store whole: the interrupted call's outcome is unconfirmed, every
acknowledged write survives close and reopen (and a kill -9), a batch is visible whole
or not at all -- now, after later writes and after a reopen alike -- and later calls go
on as usual.

The interrupts are raised deterministically in the main thread, where a real Ctrl-C
surfaces: at one chosen point (a patched method), or -- the sweeps -- at the n-th point
of the named functions where CPython could run a signal handler, for every n in turn,
through a trace function.  The WAL's own append and rotation are left out of the sweeps:
an interrupt inside them makes the Log refuse appends and the store read-only until
reopened, as after a failed WAL write.
"""

from __future__ import annotations

import contextlib
import dis
import gc
import os
import shutil
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import pytest

import banyanstore
from banyanstore.errors import KeyspaceNotFoundError, ReadOnlyError, StorageIOError
from banyanstore.log.log import Log
from banyanstore.lsm import flush, tree
from banyanstore.lsm.store import Store

Targets = dict[str, "set[str] | None"]  # module file (lsm/...) -> function names (None: all)

WRITE_PATH: Targets = {"writer.py": None, "wal.py": None, "batch.py": None, "keyspace.py": None,
                       "tree.py": {"publish_version", "note_time"}}
SWITCH: Targets = {"writer.py": {"flush", "_memory_step", "_switch_memtables", "_set_mem_bytes",
                                 "_wait_for_merges"},
                   "tree.py": {"memtables_empty", "seal_memtables"},
                   "flush.py": {"submit", "unqueued", "_unqueued_locked", "_charge_locked",
                                "wait_for_room"}}


_RESUME = dis.opmap["RESUME"]
_CHECKED_AFTER = {dis.opmap[name] for name in ("CALL", "CALL_FUNCTION_EX", "JUMP_BACKWARD")}
_handlers: dict[CodeType, list[Any]] = {}


def _handler(code: CodeType, offset: int) -> int | None:
    """The exception handler covering bytecode ``offset`` of ``code`` (None: none)."""
    table = _handlers.get(code)
    if table is None:
        table = _handlers[code] = dis._parse_exception_table(code)  # type: ignore[attr-defined]
    return next((e.target for e in table if e.start <= offset < e.end), None)


class Interrupt:
    """``with Interrupt(targets, at):`` raises KeyboardInterrupt at the ``at``-th point
    (from 0) where CPython could run a signal handler in the ``targets`` functions of
    ``banyanstore/lsm`` the main thread runs: a function's start, and after a call or a
    backward jump -- where CPython 3.11 checks for pending signals.  The interrupt is
    raised before the next bytecode, so only where that one has the same exception
    handler as the call (the check is the call's: an interrupt between a ``with``
    block's last call and its exit is not one a Ctrl-C can make).  ``fired`` says
    whether it did (False: the call had fewer)."""

    def __init__(self, targets: Targets, at: int) -> None:
        self._targets = {os.sep + os.path.join("banyanstore", "lsm", f): names
                         for f, names in targets.items()}
        self._at, self._seen = at, 0
        self.fired = False
        self._before: Any = None
        self._last: dict[int, tuple[int, int]] = {}  # id(frame) -> its last (opcode, offset)

    def _wanted(self, frame: FrameType) -> bool:
        code = frame.f_code
        for suffix, names in self._targets.items():
            if code.co_filename.endswith(suffix):
                return names is None or code.co_name in names
        return False

    def _call(self, frame: FrameType, event: str, arg: object) -> Any:
        if self.fired or not self._wanted(frame):
            return None
        self._last.pop(id(frame), None)  # (the id of a frame gone before)
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        return self._opcode

    def _opcode(self, frame: FrameType, event: str, arg: object) -> Any:
        if event == "opcode" and not self.fired:
            code, offset = frame.f_code, frame.f_lasti
            op = code.co_code[offset]
            last_op, last_offset = self._last.get(id(frame), (None, 0))
            self._last[id(frame)] = op, offset
            if op == _RESUME or (last_op in _CHECKED_AFTER
                                 and _handler(code, last_offset) == _handler(code, offset)):
                if self._seen == self._at:
                    self.fired = True
                    raise KeyboardInterrupt  # (a raising trace function is unset: one per run)
                self._seen += 1
        return self._opcode

    def __enter__(self) -> Interrupt:
        self._before = sys.gettrace()
        sys.settrace(self._call)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.settrace(self._before)


def sweep(targets: Targets, step: Callable[[Interrupt], None], limit: int = 5000) -> int:
    """Run ``step`` (which enters its Interrupt around the call under test) with an
    interrupt at the 0th, 1st, 2nd... point of ``targets``, until one runs to its end
    uninterrupted; returns how many were interrupted."""
    for at in range(limit):
        hit = Interrupt(targets, at)
        step(hit)
        if not hit.fired:
            return at
    raise AssertionError("the interrupted code never ended")


def crash_copy(store: Store, dest: Path) -> Path:
    """What a kill -9 of the process would leave now (the WAL's mapped pages included)."""
    shutil.copytree(store.path, dest)
    return dest


def open_store(path: Path | str, **opts: Any) -> Store:
    return banyanstore.open(path, compaction=False, compaction_mode="thread", **opts)  # type: ignore[return-value]


# -- a write: whole or nothing ----------------------------------------------------------------

class Rounds:
    """The writes of a sweep (one round each) and what each left, to compare with the
    store after a reopen and after a kill -9."""

    def __init__(self) -> None:
        self.expected: dict[tuple[str, bytes], bytes | None] = {}
        self.interrupted = 0

    def check(self, store: Store) -> None:
        for (ks, key), value in self.expected.items():
            assert store.keyspace(ks).get(key) == value, (ks, key)


def _all_or_nothing(store: Store, before: int, applied: dict[tuple[str, bytes], bytes | None],
                    absent: dict[tuple[str, bytes], bytes | None]) -> bool:
    """Whether the write of version ``before + 1`` is visible whole (True) or not at all
    (False), at the published version; fails on anything else."""
    now = {k: store.keyspace(k[0]).get(k[1]) for k in applied}
    if store.version == before + 1:
        assert now == applied, "a write published in part"
        return True
    assert store.version == before, "the version moved without the write"
    assert now == absent, "part of an unpublished write is visible"
    return False


def _batch_round(store: Store, rounds: Rounds, n: int, hit: Interrupt, *, ranges: bool) -> None:
    p = b"r%05d/" % n
    store.put(p + b"z1", b"old")  # (a delete_range of the batch hides it)
    store.put(p + b"d", b"old")
    before = store.version
    b = store.batch()
    b.put(p + b"a", b"A")
    b.put(p + b"twice", b"first")
    b.put(p + b"c", b"C", keyspace="other")
    b.delete(p + b"d")
    b.put(p + b"twice", b"second")  # the same key twice: the last op wins
    if ranges:
        b.delete_range(p + b"z", p + b"zz")
    applied = {("default", p + b"a"): b"A", ("default", p + b"twice"): b"second",
               ("other", p + b"c"): b"C", ("default", p + b"d"): None,
               ("default", p + b"z1"): None if ranges else b"old"}
    absent = {**dict.fromkeys(applied), ("default", p + b"d"): b"old", ("default", p + b"z1"): b"old"}
    try:
        with hit:
            b.commit()
    except KeyboardInterrupt:
        assert hit.fired
        rounds.interrupted += 1
    whole = _all_or_nothing(store, before, applied, absent)
    assert hit.fired or whole
    store.put(p + b"next", b"N")  # takes the next version: must not publish part of it
    assert store.version == before + whole + 1
    for k in applied:
        assert store.keyspace(k[0]).get(k[1]) == (applied if whole else absent)[k]
    rounds.expected.update(applied if whole else absent)
    rounds.expected[("default", p + b"next")] = b"N"


def _reopen_both(tmp_path: Path, store: Store, rounds: Rounds) -> None:
    """A kill -9 now and a close now both reopen to what the store showed."""
    crashed = crash_copy(store, tmp_path / "crashed")
    store.close()
    for path in (store.path, crashed):
        with open_store(path) as again:
            rounds.check(again)


@pytest.mark.parametrize("ranges", [False, True], ids=["puts", "with-range"])
def test_a_ctrl_c_anywhere_in_a_batch_leaves_it_whole_or_absent(tmp_path: Path, ranges: bool) -> None:
    store = open_store(tmp_path / "db")
    store.keyspace("other")
    rounds = Rounds()
    counter = iter(range(10**6))
    n = sweep(WRITE_PATH, lambda hit: _batch_round(store, rounds, next(counter), hit, ranges=ranges))
    assert n > 20 and rounds.interrupted == n
    rounds.check(store)
    _reopen_both(tmp_path, store, rounds)


def test_a_ctrl_c_in_the_middle_of_a_batch_then_a_write_publishes_no_part(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reported case: the batch's third memtable add is interrupted, the next put
    took the batch's version and made part of it visible (exactly that part survived a
    flush, close and reopen; a kill -9 brought back the whole batch)."""
    store = open_store(tmp_path / "db")
    mem_type = type(store._ks.view.mem)
    real_add = mem_type.add
    adds = [0]

    def add(self: Any, key: bytes, version: int, value: bytes | None) -> int:
        adds[0] += 1
        if adds[0] == 3:
            raise KeyboardInterrupt
        return real_add(self, key, version, value)  # type: ignore[no-any-return]

    monkeypatch.setattr(mem_type, "add", add)
    keys = [b"b%03d" % i for i in range(10)]
    b = store.batch()
    for k in keys:
        b.put(k, b"x")
    with pytest.raises(KeyboardInterrupt):
        b.commit()
    monkeypatch.undo()
    store.put(b"other", b"1")
    seen = [store.get(k) for k in keys]
    assert seen in ([b"x"] * 10, [None] * 10)
    crashed = crash_copy(store, tmp_path / "crashed")
    store.flush()
    store.close()
    for path in (tmp_path / "db", crashed):
        with open_store(path) as again:
            assert [again.get(k) for k in keys] == seen
            assert again.get(b"other") == b"1"


def _one_round(store: Store, rounds: Rounds, n: int, hit: Interrupt, how: str) -> None:
    key = b"k%05d" % n
    store.put(key, b"old")
    before = store.version
    try:
        with hit:
            if how == "put":
                store.put(key, b"new", sync=False)  # sync given: the Python path (write_one)
            elif how == "one-call put":
                store.put(key, b"new")  # the compiled core's one call, where it is built
            elif how == "delete":
                store.delete(key, sync=False)
            else:
                store.delete_range(key, key + b"\0")
    except KeyboardInterrupt:
        assert hit.fired
        rounds.interrupted += 1
    new = b"new" if "put" in how else None
    whole = _all_or_nothing(store, before, {("default", key): new}, {("default", key): b"old"})
    store.put(b"next", b"%d" % n)
    assert store.version == before + 1 + whole
    assert store.get(key) == (new if whole else b"old")
    rounds.expected[("default", key)] = new if whole else b"old"
    rounds.expected[("default", b"next")] = b"%d" % n


@pytest.mark.parametrize("how", ["put", "one-call put", "delete", "delete_range"])
def test_a_ctrl_c_anywhere_in_a_single_write_leaves_it_whole_or_absent(tmp_path: Path, how: str) -> None:
    ticks = iter(range(10**9))
    # A clock one second further at each call: every write samples the time too.
    store = open_store(tmp_path / "db", clock=lambda: 1.9e9 + next(ticks))
    rounds = Rounds()
    counter = iter(range(10**6))
    n = sweep(WRITE_PATH, lambda hit: _one_round(store, rounds, next(counter), hit, how))
    assert n > 0 and rounds.interrupted == n
    _reopen_both(tmp_path, store, rounds)


def test_an_interrupted_write_that_cannot_be_completed_turns_the_store_read_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second Ctrl-C while the first one's write is completed: the store refuses
    writes (no later write may take the half-applied version), reads go on, and a
    reopen finds the batch whole."""
    store = open_store(tmp_path / "db")
    mem_type = type(store._ks.view.mem)
    real_add = mem_type.add
    adds = [0]

    def add(self: Any, key: bytes, version: int, value: bytes | None) -> int:
        adds[0] += 1
        if adds[0] in (2, 3):  # the batch's second add, then the completion's first
            raise KeyboardInterrupt
        return real_add(self, key, version, value)  # type: ignore[no-any-return]

    monkeypatch.setattr(mem_type, "add", add)
    v = store.put(b"before", b"1", sync=False)
    b = store.batch()
    for i in range(5):
        b.put(b"b%d" % i, b"x")
    with pytest.raises(KeyboardInterrupt):
        b.commit()
    monkeypatch.undo()
    assert store.version == v and [store.get(b"b%d" % i) for i in range(5)] == [None] * 5
    with pytest.raises(ReadOnlyError, match="interrupted write.*reopen"):
        store.put(b"after", b"1")
    store.close()
    with open_store(tmp_path / "db") as again:
        assert [again.get(b"b%d" % i) for i in range(5)] == [b"x"] * 5
        assert again.version == v + 1
        again.put(b"after", b"1")


# -- a memtable switch: nothing stranded --------------------------------------------------------

def test_a_ctrl_c_between_sealing_and_queueing_loses_no_acknowledged_put(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reported case: interrupted before Flusher.submit, the switch left its sealed
    memtable unqueued; the next switch's flush recorded a flushed_version covering it and
    cut the WAL, and a reopen lost the writes it held."""
    real_submit = flush.Flusher.submit
    armed = [False]

    def submit(self: flush.Flusher, *args: Any, **kwargs: Any) -> None:
        if armed[0]:
            armed[0] = False
            raise KeyboardInterrupt
        real_submit(self, *args, **kwargs)

    monkeypatch.setattr(flush.Flusher, "submit", submit)
    store = open_store(tmp_path / "db", memtable_size=64 * 1024)
    acked = []
    for i in range(800):
        k = b"k%06d" % i
        armed[0] = armed[0] or i == 200
        try:
            store.put(k, b"v" * 1000)
        except KeyboardInterrupt:
            continue
        acked.append(k)
    assert len(acked) == 799
    assert all(store.get(k) == b"v" * 1000 for k in acked)
    store.close()
    with open_store(tmp_path / "db") as again:
        assert [k for k in acked if again.get(k) is None] == []


def test_flush_after_an_interrupted_switch_flushes_what_it_sealed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_submit = flush.Flusher.submit
    armed = [True]

    def submit(self: flush.Flusher, *args: Any, **kwargs: Any) -> None:
        if armed[0]:
            armed[0] = False
            raise KeyboardInterrupt
        real_submit(self, *args, **kwargs)

    monkeypatch.setattr(flush.Flusher, "submit", submit)
    store = open_store(tmp_path / "db")
    other = store.keyspace("other")
    store.put(b"a", b"1")
    other.put(b"b", b"2")
    with pytest.raises(KeyboardInterrupt):
        store.flush()
    store.flush()  # the active memtables are empty: it queues the sealed ones all the same
    assert [ks.view.imms for ks in store._tree.keyspaces()] == [(), ()]
    assert store.stats()["flush"]["flushes"] == 1
    store.close()
    with open_store(tmp_path / "db") as again:
        assert again.get(b"a") == b"1" and again.keyspace("other").get(b"b") == b"2"


def _switch_round(store: Store, acked: dict[tuple[str, bytes], bytes], n: int, hit: Interrupt,
                  how: str) -> None:
    other = store.keyspace("other")
    # Fresh memtables, filled (the first put switches the ones an interrupted switch
    # left full, uninterrupted -- as the next write after a Ctrl-C would).
    i = 0
    while i == 0 or store._writer.mem_bytes < store.options.memtable_size // (1 if how == "put" else 4):
        for ks in (store, other):
            key = b"r%04d/%04d" % (n, i)
            ks.put(key, b"v" * 700)
            acked[(ks.name, key)] = b"v" * 700
        i += 1
    try:
        with hit:
            if how == "put":  # the memtables are full: this put switches them first
                store.put(b"r%04d/last" % n, b"L")
            else:
                store.flush()
        if how == "put":
            acked[("default", b"r%04d/last" % n)] = b"L"
    except KeyboardInterrupt:
        assert hit.fired
    for (ks_name, key), value in acked.items():
        if key.startswith(b"r%04d/" % n):
            assert store.keyspace(ks_name).get(key) == value


@pytest.mark.parametrize("how", ["put", "flush"])
def test_a_ctrl_c_anywhere_in_a_switch_loses_no_acknowledged_write(tmp_path: Path, how: str) -> None:
    store = open_store(tmp_path / "db", memtable_size=64 * 1024)
    store.keyspace("other")
    acked: dict[tuple[str, bytes], bytes] = {}
    counter = iter(range(10**6))
    n = sweep(SWITCH, lambda hit: _switch_round(store, acked, next(counter), hit, how))
    assert n > 30
    store.flush()
    assert all(ks.view.imms == () for ks in store._tree.keyspaces())
    rounds = Rounds()
    rounds.expected.update(acked)
    rounds.check(store)
    _reopen_both(tmp_path, store, rounds)


# -- keyspaces ---------------------------------------------------------------------------------

def _interrupt_after(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make the next call of Tree.``name`` raise KeyboardInterrupt once it has run."""
    real = getattr(tree.Tree, name)
    armed = [True]

    def wrapper(self: tree.Tree, *args: Any, **kwargs: Any) -> Any:
        result = real(self, *args, **kwargs)
        if armed[0]:
            armed[0] = False
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(tree.Tree, name, wrapper)


def test_a_keyspace_created_by_an_interrupted_call_can_be_used(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(tmp_path / "db")
    _interrupt_after(monkeypatch, "_append")  # the add_keyspace edit is durable
    with pytest.raises(KeyboardInterrupt):
        store.keyspace("index", ttl=60)
    index = store.keyspace("index")  # before the fix: a second add_keyspace, refused
    index.put(b"k", b"v")
    assert store.keyspace_info()["index"] == {"id": 1, "ttl": 60}
    store.close()
    with open_store(tmp_path / "db") as again:
        assert again.keyspace("index").get(b"k") == b"v"
        assert again.keyspace_info()["index"] == {"id": 1, "ttl": 60}


def test_a_keyspace_drop_interrupted_after_its_edit_is_complete(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flush, "BACKOFF_START", 0.001)
    monkeypatch.setattr(flush, "BACKOFF_MAX", 0.002)
    store = open_store(tmp_path / "db")
    victim = store.keyspace("victim")
    victim.put(b"k", b"v")
    store.put(b"keep", b"1")
    _interrupt_after(monkeypatch, "_log_edit")  # the drop_keyspace edit is durable
    with pytest.raises(KeyboardInterrupt):
        store.drop_keyspace("victim")
    assert store.keyspaces() == ["default"]
    with pytest.raises(KeyspaceNotFoundError):
        victim.put(b"k2", b"v")  # before the fix: acknowledged, and gone at the next open
    store.flush()  # before the fix: its add_tables named the dropped keyspace, and failed
    store.close()
    with open_store(tmp_path / "db") as again:
        assert again.keyspaces() == ["default"] and again.get(b"keep") == b"1"


# -- the Log's own append and rotation -----------------------------------------------------------

def test_a_ctrl_c_inside_the_wal_append_turns_the_store_read_only_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Log refuses appends after an interrupt inside its append (what reached the
    segment is unknown): the store is read-only from then on, as after a failed WAL
    write -- close() leaves the memtables to the WAL's replay instead of failing to
    switch them (it raised the Log's error), and a reopen has everything acknowledged
    and the interrupted batch whole or absent."""
    store = open_store(tmp_path / "db")
    acked = {b"a%d" % i: b"%d" % i for i in range(50)}
    for k, v in acked.items():
        store.put(k, v)
    segment = store._wal._writer  # (Python framing's add, or the compiled core's)
    real_add = segment.add

    def add(seq: int, data: bytes) -> bool:
        real_add(seq, data)
        raise KeyboardInterrupt  # the record is stored, the Log has not counted it

    monkeypatch.setattr(segment, "add", add)
    b = store.batch()
    for i in range(5):
        b.put(b"b%d" % i, b"x")
    with pytest.raises(KeyboardInterrupt):
        b.commit()
    monkeypatch.undo()
    assert [store.get(b"b%d" % i) for i in range(5)] == [None] * 5
    store.close()  # before: the flush's rotation raised the Log's error
    with open_store(tmp_path / "db") as again:
        assert all(again.get(k) == v for k, v in acked.items())
        assert [again.get(b"b%d" % i) for i in range(5)] in ([None] * 5, [b"x"] * 5)


def _store_interrupted_in_a_wal_rotation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A store holding a=1 whose flush a Ctrl-C ended just after the WAL rotated."""
    store = open_store(tmp_path / "db")
    store.put(b"a", b"1")
    real = Log._rotate_locked

    def rotate(self: Log) -> None:
        real(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(Log, "_rotate_locked", rotate)
    with pytest.raises(KeyboardInterrupt):
        store.flush()
    monkeypatch.undo()
    return store


def test_a_ctrl_c_inside_the_wal_rotation_turns_the_store_read_only_at_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = _store_interrupted_in_a_wal_rotation(tmp_path, monkeypatch)
    with pytest.raises(ReadOnlyError, match="failed WAL write.*reopen"):
        store.put(b"b", b"2")  # before: the Log's StorageIOError first, ReadOnlyError after
    store.close()
    with open_store(tmp_path / "db") as again:
        assert again.get(b"a") == b"1" and again.get(b"b") is None
        again.put(b"b", b"2")


def test_the_log_says_why_it_refuses_appends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = banyanstore.open_log(tmp_path / "log")
    assert log.append(b"a") == 1 and log.failure is None
    segment = log._writer
    real_add = segment.add  # type: ignore[union-attr]

    def add(seq: int, data: bytes) -> bool:
        real_add(seq, data)
        raise KeyboardInterrupt

    monkeypatch.setattr(segment, "add", add)
    with pytest.raises(KeyboardInterrupt):
        log.append(b"b")
    monkeypatch.undo()
    failure = log.failure
    assert isinstance(failure, StorageIOError) and "reopen" in str(failure)
    with pytest.raises(StorageIOError):
        log.append(b"c")
    log.close()
    assert log.failure is None
    with banyanstore.open_log(tmp_path / "log") as again:
        assert again.failure is None and again.get(1) == b"a"


def test_a_store_refusing_writes_after_a_ctrl_c_in_the_wal_says_it_was_interrupted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: every later write raised ReadOnlyError "... (the log is unusable after an
    earlier IO error (); close and reopen it)" -- an IO error that never happened, with
    an empty explanation (a KeyboardInterrupt's str() is empty)."""
    store = _store_interrupted_in_a_wal_rotation(tmp_path, monkeypatch)
    with pytest.raises(ReadOnlyError) as refused:
        store.put(b"b", b"2")
    message = str(refused.value)
    assert "IO error" not in message and "()" not in message, message
    assert "interrupted" in message and "KeyboardInterrupt" in message, message
    assert isinstance(store.stats()["write_error"], str)
    assert "KeyboardInterrupt" in store.stats()["write_error"]
    store.close()


# -- close(): a second call finishes what an interrupted one began -------------------------------

def test_close_after_a_ctrl_c_anywhere_in_close_releases_the_store(tmp_path: Path) -> None:
    """An interrupt at any point of close() -- also after it marked the store closed --
    leaves a store whose next close() completes: the lock is released (the store opens
    again in this process) and every acknowledged write is there."""
    rounds = [0]

    def step(hit: Interrupt) -> None:
        path = tmp_path / f"s{rounds[0]}"
        rounds[0] += 1
        store = open_store(path)
        store.put(b"k", b"v")
        try:
            with hit:
                store.close()
        except KeyboardInterrupt:
            pass
        store.close()
        assert store.closed
        with open_store(path) as again:
            assert again.get(b"k") == b"v"

    assert sweep({"store.py": {"close", "_stop_writes", "_release"},
                  "tree.py": {"close", "close_tables"}}, step) > 20


# -- open(): an interrupted open leaves nothing of the store held ----------------------------

def _held_files(path: Path) -> list[str]:
    """The files of the store at ``path`` this process holds a descriptor on (after a
    collection: what no object can still close)."""
    gc.collect()
    held = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(path)):
                held.append(os.path.basename(target))
    return held


def test_a_ctrl_c_anywhere_in_opening_the_manifest_and_the_lock_leaves_the_store_openable(
        tmp_path: Path) -> None:
    """A Ctrl-C between ``env.lock()`` returning and the store keeping the lock left it
    held by an object nothing could release: every later open in the process raised
    StoreLockedError.  One between a new manifest's open and the ``try`` that closes it
    kept its descriptor until exit.  A dropped lock or file now closes its descriptor."""
    path = _flushed_with_a_wal_tail(tmp_path / "db")

    def step(hit: Interrupt) -> None:
        _open_and_close(path, hit)
        assert not [f for f in _held_files(path) if f == "LOCK" or f.startswith("MANIFEST")]
        with open_store(path) as again:  # not StoreLockedError
            assert again.get(b"k") == b"v" and again.get(b"k2") == b"v2"

    assert sweep({"store.py": {"open", "__init__", "_load", "_open_files", "_check_existence"},
                  "manifest.py": None}, step) > 20


def _flushed_with_a_wal_tail(path: Path) -> Path:
    """A store at ``path`` holding k (in a table) and k2 (in the WAL)."""
    with open_store(path) as store:
        store.put(b"k", b"v")
        store.flush()
        store.put(b"k2", b"v2")
    return path


def _open_and_close(path: Path, hit: Interrupt) -> None:
    """Open the store at ``path`` under ``hit`` (a Ctrl-C somewhere), and close it if the
    open returned."""
    try:
        with hit:
            store = open_store(path)
        store.close()
    except KeyboardInterrupt:
        pass


def test_a_ctrl_c_anywhere_in_opening_the_wal_leaves_it_closed(tmp_path: Path) -> None:
    """A Ctrl-C just after the WAL's open returned and before the store kept it (in
    ``open_wal`` or the store's assignment of its result) dropped the open Log: its sync
    thread ran and its segment stayed open (two descriptors) until the exit hook closed it
    at exit.  The store keeps
    the Log before its open returns, so either the Log's open or the store's undoes it."""
    path = _flushed_with_a_wal_tail(tmp_path / "db")

    def log_threads() -> list[str]:
        return [t.name for t in threading.enumerate() if t.name.startswith("banyanstore-log")]

    before = log_threads()

    def step(hit: Interrupt) -> None:
        _open_and_close(path, hit)
        assert not [f for f in _held_files(path) if f.endswith(".log")], "a WAL segment is still open"
        assert log_threads() == before, "a dropped WAL's sync thread still runs"
        with open_store(path) as again:
            assert again.get(b"k") == b"v" and again.get(b"k2") == b"v2"

    assert sweep({"store.py": {"_open_files", "_keep_wal"}, "recovery.py": {"open_wal", "_check_wal_start"}},
                 step) > 5


class _InterruptAtReturn:
    """``with _InterruptAtReturn(code):`` raises KeyboardInterrupt as the first call of
    ``code`` returns -- after its last bytecode, outside its own ``try``: where a Ctrl-C
    that arrives after the function's last check for signals is raised (at the check that
    follows the call, in the caller)."""

    def __init__(self, code: CodeType) -> None:
        self._code = code
        self.fired = False
        self._before: Any = None

    def _call(self, frame: FrameType, event: str, arg: object) -> Any:
        return self._return if frame.f_code is self._code and not self.fired else None

    def _return(self, frame: FrameType, event: str, arg: object) -> Any:
        if event == "return" and not self.fired:
            self.fired = True
            raise KeyboardInterrupt
        return self._return

    def __enter__(self) -> _InterruptAtReturn:
        self._before = sys.gettrace()  # coverage's tracer, when measured: put back after
        sys.settrace(self._call)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.settrace(self._before)


@pytest.mark.parametrize(("where", "read_only"), [("Store.__init__", False), ("Store.__init__", True),
                                                  ("FollowerStore.__init__", True)],
                         ids=["writer", "reader", "follower"])
def test_a_ctrl_c_as_the_store_finishes_opening_leaves_nothing_open(tmp_path: Path, where: str,
                                                                   read_only: bool) -> None:
    """A Ctrl-C that lands once the store is open and before ``open()`` returns -- as the
    constructor returns, or in the reader's own constructor after the store's (where it
    starts its follow thread) -- left the store open with nobody to close it: a writer's
    threads ran and its LOCK stayed held until exit (a reopen in the process raised
    StoreLockedError), a reader's follow thread ran for good; and the open closed the
    store's env under it.  Now the open closes the store before the interrupt leaves it."""
    from banyanstore.lsm.follower import FollowerStore
    path = _flushed_with_a_wal_tail(tmp_path / "db")
    before = sorted(t.name for t in threading.enumerate())
    code = (Store if where == "Store.__init__" else FollowerStore).__init__.__code__
    with pytest.raises(KeyboardInterrupt), _InterruptAtReturn(code) as hit:
        open_store(path, read_only=read_only, follow=read_only, follow_interval_ms=1)
    assert hit.fired
    assert sorted(t.name for t in threading.enumerate()) == before, "threads of the store left running"
    assert not _held_files(path), "files of the store left open"
    with open_store(path) as again:  # not StoreLockedError
        assert again.get(b"k") == b"v" and again.get(b"k2") == b"v2"


# -- snapshots ---------------------------------------------------------------------------------

SNAPSHOT: Targets = {"pins.py": None, "snapshot.py": None, "tree.py": {"pin", "unpin"}}


def _finishes(call: Callable[[], object]) -> bool:
    """Whether ``call`` returns on a daemon thread (False: it hangs -- the wait is only a
    guard that lets the test fail rather than hang for ever)."""
    done = threading.Event()

    def run() -> None:
        call()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    return done.wait(60)


def test_a_ctrl_c_anywhere_in_taking_or_closing_a_snapshot_leaves_the_store_working(
        tmp_path: Path) -> None:
    """A snapshot's close released its pin under the pins' lock, taken by a non-blocking
    acquire before a ``try``: a Ctrl-C landing just after that acquire left the lock held
    for good, and the next snapshot, merge, ``oldest_version`` or ``stats()`` waited for
    ever (found by this sweep: point 11 of 16).  Now a release only queues its version."""
    store = open_store(tmp_path / "s")
    store.put(b"k", b"v")
    store.flush()
    store.put(b"k", b"w")
    store.flush()

    points = []

    def step(hit: Interrupt) -> None:
        points.append(hit)
        try:
            with hit, store.snapshot() as snap:
                assert snap.get(b"k") == b"w"
        except KeyboardInterrupt:
            assert hit.fired
        gc.collect()  # (a snapshot the interrupt left unclosed: closed by the collector)

        def later() -> None:
            with store.snapshot() as again:
                assert again.get(b"k") == b"w"
            store.stats()
            store.compact()

        assert _finishes(later), f"the store hung after an interrupt at point {len(points) - 1}"

    assert sweep(SNAPSHOT, step) > 5
    assert store.oldest_version == store.history_floor  # no pin left behind
    store.close()


# -- a checkpoint: the copy, or nothing --------------------------------------------------------

CHECKPOINT: Targets = {"checkpoint.py": None, "store.py": {"checkpoint"}}


def test_a_ctrl_c_anywhere_in_a_checkpoint_leaves_nothing_or_the_whole_copy(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Interrupted before its copy is complete, a checkpoint removes all it wrote (the
    parent it created too), nothing fails to go, and a retry to the same destination
    writes the copy; interrupted after (on its way out), it leaves the whole copy."""
    store = open_store(tmp_path / "s")
    for table in range(4):
        store.put(b"k%d" % table, b"v%d" % table)
        store.flush()
    dest = tmp_path / "parent" / "cp"
    outcomes = {"nothing": 0, "complete": 0}

    def step(hit: Interrupt) -> None:
        with contextlib.suppress(KeyboardInterrupt), hit:
            store.checkpoint(dest)
        if not hit.fired:
            return
        complete = dest.exists() and not (dest / "CHECKPOINT-INCOMPLETE").exists()
        outcomes["complete" if complete else "nothing"] += 1
        if not complete:
            assert not (tmp_path / "parent").exists(), sorted(map(str, dest.rglob("*")))
            store.checkpoint(dest)  # the retry
        with banyanstore.open(dest, read_only=True) as copy:
            assert [copy.get(b"k%d" % t) for t in range(4)] == [b"v%d" % t for t in range(4)]
        shutil.rmtree(tmp_path / "parent")

    with caplog.at_level("WARNING"):
        assert sweep(CHECKPOINT, step) > 50
    assert not [r.getMessage() for r in caplog.records if "could not remove" in r.getMessage()]
    assert outcomes["nothing"] > 0
    store.close()
