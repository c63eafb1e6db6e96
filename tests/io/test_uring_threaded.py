"""Backend-specific tests: io_uring ring wrap-around, short/failed reads, concurrency;
the thread pool's chunking; O_DIRECT reads."""

from __future__ import annotations

import errno
import os
import random
import threading
from pathlib import Path

import pytest

from banyanstore.errors import StorageIOError
from banyanstore.io import threaded
from banyanstore.io.base import Env
from banyanstore.io.direct import DirectRandomAccessFile, aligned_span
from banyanstore.io.posix import PosixEnv, PosixRandomAccessFile
from banyanstore.io.testing import io_uring_skip_reason, make_test_env
from banyanstore.io.uring_ring import IORING_OP_NOP, IORING_OP_READV, Ring

needs_uring = pytest.mark.skipif(io_uring_skip_reason() is not None,
                                 reason=f"io_uring unavailable: {io_uring_skip_reason()}")


@pytest.fixture
def data_file(tmp_path: Path) -> tuple[str, bytes]:
    data = random.Random(5).randbytes(1 << 20)
    path = tmp_path / "data"
    path.write_bytes(data)
    return str(path), data


@needs_uring
def test_ring_counters_wrap_many_times() -> None:
    ring = Ring(8)
    try:
        assert ring.sq_entries == 8 and ring.cq_entries == 16
        seen: list[int] = []
        for batch in range(300):  # 300 * 5 = 1500 sqes through an 8-slot ring: ~190 laps
            for k in range(5):
                ring.prep(IORING_OP_NOP, -1, 0, 0, 0, batch * 5 + k)
            ring.submit_and_wait(5)
            got = ring.reap()
            assert sorted(ud for ud, _ in got) == list(range(batch * 5, batch * 5 + 5))
            assert all(res == 0 for _, res in got)
            seen.extend(ud for ud, _ in got)
        assert len(seen) == 1500 and ring.pending == 0
    finally:
        ring.close()
        ring.close()


@needs_uring
@pytest.mark.parametrize("entries", [8, 32, 256])
def test_uring_read_batch_stress(data_file: tuple[str, bytes], entries: int) -> None:
    from banyanstore.io.uring import UringEnv
    path, data = data_file
    env = UringEnv(entries=entries)
    f = env.open_readable(path)
    rng = random.Random(entries)
    for round_ in range(20):  # odd batch sizes so chunks end at every ring position
        n = rng.randrange(2, 5 * entries + 3)
        reqs = [(f, rng.randrange(len(data)), rng.choice([1, 512, 4096, 20_000])) for _ in range(n)]
        assert env.read_batch(reqs) == [data[o:o + ln] for _, o, ln in reqs], round_
    f.close()
    env.close()


@needs_uring
def test_uring_negative_result_becomes_storage_error(tmp_path: Path) -> None:
    from banyanstore.io.uring import UringEnv
    env = UringEnv(entries=8)
    (tmp_path / "f").write_bytes(b"abc")
    good = env.open_readable(str(tmp_path / "f"))
    dir_fd = os.open(str(tmp_path), os.O_RDONLY)  # read(2) of a directory: -EISDIR in the cqe
    bad = PosixRandomAccessFile(str(tmp_path), dir_fd, 0)
    with pytest.raises(StorageIOError) as info:
        env.read_batch([(good, 0, 3)] * 10 + [(bad, 0, 10)] + [(good, 0, 1)] * 10)
    cause = info.value.__cause__
    assert info.value.path == str(tmp_path) and isinstance(cause, OSError) and cause.errno == 21
    assert env.read_batch([(good, 0, 3)] * 30) == [b"abc"] * 30  # the pool recovers
    bad.close()
    good.close()
    env.close()


