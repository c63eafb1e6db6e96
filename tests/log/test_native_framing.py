"""The compiled core's Log framing (src/banyanstore/native/logframe.c) against the
pure-Python SegmentWriter, byte for byte.

Both writers run in this process whatever BANYANSTORE_PURE_PYTHON says.  Records of
random sizes -- empty, just under and over a block's room, spanning many blocks --
go through windows of one or a few blocks (so records end windows and remap them)
and small segments (so ``add`` reports the segment full); every file byte, return
value, offset and sparse-index entry must be the same.  A Log run twice, once with
each writer, must leave the same segment files through rotations.  The C CRC-32C
must give the crc32c package's values.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest
from crc32c import crc32c
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from banyanstore import accel
from banyanstore.io.memory import MemoryEnv
from banyanstore.log import log as log_mod
from banyanstore.log.format import BLOCK_SIZE, HEADER_SIZE, SEAL_SIZE, parse_seal
from banyanstore.log.log import Log
from banyanstore.log.segment import Segment, SparseIndex, create_segment
from banyanstore.log.writer import NativeSegmentWriter, PySegmentWriter

native = accel.load_native()
pytestmark = pytest.mark.skipif(native is None, reason="the compiled core is not built")

_ROOM = BLOCK_SIZE - HEADER_SIZE  # room in the first block of a segment
# Sizes around what makes a record fill, overflow or exactly end its block.
_EDGES = [0, 1, 6, 7, 8, 100, _ROOM - 15 - 7, _ROOM - 15 - 6, _ROOM - 15, _ROOM - 14,
          BLOCK_SIZE - 22, BLOCK_SIZE - 15, BLOCK_SIZE - 7, BLOCK_SIZE, BLOCK_SIZE + 1,
          3 * BLOCK_SIZE + 5]


def _record_sizes() -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(_EDGES), st.integers(0, 300), st.integers(0, 4 * BLOCK_SIZE))


def _fresh_writer(cls: type, *, start: int = HEADER_SIZE) -> tuple[MemoryEnv, Any]:
    """A writer of ``cls`` on a new segment ``/seg`` (first seq 1) in a memory env, its
    records starting at ``start`` (index every 3rd seq, 1 MiB segments, 2-block windows)."""
    env = MemoryEnv()
    file = create_segment(env, "/seg", 1)
    seg = Segment(env, "/seg", 1, start, SparseIndex())
    return env, cls(file, seg, start=start, last_seq=0, index_interval=3, segment_size=1 << 20,
                    window=2 * BLOCK_SIZE)


def _run(cls: type, sizes: list[int], *, window: int, segment_size: int, interval: int,
         seed: int) -> tuple[bytes, list[object], list[tuple[int, int]]]:
    """Add records of ``sizes`` with ``cls``; the segment's bytes, the results of each
    add (and offset after it) and the sparse index."""
    env = MemoryEnv()
    file = create_segment(env, "/seg", 1)
    seg = Segment(env, "/seg", 1, HEADER_SIZE, SparseIndex())
    w = cls(file, seg, start=HEADER_SIZE, last_seq=0, index_interval=interval,
            segment_size=segment_size, window=window)
    rng = random.Random(seed)
    results: list[object] = []
    seq = 1
    for n in sizes:
        data = rng.randbytes(n)
        if rng.random() < 0.2:
            stored = w.add_many(seq, [data, data[: n // 2]])
            results.append(("many", stored, w.offset, w.full))
            seq += stored
        else:
            ok = w.add(seq, data)
            results.append(("one", ok, w.offset, w.full))
            seq += ok
    w.flush(seq - 1)
    results.append(("pending", w.pending(), seg.end))
    w.seal()
    file.close()
    assert seg.index is not None
    return (env.snapshot_state()["/seg"], results,
            list(zip(seg.index.seqs, seg.index.offsets, strict=True)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(_record_sizes(), max_size=40), blocks=st.integers(1, 4),
       segment_blocks=st.integers(2, 40), interval=st.integers(1, 8), seed=st.integers(0, 1000))
def test_native_framing_writes_the_same_bytes(sizes: list[int], blocks: int, segment_blocks: int,
                                              interval: int, seed: int) -> None:
    kw = dict(window=blocks * BLOCK_SIZE, segment_size=segment_blocks * BLOCK_SIZE + seed % 977,
              interval=interval, seed=seed)
    assert _run(NativeSegmentWriter, sizes, **kw) == _run(PySegmentWriter, sizes, **kw)


@pytest.mark.parametrize("start", [HEADER_SIZE, BLOCK_SIZE - 7, BLOCK_SIZE - 3, BLOCK_SIZE])
def test_native_framing_resumes_where_python_would(start: int) -> None:
    """A writer opened on a segment part written (the reopen after recovery): including
    a start with less than a fragment header of room left in its block (padded)."""
    outs = []
    for cls in (PySegmentWriter, NativeSegmentWriter):
        env, w = _fresh_writer(cls, start=start)
        for seq in range(1, 30):
            w.add(seq, bytes([seq]) * (seq * 997))
        w.seal()
        outs.append(env.snapshot_state()["/seg"])
    assert outs[0] == outs[1]


@pytest.mark.parametrize("room", [SEAL_SIZE + 1, SEAL_SIZE, SEAL_SIZE - 1, 8, 7])
def test_native_and_python_writers_seal_alike(room: int) -> None:
    """The SEAL after the last record, with ``room`` bytes left in its block (fewer than
    SEAL_SIZE: zeros to the block's end, the SEAL in the next block): the same bytes
    and the same file end from either writer."""
    outs = []
    for cls in (PySegmentWriter, NativeSegmentWriter):
        env, w = _fresh_writer(cls)
        w.add(1, bytes(BLOCK_SIZE - HEADER_SIZE - room - 15))  # one FULL fragment of 15 + n bytes
        assert w.offset == BLOCK_SIZE - room
        end = w.seal(2)
        outs.append(env.snapshot_state()["/seg"])
        assert len(outs[-1]) == end and parse_seal(outs[-1][-SEAL_SIZE:]) == 2
    assert outs[0] == outs[1]


def test_native_log_rotates_into_the_same_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through whole Logs: appends and append_many across many segment rotations."""
    rng = random.Random(7)
    records = [rng.randbytes(rng.choice((0, 10, 200, 5000, 40000))) for _ in range(400)]
    states = []
    for cls in (PySegmentWriter, NativeSegmentWriter):
        monkeypatch.setattr(log_mod, "SegmentWriter", cls)
        env = MemoryEnv()
        with Log.open("/log", env=env, segment_size=256 * 1024, wal_sync="never") as log:
            for i in range(0, len(records), 10):
                log.append(records[i])
                log.append_many(records[i + 1:i + 10])
            assert list(log.read(1)) == list(enumerate(records, 1))
        states.append(env.snapshot_state())
    assert len([p for p in states[0] if p.endswith(".log")]) > 5
    assert states[0] == states[1]


@given(data=st.binary(max_size=2000), value=st.integers(0, 2**32 - 1))
def test_native_crc32c_matches_the_package(data: bytes, value: int) -> None:
    assert native is not None
    assert native.crc32c(data, value) == crc32c(data, value)
    assert native.crc32c(data) == crc32c(data)


def test_native_crc32c_of_long_inputs_matches_the_package() -> None:
    """Inputs long enough for the interleaved hardware path (three 256-byte stripes at a
    time, combined), at every length and alignment around its boundaries."""
    assert native is not None
    rng = random.Random(5)
    data = rng.randbytes(20_000)
    for n in [*range(760, 780), *range(1530, 1545), 2304, 4096, 4100, 8191, 20_000]:
        for off in (0, 1, 3, 8):
            piece = data[off:off + n]
            value = rng.getrandbits(32)
            assert native.crc32c(piece, value) == crc32c(piece, value), (n, off)


def test_native_framing_refuses_what_it_cannot_write() -> None:
    assert native is not None
    env = MemoryEnv()
    file = create_segment(env, "/seg", 1)
    w = native.FrameWriter(file.map, SparseIndex().add, HEADER_SIZE, 1 << 20, BLOCK_SIZE, 0, 1)
    with pytest.raises(TypeError):
        w.add(1, bytearray(b"x"))
    with pytest.raises(TypeError):
        w.add_many(1, [b"a", "b"])
    with pytest.raises(ValueError):
        native.FrameWriter(file.map, SparseIndex().add, HEADER_SIZE, 1 << 20, 1000, 0, 1)
    file.truncate(HEADER_SIZE)  # the window is released: a stale store raises, never writes
    with pytest.raises(ValueError):
        w.add(1, b"x")
    bare = native.FrameWriter.__new__(native.FrameWriter)  # never initialised: refuses
    with pytest.raises(ValueError):
        bare.add(1, b"x")
    with pytest.raises(ValueError):
        bare.add_many(1, [b"x"])
    tail = native.LogTail.__new__(native.LogTail)
    assert tail.append_put(1, 2, 0, b"k", b"v") is None
    with pytest.raises(TypeError):
        tail.frames = "not a FrameWriter"


def _puts(seed: int) -> list[tuple[int, int, int, bytes, bytes | None]]:
    """(version, commit_ms, keyspace, key, value) of puts and deletes: small ones, ones
    that cross their block, and ones the one-call path never takes (a block or more)."""
    rng = random.Random(seed)
    out: list[tuple[int, int, int, bytes, bytes | None]] = []
    for v in range(1, 600):
        key = rng.randbytes(rng.choice((0, 1, 16, 300)))
        size = rng.choice((0, 10, 100, 1000, 9000, BLOCK_SIZE - 40, BLOCK_SIZE + 3))
        value = None if rng.random() < 0.2 else rng.randbytes(size)
        out.append((v, 1_700_000_000_000 + v, rng.choice((0, 1, 2**32 - 1)), key, value))
    return out


def test_native_one_call_puts_write_what_append_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The store's one-call append (LogTail.append_put) against Log.append of the
    Python-encoded record: the same segment files through rotations, and None (nothing
    appended) exactly where the Python path must take over."""
    from banyanstore.lsm.wal import py_encode_one

    puts = _puts(3)
    states, fallbacks = [], 0
    for one_call in (False, True):
        env = MemoryEnv()
        with Log.open("/log", env=env, segment_size=128 * 1024, wal_sync="never") as log:
            put = log.put_appender()
            assert put is not None or accel.native is None
            for i, (v, ms, ks, key, value) in enumerate(puts):
                seq = put(v, ms, ks, key, value) if one_call and put is not None else None
                if seq is None:
                    fallbacks += one_call
                    seq = log.append(py_encode_one(v, ms, ks, key, value), sync=False)
                assert seq == i + 1
            assert [r for _, r in log.read(1)] == [py_encode_one(*p) for p in puts]
        states.append(env.snapshot_state())
    assert len([p for p in states[0] if p.endswith(".log")]) > 5
    assert states[0] == states[1]
    if accel.native is not None:
        assert 0 < fallbacks < len(puts) // 2


def test_native_one_call_puts_step_aside_for_followers_and_failures() -> None:
    """With a follower waiting the one-call path declines (the Python path notifies it);
    a closed log declines too (append() then says why)."""
    if accel.native is None:
        pytest.skip("the compiled core is not in use")
    env = MemoryEnv()
    log = Log.open("/log", env=env, wal_sync="never")
    put = log.put_appender()
    assert put is not None
    assert put(1, 2, 0, b"k", b"v") == 1
    follower = log.follow(2, timeout=30)
    got: list[tuple[int, bytes]] = []
    t = threading.Thread(target=lambda: got.append(next(follower)))
    t.start()
    deadline = time.monotonic() + 30
    while log._appends.followers == 0 and time.monotonic() < deadline:  # the follower waits
        time.sleep(0.001)
    assert log._appends.followers == 1
    assert put(2, 3, 0, b"k2", None) is None  # it must be woken: the Python path does that
    assert log.append(b"x", sync=False) == 2
    t.join(30)
    assert got == [(2, b"x")]
    log.close()
    assert put(3, 4, 0, b"k", b"v") is None


def test_native_one_call_puts_step_aside_for_a_task_following_too() -> None:
    """A task in follow_async() counts as a follower: the one-call path declines while it
    waits (else the record would be stored with nobody waking the task), and once the
    task is woken or cancelled the path takes puts again."""
    import asyncio
    if accel.native is None:
        pytest.skip("the compiled core is not in use")
    log = Log.open("/log", env=MemoryEnv(), wal_sync="never")
    put = log.put_appender()
    assert put is not None and put(1, 2, 0, b"k", b"v") == 1

    async def main() -> None:
        follower = log.follow_async(2)
        parked = asyncio.Event()

        async def consume() -> tuple[int, bytes]:
            parked.set()  # the test's task runs only once anext() below is parked
            return await anext(follower)

        task = asyncio.create_task(consume())
        await parked.wait()
        assert log._appends.followers == 1
        assert put(2, 3, 0, b"k2", None) is None  # declined: the Python path wakes the task
        assert log.append(b"x", sync=False) == 2
        assert await task == (2, b"x") and log._appends.followers == 0
        assert put(3, 4, 0, b"k3", b"v") == 3  # nobody waits: the one-call path again
        assert (await anext(follower))[0] == 3  # (the record put stored) -- now it waits for 4
        task = asyncio.create_task(consume())
        parked.clear()
        await parked.wait()
        assert put(4, 5, 0, b"k4", b"v") is None
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert log._appends.followers == 0 and put(4, 5, 0, b"k4", b"v") == 4

    asyncio.run(main())
    log.close()
