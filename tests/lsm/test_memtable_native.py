"""The compiled memtable (native/memtable.c) against the pure-Python one, result for result.

Both run in this process whatever BANYANSTORE_PURE_PYTHON says.  Random writes at random
versions (repeated keys, repeated versions, tombstones, versions out of order) are fed to
both; every read -- get, get_entry, history, sorted keys, visible entries over slices,
approximate_range, length and entry counts -- and the flush output must agree, and a
table built from either flush is the same file, byte for byte (in this process and
through the worker's entry point).  The flush buffer's decoders (C and Python) must agree
on damaged buffers too: ValueError, never a crash or an overread.
"""

from __future__ import annotations

import gc
import random
import sys
import threading
from bisect import bisect_left

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from banyanstore import accel
from banyanstore.io.posix import PosixEnv
from banyanstore.lsm import flushbuf
from banyanstore.lsm import memtable as memtable_mod
from banyanstore.lsm.memtable import MISSING, NativeMemtable, PyMemtable
from banyanstore.lsm.workers import WorkerPools, build_table_in_worker
from banyanstore.options import Options
from banyanstore.sstable.builder import TableBuilder

native = accel.load_native()
pytestmark = pytest.mark.skipif(native is None, reason="the compiled core is not built")

keys = st.binary(max_size=5)
values = st.one_of(st.none(), st.binary(max_size=12))
writes = st.lists(st.tuples(keys, st.integers(0, 30), values), max_size=120)
probes = st.lists(st.tuples(keys, st.integers(-2, 33)), max_size=30)


def fill(writes_):
    py, nat = PyMemtable(), NativeMemtable()
    for key, version, value in writes_:
        charged = nat.add(key, version, value)
        py.add(key, version, value)
        assert charged > 0
    return py, nat


def pure_columns(mem: PyMemtable):
    saved = memtable_mod._native
    try:
        memtable_mod._native = None  # the pure-Python column pass, not the C helper
        return mem.flush_columns()
    finally:
        memtable_mod._native = saved


@settings(max_examples=300, deadline=None)
@given(writes, probes, st.lists(st.tuples(st.integers(0, 130), st.integers(0, 130)), max_size=8))
def test_reads_match_python(writes_, probes_, slices):
    py, nat = fill(writes_)
    assert len(nat) == len(py) == nat.entries == py.entries
    assert nat.key_count == len(py.sorted_keys())
    for key, version in probes_:
        got = nat.get(key, version)
        assert got == py.get(key, version) and (got is MISSING) == (py.get(key, version) is MISSING)
        assert nat.get_entry(key, version) == py.get_entry(key, version)
        assert nat.history(key, version) == py.history(key, version)
    sk, pk = nat.sorted_keys(), py.sorted_keys()
    assert list(sk) == pk and sk == pk and len(sk) == len(pk)
    for key, _ in probes_:
        assert sk.bisect_left(key) == bisect_left(sk, key) == bisect_left(pk, key)
    for lo, hi in slices:
        for version in (0, 5, 17, 2**64 - 1):
            assert nat.visible_entries(sk[lo:hi], version) == py.visible_entries(pk[lo:hi], version)
            assert nat.visible_entries(list(sk[lo:hi]), version) == py.visible_entries(pk[lo:hi], version)
        assert sk[lo:hi:2] == pk[lo:hi:2]
        start, end = (pk[lo] if lo < len(pk) else None), (pk[hi] if hi < len(pk) else None)
        assert nat.approximate_range(start, end) == py.approximate_range(start, end)
    if pk:
        assert sk[-1] == pk[-1] and sk[0] == pk[0]


