"""How to put every WAL record in the kernel before ``append()`` returns: candidates, measured.

Usage: ``python benchmarks/bench_wal_designs.py [--records N] [--runs R] [--sync-every K] [--dir DIR]``

Each design frames N records of 140 bytes (the Log's FULL fragment: a 15-byte header
with a CRC-32C, then the data) and hands them to a file in ``--dir`` (default: a temp
dir; use the filesystem the stores live on).  Printed per design, medians of R runs:
nanoseconds per record of wall time and of process CPU time (user + system), and
whether a record is in the kernel when the call for it returns -- what a process
crash (``kill -9``, an exit without ``close()``) needs to lose nothing.
``--sync-every K`` adds an ``fdatasync`` after every K records, as ``wal_sync="interval"``
does every 100 ms (K = 10,000 is 100 ms at 100k puts/s); its cost counts too.

* ``buffer + write/256K``  -- the Log before format 2: a bytearray, one ``os.write``
  per 256 KiB.  Cheapest, but a process crash loses the buffer.
* ``write per record``     -- one ``os.write`` per record.
* ``mapped``               -- the Log since format 2 (``log/writer.py``): records stored
  into a ``MAP_SHARED`` window of space reserved with ``posix_fallocate``; a new 1 MiB
  window each time one fills; one page fault per 4 KiB page on its first store.
* ``mapped, populated``    -- the same, with each window faulted in writable at once by
  ``madvise(MADV_POPULATE_WRITE)``.  That marks the whole window dirty: a sync then
  writes its zeros out and write-protects the pages, so they fault again when used.

REQUIRES: Linux (``MADV_POPULATE_WRITE`` needs 5.14; older kernels refuse it and the
populate row then measures page faults), ``crc32c``.
"""

from __future__ import annotations

import argparse
import mmap
import os
import statistics
import struct
import tempfile
import time
from collections.abc import Callable

from crc32c import crc32c

RECORD = bytes(range(140))
FULL_HEADER = struct.Struct("<IHBQ")  # crc, length, type, seq (log/format.py)
assert FULL_HEADER.size == 15
SIZE = FULL_HEADER.size + len(RECORD)
_CRC_FULL = crc32c(b"\x01")
_SEQ = struct.Struct("<Q")
WINDOW = 1 << 20
FLUSH = 256 * 1024
MADV_POPULATE_WRITE = 23


def _header(seq: int) -> bytes:
    return FULL_HEADER.pack(crc32c(RECORD, crc32c(_SEQ.pack(seq), _CRC_FULL)), SIZE - 7, 1, seq)


SYNC_EVERY = 0  # set from --sync-every


def buffered(fd: int, n: int) -> None:
    buf = bytearray()
    for seq in range(n):
        buf += _header(seq)
        buf += RECORD
        if len(buf) >= FLUSH:
            os.write(fd, buf)
            buf = bytearray()
        if SYNC_EVERY and seq % SYNC_EVERY == SYNC_EVERY - 1:
            os.write(fd, buf)  # the interval sync hands the buffer over first
            buf = bytearray()
            os.fdatasync(fd)
    os.write(fd, buf)


def write_each(fd: int, n: int) -> None:
    for seq in range(n):
        os.write(fd, _header(seq) + RECORD)
        if SYNC_EVERY and seq % SYNC_EVERY == SYNC_EVERY - 1:
            os.fdatasync(fd)


def _mapped(populate: bool) -> Callable[[int, int], None]:
    def run(fd: int, n: int) -> None:
        pack_into = FULL_HEADER.pack_into
        pos = base = end = 0
        view: memoryview | None = None
        mm: mmap.mmap | None = None
        for seq in range(n):
            if pos + SIZE > end:
                if view is not None and mm is not None:
                    view.release()
                    mm.close()
                base = pos - pos % mmap.ALLOCATIONGRANULARITY
                os.posix_fallocate(fd, base, pos + WINDOW - base)
                mm = mmap.mmap(fd, pos + WINDOW - base, flags=mmap.MAP_SHARED, offset=base)
                if populate:
                    try:
                        mm.madvise(MADV_POPULATE_WRITE)
                    except OSError:
                        pass
                view = memoryview(mm)
                end = base + len(view)
            i = pos - base
            pack_into(view, i, crc32c(RECORD, crc32c(_SEQ.pack(seq), _CRC_FULL)), SIZE - 7, 1, seq)
            view[i + 15:i + SIZE] = RECORD  # type: ignore[index]
            pos += SIZE
            if SYNC_EVERY and seq % SYNC_EVERY == SYNC_EVERY - 1:
                os.fdatasync(fd)
        if view is not None and mm is not None:
            view.release()
            mm.close()
        os.ftruncate(fd, pos)
    return run


DESIGNS: dict[str, tuple[Callable[[int, int], None], bool]] = {
    "buffer + write/256K": (buffered, False),
    "write per record": (write_each, True),
    "mapped": (_mapped(False), True),
    "mapped, populated": (_mapped(True), True),
}


def measure(directory: str, fn: Callable[[int, int], None], n: int) -> tuple[float, float]:
    """``(wall ns, cpu ns)`` per record of one run on a fresh file."""
    path = os.path.join(directory, "wal-design.bin")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        t0, c0 = time.perf_counter(), os.times()
        fn(fd, n)
        t1, c1 = time.perf_counter(), os.times()
        assert os.fstat(fd).st_size == n * SIZE
    finally:
        os.close(fd)
        os.remove(path)
    cpu = (c1.user + c1.system) - (c0.user + c0.system)
    return (t1 - t0) / n * 1e9, cpu / n * 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=500_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sync-every", type=int, default=0, help="fdatasync every this many records")
    ap.add_argument("--dir", default=None)
    a = ap.parse_args()
    global SYNC_EVERY
    SYNC_EVERY = a.sync_every
    directory = a.dir or tempfile.mkdtemp(prefix="bench-wal-designs-")
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in DESIGNS}
    for _ in range(a.runs):  # interleaved, so a busy moment hits every design alike
        for name, (fn, _durable) in DESIGNS.items():
            results[name].append(measure(directory, fn, a.records))
    syncs = f", fdatasync every {a.sync_every:,}" if a.sync_every else ""
    print(f"{a.records:,} records of {SIZE} bytes{syncs}, median of {a.runs} runs, in {directory}")
    print(f"{'design':26s} {'wall ns':>8s} {'cpu ns':>8s}  in the kernel on return")
    for name, (_fn, durable) in DESIGNS.items():
        wall = statistics.median(r[0] for r in results[name])
        cpu = statistics.median(r[1] for r in results[name])
        print(f"{name:26s} {wall:8.0f} {cpu:8.0f}  {'yes' if durable else 'no'}")


if __name__ == "__main__":
    main()
