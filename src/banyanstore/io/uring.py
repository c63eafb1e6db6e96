"""The ``io_uring`` backend: batches of reads submitted to an io_uring ring.

Only :meth:`UringEnv.read_batch` uses the ring.  What stays a plain syscall, and why
(figures from docs/facts.md, measured on this kind of machine):

* single reads (``RandomAccessFile.read``): ``os.pread``.  For a page-cache hit the
  Python cost of one sqe + one cqe exceeds the syscall it saves;
* writes and ``fdatasync``: plain ``os.write``/``fdatasync``.  On ext4 the kernel
  punts buffered writes and syncs submitted through io_uring to its worker
  threads, so they are no faster, and the engine's writes are already batched;
* a batch: one ``io_uring_enter(to_submit, min_complete)`` per chunk of at most
  the ring size.  O_DIRECT batches of 64-256 reach 61-76k reads/s, 4-5x a pread
  loop at a third of the CPU per read of threads.

A ring is not thread-safe.  Each ``read_batch`` *checks out* a ring (with its
buffer) from a small pool and returns it afterwards: concurrent batches (a
multi_get and a compaction) each get their own ring instead of queueing behind
one lock, and unlike thread-local rings every ring is known to ``close()``
and none leaks with a thread that exits.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import mmap
import os
import threading
from collections.abc import Sequence

from ..errors import IOModeUnavailableError, from_oserror
from .base import ReadRequest
from .direct import DIRECT_ALIGN, aligned_span
from .posix import PosixEnv, PosixRandomAccessFile
from .uring_ring import IORING_OP_READ, IORING_OP_READV, IOVEC, Ring

__all__ = ["UringEnv", "reason_for"]

logger = logging.getLogger("banyanstore.io")

_MAX_SQE_LEN = 1 << 30  # larger reads (u32 len, and huge buffers) go to pread
_MAX_CHUNK_BYTES = 8 << 20  # cap on one chunk's buffer; a larger read gets a chunk alone
_MAX_IDLE_RINGS = 4
_KEPT_BUFFER = 1 << 20  # an idle ring's buffer: a chunk of 256 4 KiB blocks fits

_REASONS = {
    errno.EPERM: "io_uring is disabled (sysctl kernel.io_uring_disabled, group restriction, or seccomp)",
    errno.EACCES: "io_uring is denied by a security policy (LSM or seccomp)",
    errno.ENOSYS: "kernel has no io_uring (needs Linux >= 5.1)",
    errno.ENOMEM: "memlock limit too low (ulimit -l)",
    errno.EMFILE: "too many open files (ulimit -n)",
    errno.ENFILE: "system-wide open file limit reached",
    errno.EINVAL: "kernel rejected the io_uring request (kernel too old?)",
}


def reason_for(exc: OSError, what: str = "io_uring_setup") -> str:
    """A human reason for an io_uring failure, naming the errno."""
    code = exc.errno or 0
    name = errno.errorcode.get(code, str(code))
    base = _REASONS.get(code, f"{what} failed: {exc.strerror or exc}")
    return f"{base} [{what}: {name}]"


class _Lease:
    """A ring plus the aligned buffer and iovec array its reads land in."""

    def __init__(self, entries: int) -> None:
        self.ring = Ring(entries)
        try:  # (a ring has no finalizer: one set up half way would keep its descriptor)
            self.iov = ctypes.create_string_buffer(self.ring.sq_entries * IOVEC.size)
            self.mm = mmap.mmap(-1, _KEPT_BUFFER)
        except BaseException:
            self.ring.close()
            raise
        self.iov_addr = ctypes.addressof(self.iov)
        self._anchor = ctypes.c_char.from_buffer(self.mm)  # exports mm: drop before closing
        self.addr = ctypes.addressof(self._anchor)

    def buffer(self, size: int) -> None:
        """Grow the buffer to at least ``size`` bytes (page-aligned, as O_DIRECT needs)."""
        if len(self.mm) < size:
            self._remap(1 << (size - 1).bit_length())

    def shrink(self) -> None:
        """Give back a buffer grown past :data:`_KEPT_BUFFER` (a batch of large reads):
        an idle ring keeps only what normal chunks need."""
        if len(self.mm) > _KEPT_BUFFER:
            self._remap(_KEPT_BUFFER)

    def _remap(self, size: int) -> None:
        del self._anchor
        self.mm.close()
        self.mm = mmap.mmap(-1, size)
        self._anchor = ctypes.c_char.from_buffer(self.mm)
        self.addr = ctypes.addressof(self._anchor)

    def close(self) -> None:
        """Close the ring, and unmap the buffer once no read is in flight into it.  A batch
        interrupted while it waited (a Ctrl-C) left its reads with the kernel, which
        would store their bytes at the buffer's address after an unmap -- into whatever
        the process maps there next; if they cannot be waited for, the buffer stays."""
        try:
            settled = self.ring.drain()
        finally:
            self.ring.close()
        if settled:
            del self._anchor
            self.mm.close()


# (request index, file, fd, offset, length, aligned start, span, position in buffer)
_Entry = tuple[int, PosixRandomAccessFile, int, int, int, int, int, int]


class UringEnv(PosixEnv):
    """``io_mode="io_uring"``: :meth:`read_batch` through io_uring rings of ``entries`` sqes."""

    mode = "io_uring"

    def __init__(self, *, entries: int = 256, direct_io: bool = False) -> None:
        """Raises :class:`IOModeUnavailableError` (with the reason) if no ring can be set up."""
        super().__init__(direct_io=direct_io)
        self.entries = entries
        self._mu = threading.Lock()
        self._idle: list[_Lease] = []
        self._closed = False
        self._pread_batches = 0  # batches read with pread: no ring could be set up (logged once)
        try:
            lease = _Lease(entries)
        except OSError as exc:
            raise IOModeUnavailableError(reason_for(exc)) from exc
        try:
            ops = lease.ring.supported_ops()
        except OSError as exc:
            lease.close()
            raise IOModeUnavailableError(reason_for(exc)) from exc
        self.ring_entries = lease.ring.sq_entries
        # READ (5.6) needs no iovec; READV (5.1) is the fallback on kernels that lack it.
        if IORING_OP_READ in ops:
            self.opcode = IORING_OP_READ
        elif IORING_OP_READV in ops:
            self.opcode = IORING_OP_READV
        else:
            lease.close()
            raise IOModeUnavailableError("io_uring supports neither IORING_OP_READ nor IORING_OP_READV")
        self._idle.append(lease)

    # -- ring pool ---------------------------------------------------------------------
    def _checkout(self) -> _Lease | None:
        """An idle ring, or a new one; None when every ring is in use and no other can be
        set up now (ENOMEM under the memlock limit, EMFILE): the caller reads without one."""
        with self._mu:
            if self._closed:
                raise ValueError("UringEnv is closed")
            if self._idle:
                return self._idle.pop()
        try:
            return _Lease(self.entries)
        except OSError as exc:
            with self._mu:
                self._pread_batches += 1
                first = self._pread_batches == 1
            if first:
                logger.warning("io_uring: no ring to spare for a concurrent batch (%s); such "
                               "batches are read with pread", reason_for(exc))
            return None

    def _checkin(self, lease: _Lease, healthy: bool) -> None:
        if healthy:
            lease.shrink()  # an idle ring must not hold a large batch's buffer
        with self._mu:
            if healthy and not self._closed and len(self._idle) < _MAX_IDLE_RINGS:
                self._idle.append(lease)
                return
        lease.close()

    # -- reads -------------------------------------------------------------------------
    def read_batch(self, requests: Sequence[ReadRequest]) -> list[bytes]:
        """Results in request order; a failed read raises its StorageIOError (lowest index)."""
        n = len(requests)
        if n <= 1:  # a lone read is cheaper as a pread (see the module docstring)
            return [f.read(off, ln) for f, off, ln in requests]
        lease = self._checkout()
        if lease is None:  # the reads can still be done, as the sync backend does them
            return [f.read(off, ln) for f, off, ln in requests]
        results: list[bytes] = [b""] * n
        healthy = False
        try:
            i = 0
            while i < n:
                chunk: list[_Entry] = []
                total = 0
                while i < n and len(chunk) < lease.ring.sq_entries and total < _MAX_CHUNK_BYTES:
                    f, off, ln = requests[i]
                    if (not isinstance(f, PosixRandomAccessFile) or f.fd < 0 or ln <= 0
                            or ln > _MAX_SQE_LEN):  # foreign, closed, empty or huge: pread
                        results[i] = f.read(off, ln)
                    else:
                        start, span = aligned_span(off, ln) if f.direct else (off, ln)
                        chunk.append((i, f, f.fd, off, ln, start, span, total))
                        total += -(-span // DIRECT_ALIGN) * DIRECT_ALIGN  # keep every slot aligned
                    i += 1
                if chunk:
                    self._run_chunk(lease, chunk, total, results)
            healthy = True
        finally:
            self._checkin(lease, healthy)
        return results

    def _run_chunk(self, lease: _Lease, chunk: list[_Entry], total: int, results: list[bytes]) -> None:
        lease.buffer(total)
        ring, base, readv = lease.ring, lease.addr, self.opcode == IORING_OP_READV
        for k, (_i, _f, fd, _off, _ln, start, span, pos) in enumerate(chunk):
            if readv:
                IOVEC.pack_into(lease.iov, k * IOVEC.size, base + pos, span)
                ring.prep(IORING_OP_READV, fd, start, lease.iov_addr + k * IOVEC.size, 1, k)
            else:
                ring.prep(IORING_OP_READ, fd, start, base + pos, span, k)
        try:
            ring.submit_and_wait(len(chunk))
        except OSError as exc:
            raise from_oserror("io_uring_enter", chunk[0][1].path, exc) from exc
        res_of: list[int | None] = [None] * len(chunk)
        got = 0
        while got < len(chunk):  # reap everything before raising: the ring must end empty
            for user_data, result in ring.reap():
                res_of[user_data] = result  # user_data is the position in this chunk
                got += 1
            if got < len(chunk):
                ring.submit_and_wait(len(chunk) - got)
        mm = lease.mm
        for k, (i, f, _fd, off, ln, start, span, pos) in enumerate(chunk):
            res = res_of[k]
            assert res is not None, "every sqe of the chunk has completed"
            if res < 0:
                err = OSError(-res, os.strerror(-res))
                raise from_oserror(f"io_uring read({ln} bytes at {off})", f.path, err) from err
            data = mm[pos:pos + res]
            if res < span:  # short: EOF, or the kernel stopped early; pread the rest
                data += f.read(start + res, span - res)
            skip = off - start
            results[i] = data[skip:skip + ln] if (skip or len(data) > ln) else data

    def describe(self) -> dict[str, object]:
        info = super().describe()
        info["io_uring_entries"] = self.ring_entries
        info["io_uring_opcode"] = "READ" if self.opcode == IORING_OP_READ else "READV"
        return info

    def close(self) -> None:
        """Unmap and close every idle ring; rings in use close when returned.  Idempotent."""
        with self._mu:
            self._closed = True
            idle, self._idle = self._idle, []
        for lease in idle:
            lease.close()