@settings(max_examples=200, deadline=None)
@given(writes, st.lists(st.tuples(keys, keys), max_size=4), st.lists(st.one_of(st.none(), keys), max_size=6))
def test_approximate_range_is_the_same_figure_in_both(writes_, ranges, bounds):
    """approximate_range answers the same ``(keys, bytes)`` in both implementations
    (their memory charges differ): the range's share, by keys, of every entry's key and
    value plus SIZE_OVERHEAD (range tombstones: their bounds plus SIZE_OVERHEAD)."""
    py, nat = fill(writes_)
    version = 31
    for a, b in ranges:
        if a < b:
            py.add_range(a, b, version)
            nat.add_range(a, b, version)
            version += 1
    written = sum(len(k) + len(v or b"") for k, _, v in writes_) + sum(
        len(a) + len(b) for a, b in ranges if a < b)
    assert nat.data_bytes == py.data_bytes == written
    total = written + memtable_mod.SIZE_OVERHEAD * py.entries
    assert nat.approximate_range(None, None) == py.approximate_range(None, None) == (
        (len(py.sorted_keys()), total) if py.sorted_keys() else (0, 0))
    for start in bounds:
        for end in bounds:
            got = py.approximate_range(start, end)
            assert nat.approximate_range(start, end) == got
            n = sum(1 for k in py.sorted_keys()
                    if (start is None or k >= start) and (end is None or k < end))
            assert got == (n, total * n // len(py.sorted_keys()) if n else 0)


@settings(max_examples=200, deadline=None)
@given(writes, st.integers(0, 200))
def test_flush_output_matches_python(writes_, piece_bytes):
    py, nat = fill(writes_)
    want = pure_columns(py)
    entries = nat.flush_entries()
    assert isinstance(entries, flushbuf.Pieces) and nat.frozen
    assert flushbuf.is_empty(entries) == (not want[0]) and entries.count == len(want[0])
    buf = entries.join()
    assert native.decode_flush_buffer(buf) == flushbuf.decode(buf) == want
    assert flushbuf.encode(want) == buf == b"".join(entries)
    pieces, start = [], 0
    while start is not None:  # any piece size: whole keys, at least one per piece
        piece, start = nat.flush_piece(start, piece_bytes)
        pieces.append(piece)
    assert b"".join(pieces) == buf
    assert nat.flush_columns() == want
    with pytest.raises(RuntimeError, match="frozen"):
        nat.add(b"k", 99, b"v")
    assert nat.get(b"k", 99) == py.get(b"k", 99)  # reads go on
    with pytest.raises(ValueError, match="start"):
        nat.flush_piece(len(nat.sorted_keys()) + 1, 10)


@settings(max_examples=300, deadline=None)
@given(writes, st.data())
def test_damaged_flush_buffers_raise_in_both_decoders(writes_, data):
    """Truncated, extended or flipped buffers: both decoders give the same answer, or both
    raise ValueError."""
    _, nat = fill(writes_)
    buf = bytearray(nat.flush_buffer())
    how = data.draw(st.sampled_from(["cut", "extend", "flip"]))
    if how == "cut":
        del buf[data.draw(st.integers(0, len(buf) - 1)):]
    elif how == "extend":
        buf += data.draw(st.binary(min_size=1, max_size=20))
    else:
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] ^= data.draw(st.integers(1, 255))
    results = []
    for decode in (native.decode_flush_buffer, flushbuf.decode):
        try:
            results.append(decode(bytes(buf)))
        except ValueError as exc:
            assert "flush buffer" in str(exc)
            results.append("ValueError")
    assert results[0] == results[1]