@needs_uring
def test_uring_readv_fallback(data_file: tuple[str, bytes]) -> None:
    from banyanstore.io.uring import UringEnv
    path, data = data_file
    env = UringEnv(entries=16)
    env.opcode = IORING_OP_READV  # as on a kernel without IORING_OP_READ
    f = env.open_readable(path)
    reqs = [(f, i * 1000, 3000) for i in range(100)]
    assert env.read_batch(reqs) == [data[o:o + n] for _, o, n in reqs]
    assert env.describe()["io_uring_opcode"] == "READV"
    f.close()
    env.close()


@pytest.mark.parametrize("mode", ["nonblocking", "io_uring"])
def test_concurrent_batches_from_threads(data_file: tuple[str, bytes], mode: str) -> None:
    if mode == "io_uring" and io_uring_skip_reason():
        pytest.skip(str(io_uring_skip_reason()))
    path, data = data_file
    env = make_test_env(mode)
    f = env.open_readable(path)
    failures: list[BaseException] = []

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(30):
                reqs = [(f, rng.randrange(len(data)), 777) for _ in range(rng.randrange(1, 120))]
                assert env.read_batch(reqs) == [data[o:o + n] for _, o, n in reqs]
        except BaseException as exc:
            failures.append(exc)
    threads = [threading.Thread(target=reader, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[0]
    f.close()
    env.close()


def test_threaded_hands_out_chunks_not_reads(data_file: tuple[str, bytes],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path, data = data_file
    jobs: list[tuple[int, int]] = []
    real_run = threaded._Job.run

    def spy(self: threaded._Job) -> None:
        jobs.append((self.lo, self.hi))
        real_run(self)
    monkeypatch.setattr(threaded._Job, "run", spy)
    env = threaded.ThreadedEnv(threads=4)
    f = env.open_readable(path)
    assert env.read_batch([(f, 0, 5)] * 7) == [data[:5]] * 7
    assert jobs == []  # small batch: a loop on the caller's thread, no workers
    assert env._workers == []
    reqs = [(f, i, 10) for i in range(1000)]
    assert env.read_batch(reqs) == [data[i:i + 10] for i in range(1000)]
    assert sorted(jobs) == [(0, 250), (250, 500), (500, 750), (750, 1000)]
    assert len(env._workers) == 3  # the caller works one chunk itself
    f.close()
    env.close()
    assert all(not t.is_alive() for t in env._workers) and env._workers == []


def test_threaded_error_is_lowest_failing_read(data_file: tuple[str, bytes]) -> None:
    path, _ = data_file
    env = threaded.ThreadedEnv(threads=4)
    good = env.open_readable(path)
    bad1, bad2 = PosixRandomAccessFile("/bad/one", -1, 0), PosixRandomAccessFile("/bad/two", -1, 0)
    reqs: list = [(good, 0, 1)] * 100
    reqs[90], reqs[30] = (bad2, 0, 1), (bad1, 0, 1)
    with pytest.raises(StorageIOError) as info:
        env.read_batch(reqs)
    assert info.value.path == "/bad/one" and isinstance(info.value.__cause__, OSError)
    good.close()
    env.close()


def test_aligned_span() -> None:
    assert aligned_span(0, 1) == (0, 4096)
    assert aligned_span(4096, 4096) == (4096, 4096)
    assert aligned_span(4000, 200) == (0, 8192)


@pytest.mark.parametrize("mode", ["sync", "nonblocking", "io_uring"])
def test_direct_io_reads(tmp_path: Path, mode: str) -> None:
    if mode == "io_uring" and io_uring_skip_reason():
        pytest.skip(str(io_uring_skip_reason()))
    data = random.Random(9).randbytes(300_001)  # not a multiple of the block size
    path = str(tmp_path / "d")
    writer = PosixEnv()
    w = writer.open_writable(path)
    w.write(data)  # buffered, unsynced: O_DIRECT reads must still see it
    env: Env = make_test_env(mode, direct_io=True)
    f = env.open_readable(path)
    if not isinstance(f, DirectRandomAccessFile):
        pytest.skip("this filesystem refuses O_DIRECT")
    rng = random.Random(3)
    reqs = [(f, rng.randrange(len(data) + 10), rng.choice([1, 100, 4096, 10_000])) for _ in range(300)]
    reqs.append((f, len(data) - 5, 4096))  # the unaligned tail
    assert env.read_batch(reqs) == [data[o:o + n] for _, o, n in reqs]
    assert f.read(4095, 2) == data[4095:4097]
    f.close()
    w.close()
    env.close()


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_direct_reads_keep_no_scratch_buffer_per_file(tmp_path: Path) -> None:
    """O_DIRECT reads go through a page-aligned scratch buffer.  It used to be kept per
    file and thread, as large as the file's largest read: a store reading a large value
    from each of many tables held that much memory per table, outside every budget
    (8 files x 4 MiB reads: 32 MiB resident until the files were freed).  A thread now
    keeps at most one small buffer, whatever the number of files."""
    env = PosixEnv(direct_io=True)
    payload = random.Random(4).randbytes(4 << 20)
    files = []
    for k in range(8):
        path = tmp_path / f"f{k}"
        path.write_bytes(payload)
        files.append(env.open_readable(str(path)))
    if not isinstance(files[0], DirectRandomAccessFile):
        pytest.skip("this filesystem refuses O_DIRECT")
    assert files[0].read(0, len(payload)) == payload  # the first read's buffer is no growth
    before = _resident_bytes()
    for f in files:
        assert len(f.read(1, len(payload) - 1)) == len(payload) - 1
    assert _resident_bytes() - before < 8 << 20
    for f in files:
        f.close()
    env.close()


@needs_uring
def test_uring_ring_returned_idle_keeps_no_large_buffer(tmp_path: Path) -> None:
    """A batch of large reads grows its ring's buffer to the batch's size; an idle ring
    kept that buffer (up to 4 idle rings: hundreds of MiB after a few concurrent
    multi_gets of large values, outside every budget).  Back in the pool, a ring now
    holds no more than a normal chunk's buffer."""
    from banyanstore.io.uring import UringEnv
    payload = random.Random(6).randbytes(32 << 20)
    path = tmp_path / "big"
    path.write_bytes(payload)
    env = UringEnv(entries=16)
    f = env.open_readable(str(path))
    half = len(payload) // 2
    reqs = [(f, 0, half), (f, half, half)]
    expected = [payload[:half], payload[half:]]
    before = _resident_bytes()
    got = env.read_batch(reqs)
    assert _resident_bytes() - before - len(payload) < 6 << 20  # the results and little else
    assert got == expected
    f.close()
    env.close()


@needs_uring
def test_uring_short_reads_are_completed(data_file: tuple[str, bytes],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from banyanstore.io.uring import UringEnv
    path, data = data_file
    real_reap = Ring.reap

    def short_reap(self: Ring) -> list[tuple[int, int]]:  # as if the kernel stopped early
        return [(ud, res // 3 if ud % 2 and res > 0 else res) for ud, res in real_reap(self)]
    monkeypatch.setattr(Ring, "reap", short_reap)
    env = UringEnv(entries=16)
    f = env.open_readable(path)
    reqs = [(f, i * 3001, 5000) for i in range(100)]
    assert env.read_batch(reqs) == [data[o:o + n] for _, o, n in reqs]
    f.close()
    env.close()


@needs_uring
def test_uring_batch_finding_no_ring_to_spare_reads_with_pread(data_file: tuple[str, bytes],
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A batch that finds every ring in use by other batches and cannot set up one more
    (io_uring_setup failing with ENOMEM under the memlock limit, or EMFILE) is served by
    plain preads, as in sync mode -- the reads themselves can be done (it used to raise
    ``StorageIOError: io_uring_setup failed on None``)."""
    from banyanstore.io import uring
    path, data = data_file
    env = uring.UringEnv(entries=16)
    f = env.open_readable(path)
    reqs = [(f, i * 997, 3000) for i in range(40)]
    want = [data[o:o + n] for _, o, n in reqs]
    inside, release = threading.Event(), threading.Event()
    real_submit = Ring.submit_and_wait

    def held_submit(self: Ring, min_complete: int) -> None:  # the other batch holds its ring
        inside.set()
        release.wait(10)
        real_submit(self, min_complete)

    def no_ring(entries: int) -> Ring:
        raise OSError(errno.ENOMEM, os.strerror(errno.ENOMEM))
    monkeypatch.setattr(Ring, "submit_and_wait", held_submit)
    other: list[list[bytes]] = []
    t = threading.Thread(target=lambda: other.append(env.read_batch(reqs)), daemon=True)
    t.start()
    assert inside.wait(10)
    monkeypatch.setattr(uring, "Ring", no_ring)
    try:
        assert env.read_batch(reqs) == want
        assert env.read_batch(reqs) == want
    finally:
        release.set()
        t.join(10)
    assert other == [want]
    said = [r.getMessage() for r in caplog.records if "no ring to spare" in r.getMessage()]
    assert len(said) == 1 and "ENOMEM" in said[0]  # logged once, with the reason
    f.close()
    env.close()


@needs_uring
def test_uring_batch_interrupted_while_waiting_unmaps_no_buffer_under_reads(
        data_file: tuple[str, bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C while a batch waits for its reads (KeyboardInterrupt out of
    ``io_uring_enter``'s EINTR retry) leaves reads submitted to the kernel.  The ring
    was closed and its buffer unmapped at once: a read still in flight (a cold one) then
    lands in whatever the process maps at that address next.  The submitted reads are
    now waited for before the buffer goes, and the pool works on."""
    from banyanstore.io.uring import UringEnv
    path, data = data_file
    env = UringEnv(entries=16)
    f = env.open_readable(path)
    reqs = [(f, i * 4096, 4096) for i in range(12)]
    real_submit, real_close = Ring.submit_and_wait, Ring.close
    left_in_flight: list[int] = []

    def interrupted(self: Ring, min_complete: int) -> None:
        real_submit(self, 0)  # the sqes reach the kernel, then Ctrl-C
        monkeypatch.setattr(Ring, "submit_and_wait", real_submit)
        raise KeyboardInterrupt

    def closing(self: Ring) -> None:
        left_in_flight.append(self.pending)
        real_close(self)
    monkeypatch.setattr(Ring, "submit_and_wait", interrupted)
    monkeypatch.setattr(Ring, "close", closing)
    with pytest.raises(KeyboardInterrupt):
        env.read_batch(reqs)
    assert left_in_flight == [0], "the ring went (and its buffer with it) with reads in flight"
    assert env.read_batch(reqs) == [data[o:o + n] for _, o, n in reqs]
    f.close()
    env.close()


@needs_uring
@pytest.mark.parametrize("failing", ["buffer", "probe"])
def test_uring_ring_set_up_half_way_is_closed(monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    """A ring whose buffer cannot be mapped (ENOMEM), or whose opcode probe fails, is
    closed before the error goes up: its descriptor and mappings leaked, once per
    failed setup (an env that cannot start, or every batch that finds no ring to spare)."""
    import mmap

    from banyanstore.errors import IOModeUnavailableError
    from banyanstore.io.uring import UringEnv
    real_mmap = mmap.mmap

    def anonymous_fails(fileno: int, *args: object, **kwargs: object) -> mmap.mmap:
        if fileno == -1:  # the ring's buffer (the rings themselves map the ring's fd)
            raise OSError(errno.ENOMEM, os.strerror(errno.ENOMEM))
        return real_mmap(fileno, *args, **kwargs)  # type: ignore[arg-type]

    def probe_fails(self: Ring) -> set[int]:
        raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
    if failing == "buffer":
        monkeypatch.setattr(mmap, "mmap", anonymous_fails)
    else:
        monkeypatch.setattr(Ring, "supported_ops", probe_fails)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        with pytest.raises(IOModeUnavailableError):
            UringEnv(entries=16)
    assert len(os.listdir("/proc/self/fd")) == before


def test_threaded_batch_racing_close_does_not_wait_forever(data_file: tuple[str, bytes],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch that found the workers running, then close() stopped them before it queued
    its chunks: the caller reads the chunks no worker took (it used to wait forever)."""
    path, data = data_file
    env = threaded.ThreadedEnv(threads=4)
    f = env.open_readable(path)
    reqs = [(f, i, 10) for i in range(100)]
    want = [data[i:i + 10] for i in range(100)]
    assert env.read_batch(reqs) == want  # the workers run
    checked = env._ensure_workers

    def then_closed(wanted: int) -> None:
        checked(wanted)
        env.close()  # the workers take close()'s sentinels and stop: none is left for the chunks
    monkeypatch.setattr(env, "_ensure_workers", then_closed)
    got: list[list[bytes]] = []
    t = threading.Thread(target=lambda: got.append(env.read_batch(reqs)), daemon=True)
    t.start()
    t.join(10)
    assert not t.is_alive(), "read_batch waits forever for chunks queued after close()"
    assert got == [want]
    f.close()


@needs_uring
@pytest.mark.parametrize("transient", [errno.EAGAIN, errno.EBUSY])
def test_uring_enter_transient_failure_is_retried(data_file: tuple[str, bytes],
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  transient: int) -> None:
    """``io_uring_enter`` failing with EAGAIN (the kernel short of memory for the
    request) or EBUSY (completions it could not post yet) a few times: the batch waits
    and tries again, as the man page asks, and reads the right bytes.  It used to raise
    StorageIOError at once -- a multi_get failed, a merge counted a failure."""
    import ctypes

    from banyanstore.io import uring_ring
    from banyanstore.io.uring import UringEnv
    path, data = data_file
    env = UringEnv(entries=16)
    nr_enter = uring_ring.syscall_numbers()[1]
    real = uring_ring._syscall  # (a module function, not an object's private state)
    failures = {"left": 3, "seen": 0}

    def flaky(nr: ctypes.c_long, *args: object) -> int:
        if nr.value == nr_enter and failures["left"]:
            failures["left"] -= 1
            failures["seen"] += 1
            ctypes.set_errno(transient)
            return -1
        return int(real(nr, *args))
    monkeypatch.setattr(uring_ring, "_syscall", flaky)
    f = env.open_readable(path)
    try:
        got = env.read_batch([(f, off, 4096) for off in range(0, 64 * 4096, 4096)])
        assert got == [data[off:off + 4096] for off in range(0, 64 * 4096, 4096)]
        assert failures["seen"] == 3
    finally:
        f.close()
        env.close()


@needs_uring
def test_uring_enter_failing_for_ever_still_raises(data_file: tuple[str, bytes],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """EAGAIN that never clears: the retries are bounded and the read raises
    StorageIOError naming the file (no endless loop)."""
    import ctypes

    from banyanstore.io import uring_ring
    from banyanstore.io.uring import UringEnv
    path, _ = data_file
    env = UringEnv(entries=16)
    nr_enter = uring_ring.syscall_numbers()[1]
    real = uring_ring._syscall

    def always(nr: ctypes.c_long, *args: object) -> int:
        if nr.value == nr_enter:
            ctypes.set_errno(errno.EAGAIN)
            return -1
        return int(real(nr, *args))
    monkeypatch.setattr(uring_ring, "_syscall", always)
    monkeypatch.setattr(uring_ring, "TRANSIENT_RETRY_S", 0.05)
    f = env.open_readable(path)
    try:
        with pytest.raises(StorageIOError, match="data"):
            env.read_batch([(f, 0, 4096), (f, 4096, 4096)])
    finally:
        monkeypatch.setattr(uring_ring, "_syscall", real)
        f.close()
        env.close()