def ordered_writes(rng: random.Random, n: int):
    """Writes a store could make: versions increasing, a key twice in one batch now and then."""
    out, version = [], 0
    for _ in range(n):
        version += rng.choice((0, 1, 1, 2)) if out else 1
        key = b"key%04d" % rng.randrange(n // 3 + 1)
        out.append((key, version, None if rng.random() < 0.1 else rng.randbytes(rng.randrange(40))))
    return out


@pytest.mark.parametrize("seed", [1, 2])
def test_tables_built_from_both_flushes_are_identical(tmp_path, seed):
    """The same table, byte for byte, from the Python columns and from the C buffer --
    in this process and through the worker's entry point (given the buffer)."""
    py, nat = fill(ordered_writes(random.Random(seed), 30000))
    opts = Options(block_size=1024)
    env = PosixEnv()
    paths = [str(tmp_path / n) for n in ("py.sst", "native.sst", "worker.sst", "streamed.sst")]
    for path, cols in ((paths[0], pure_columns(py)), (paths[1], flushbuf.columns(nat.flush_entries()))):
        builder = TableBuilder(env, path, opts)
        builder.add_sorted_columns(*cols)
        builder.finish()
    build_table_in_worker(paths[2], opts, nat.flush_entries())
    pools = WorkerPools()
    try:  # streamed to a worker process piece by piece, as a flush in process mode does
        pools.submit_streamed("flush", build_table_in_worker, (paths[3], opts, None), 2,
                              nat.flush_entries())
    finally:
        pools.shutdown()
    blobs = [open(p, "rb").read() for p in paths]
    assert blobs[0] == blobs[1] == blobs[2] == blobs[3] and len(blobs[0]) > 10_000
    assert len(list(nat.flush_entries())) > 1  # the stream had several pieces


long_keys = st.tuples(st.binary(max_size=20), st.lists(st.binary(min_size=0, max_size=14).map(
    lambda b: bytes(c & 3 for c in b)), max_size=150))


@settings(max_examples=300, deadline=None)
@given(long_keys, st.integers(0, 2))
def test_sorted_keys_with_long_shared_prefixes(keys_, rounds):
    """Keys sharing a long prefix and differing only past 8 more bytes, keys that are a
    prefix of others, zero bytes against a key's end: sorted as bytes compare (the radix
    sort's prefixes tie there and the whole keys decide), also when sorted in rounds
    (later keys sorted alone and merged in)."""
    common, tails = keys_
    nat = NativeMemtable()
    want = set()
    for i, tail in enumerate(tails):
        key = common + tail
        nat.add(key, i + 1, b"v")
        want.add(key)
        if rounds and i % (len(tails) // (rounds + 1) + 1) == 0:
            nat.sorted_keys()
    assert list(nat.sorted_keys()) == sorted(want)


class FrameReader:
    """The reading end of a pipe, drained by a thread (so large writes do not block)."""

    def __init__(self) -> None:
        import os
        self.rfd, self.wfd = os.pipe()
        self.data = bytearray()
        self._thread = threading.Thread(target=self._drain)
        self._thread.start()

    def _drain(self) -> None:
        import os
        while chunk := os.read(self.rfd, 1 << 16):
            self.data += chunk

    def close(self) -> bytes:
        import os
        os.close(self.wfd)
        self._thread.join()
        os.close(self.rfd)
        return bytes(self.data)


@settings(max_examples=100, deadline=None)
@given(writes, st.integers(1, 200))
def test_flush_to_fd_writes_the_pieces_as_frames(writes_, piece_bytes):
    """flush_to_fd writes the frames of flush_piece's pieces, the end frame last; the
    frames read back are the flush buffer, and Pieces.send gives the same bytes."""
    import io

    _, nat = fill(writes_)
    reader = FrameReader()
    nat.flush_to_fd(reader.wfd, piece_bytes)
    stream = reader.close()
    assert nat.frozen
    pieces, start = [], 0
    while start is not None:
        piece, start = nat.flush_piece(start, piece_bytes)
        pieces.append(piece)
    expected = io.BytesIO()
    flushbuf.send_frames(expected, pieces)
    assert stream == expected.getvalue()
    assert b"".join(flushbuf.read_frames(io.BytesIO(stream))) == nat.flush_buffer()


def test_flush_to_fd_errors():
    """A closed pipe is an OSError (EPIPE), a bad fd or piece size a clear error; the
    memtable stays readable."""
    import errno
    import os

    nat = NativeMemtable()
    for i in range(2000):
        nat.add(b"key%05d" % i, i + 1, b"x" * 50)
    rfd, wfd = os.pipe()
    os.close(rfd)
    try:
        with pytest.raises(OSError) as info:
            nat.flush_to_fd(wfd, 4096)
        assert info.value.errno == errno.EPIPE
    finally:
        os.close(wfd)
    with pytest.raises(ValueError, match="piece_bytes"):
        nat.flush_to_fd(1, 0)
    with pytest.raises((TypeError, ValueError)):
        nat.flush_to_fd(-1, 10)
    assert nat.get(b"key00007", 100) == b"x" * 50


def test_frames_that_do_not_add_up_are_refused():
    import io

    good = io.BytesIO()
    flushbuf.send_frames(good, [b"abc", b"", b"de"])
    assert flushbuf.read_frames(io.BytesIO(good.getvalue())) == [b"abc", b"de"]
    for cut in (0, 4, 8, 10, len(good.getvalue()) - 1):
        with pytest.raises(EOFError):
            flushbuf.read_frames(io.BytesIO(good.getvalue()[:cut]))
    with pytest.raises(ValueError, match="frame"):
        flushbuf.read_frames(io.BytesIO(flushbuf.FRAME.pack(1 << 62)))


def test_a_piece_that_cannot_be_made_fails_the_call_and_the_worker_goes():
    """An error while the pieces stream (the worker waits mid-request) is raised to the
    flush, the worker is closed, and the next call gets a fresh one."""
    def pieces():
        yield flushbuf.encode(([b"a"], [1], [b"x"]))[:20]
        raise MemoryError("no room for the next piece")

    pools = WorkerPools()
    try:
        with pytest.raises(MemoryError, match="next piece"):
            pools.submit_streamed("flush", len, (None,), 0, pieces())
        assert pools.submit_streamed("flush", len, (None,), 0, [b"ab", b"c"]) == 3
        assert pools.submit("flush", len, b"abcd") == 4
    finally:
        pools.shutdown()


def test_a_sorted_view_survives_later_writes():
    """A scan holds a view of the keys as of one moment: later writes (new keys, a hash
    table that grows, a re-sort) neither change nor invalidate it."""
    nat = NativeMemtable()
    for i in range(0, 2000, 2):
        nat.add(b"%05d" % i, i + 1, b"v")
    view = nat.sorted_keys()
    before = list(view)
    for i in range(1, 20000, 2):
        nat.add(b"%05d" % i, 30000 + i, b"w")
    assert list(view) == before
    assert nat.visible_entries(view[:3], 2**64 - 1) == [(b"00000", 1, b"v"), (b"00002", 3, b"v"),
                                                         (b"00004", 5, b"v")]
    assert len(nat.sorted_keys()) == 1000 + 10000


def test_readers_beside_a_writer_see_consistent_entries():
    """Readers (scans of sorted views, point reads) in threads while one thread writes:
    every entry a reader sees is one the writer wrote, keys stay sorted."""
    nat = NativeMemtable()
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader():
        try:
            while not stop.is_set():
                view = nat.sorted_keys()
                got = [k for k, _, _ in nat.visible_entries(view, 2**64 - 1)]
                assert got == sorted(got)
                for k, v, x in nat.visible_entries(view[:50], 2**64 - 1):
                    assert x == k * 2 and nat.get_entry(k, v) == (v, x)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    rng = random.Random(5)
    for version in range(1, 20001):
        k = b"%06d" % rng.randrange(50000)
        nat.add(k, version, k * 2)
    stop.set()
    for t in threads:
        t.join()
    assert not errors


def test_charges_bound_the_memory_used():
    """approx_bytes is the sum of the charges, and covers the arena's chunks but the
    newest one's unused tail (pages never touched, so not resident); a 16 B key and
    100 B value cost far less than the Python objects' 346 B."""
    nat = NativeMemtable()
    total = 0
    for i in range(20000):
        total += nat.add(b"%016d" % (i % 15000), i + 1, b"x" * 100)
    assert nat.approx_bytes == total
    assert total - (1 << 20) <= nat.arena_bytes <= total + (1 << 20) + 64
    assert total / 20000 < 16 + 100 + memtable_mod.ENTRY_OVERHEAD - 60
    nat.add_range(b"a", b"b", 20001)
    assert nat.approx_bytes == total + 2 + memtable_mod.ENTRY_OVERHEAD and len(nat) == 20001


def test_big_values_get_their_own_chunks():
    nat, py = NativeMemtable(), PyMemtable()
    big = bytes(range(256)) * 4096  # 1 MiB
    for i, value in enumerate((b"a", big, b"b", big[:300_000], b"c")):
        nat.add(b"k%d" % i, i + 1, value)
        py.add(b"k%d" % i, i + 1, value)
    assert nat.flush_columns() == pure_columns(py)


def test_big_values_are_held_not_copied():
    """A value above 256 KiB is held by reference, as PyMemtable holds it, not copied into
    the arena (a second copy of a big value for the memtable's life, and a third per get);
    a bytes subclass as an exact bytes copy; the reference goes with the memtable."""
    class Sub(bytes):
        pass

    nat, py = NativeMemtable(), PyMemtable()
    big = bytes(range(256)) * 4096  # 1 MiB
    refs = sys.getrefcount(big)
    sub = Sub(big[:300_000])
    edge = big[: 256 * 1024]  # not above the threshold: copied
    for i, value in enumerate((big, sub, edge, b"small", None, big)):
        nat.add(b"k%d" % (i % 5), i + 1, value)
        py.add(b"k%d" % (i % 5), i + 1, value)
    assert nat.get(b"k0", 1) is big and nat.get(b"k0", 9) is big
    got = nat.get(b"k1", 9)
    assert type(got) is bytes and got == sub
    assert nat.get(b"k2", 9) == edge
    assert [e[2] is big for e in nat.visible_entries([b"k0"], 9)] == [True]
    assert nat.arena_bytes < (1 << 20)  # 2.6 MiB of values, 256 KiB of them copied
    assert nat.flush_columns() == pure_columns(py)
    del nat, py, got, value
    gc.collect()
    assert sys.getrefcount(big) == refs


def test_bad_arguments_raise():
    nat = NativeMemtable()
    with pytest.raises(TypeError, match="key"):
        nat.add("k", 1, b"v")
    with pytest.raises(TypeError, match="value"):
        nat.add(b"k", 1, 5)
    with pytest.raises(ValueError, match="version"):
        nat.add(b"k", -1, b"v")
    with pytest.raises(TypeError, match="key"):
        nat.get(bytearray(b"k"), 1)
    with pytest.raises(TypeError):
        nat.get(b"k", "1")
    with pytest.raises(KeyError):
        nat.visible_entries([b"absent"], 1)
    assert nat.entries == 0 and nat.approx_bytes == 0 and nat.get(b"k", 1) is MISSING
    with pytest.raises(IndexError):
        nat.sorted_keys()[0]
