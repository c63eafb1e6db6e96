"""A minimal ctypes binding of the raw io_uring system calls (stdlib only).

Only what :mod:`banyanstore.io.uring` needs: set a ring up, map its SQ/CQ
rings, submit reads (and NOPs), wait for and reap completions, probe opcodes.
No SQPOLL and no registered buffers: every submission goes through
``io_uring_enter``, so the syscall itself orders our ring stores against the
kernel's loads (no explicit memory barriers are needed from Python).

Why not the PyPI ``liburing`` package: it holds the GIL while waiting and
mis-indexes completions once the ring wraps.  ``ctypes.CDLL`` functions
release the GIL for the duration of the call.

Layouts follow ``include/uapi/linux/io_uring.h``; sizes are asserted below.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import platform
import struct
import time

__all__ = ["Ring", "syscall_numbers", "IORING_OP_NOP", "IORING_OP_READV", "IORING_OP_READ",
           "IORING_FEAT_SINGLE_MMAP", "SQE", "CQE", "IOVEC"]

# Syscall numbers share the "generic" table on x86_64 and aarch64 (>= 425).
_SYSCALLS = {"x86_64": (425, 426, 427), "aarch64": (425, 426, 427), "arm64": (425, 426, 427)}

IORING_OP_NOP = 0
IORING_OP_READV = 1
IORING_OP_READ = 22
IORING_ENTER_GETEVENTS = 1 << 0
IORING_FEAT_SINGLE_MMAP = 1 << 0
IORING_REGISTER_PROBE = 8
IO_URING_OP_SUPPORTED = 1 << 0
IORING_OFF_SQ_RING = 0
IORING_OFF_CQ_RING = 0x8000000
IORING_OFF_SQES = 0x10000000

# struct io_uring_params: 10 u32 (sq_entries .. resv[3]), then io_sqring_offsets
# (7 u32 + resv1 u32 + user_addr u64) and io_cqring_offsets (8 u32 incl. resv1 + user_addr u64).
PARAMS = struct.Struct("<10I" "8IQ" "8IQ")
# struct io_uring_sqe: opcode, flags, ioprio, fd, off, addr, len, rw_flags, user_data,
# buf_index, personality, splice_fd_in, addr3, __pad2[1].
SQE = struct.Struct("<BBHiQQIIQHHiQQ")
CQE = struct.Struct("<QiI")  # user_data, res, flags
IOVEC = struct.Struct("<QQ")  # iov_base, iov_len
PROBE_HEADER = struct.Struct("<BBH3I")  # last_op, ops_len, resv, resv2[3]
PROBE_OP = struct.Struct("<BBHI")  # op, resv, flags, resv2
U32 = struct.Struct("<I")
assert PARAMS.size == 120 and SQE.size == 64 and CQE.size == 16 and IOVEC.size == 16
assert PROBE_HEADER.size == 16 and PROBE_OP.size == 8

_PROBE_OPS = 256
TRANSIENT_RETRY_S = 2.0
"""How long ``io_uring_enter`` failing with EAGAIN or EBUSY is retried before the
error goes up (a kernel still out of memory after that is not transient)."""
_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long


def syscall_numbers() -> tuple[int, int, int] | None:
    """``(setup, enter, register)`` for this machine, or None if unknown."""
    if platform.system() != "Linux":
        return None
    return _SYSCALLS.get(platform.machine())


def _check(ret: int) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


class Ring:
    """One io_uring instance.  NOT thread-safe: one user at a time (see ``UringEnv``).

    Usage per batch: :meth:`prep` up to ``free_slots`` sqes, then :meth:`submit_and_wait`,
    then :meth:`reap` until every submitted sqe has completed.
    """

    def __init__(self, entries: int) -> None:
        nums = syscall_numbers()
        if nums is None:
            raise OSError(38, f"io_uring syscall numbers unknown on {platform.machine()}")
        self._nr_setup, self._nr_enter, self._nr_register = nums
        params = ctypes.create_string_buffer(PARAMS.size)
        self.fd = _check(_syscall(ctypes.c_long(self._nr_setup), ctypes.c_long(entries), params))
        self._maps: list[mmap.mmap] = []
        try:
            self._map_rings(PARAMS.unpack(params.raw))
        except BaseException:
            self.close()
            raise
        self.pending = 0  # submitted but not yet reaped

    def _map_rings(self, p: tuple[int, ...]) -> None:
        self.sq_entries, self.cq_entries, _flags, _cpu, _idle, self.features = p[:6]
        sq_off, cq_off = p[10:19], p[19:28]
        sq_size = sq_off[6] + self.sq_entries * 4  # array offset + u32 per entry
        cq_size = cq_off[5] + self.cq_entries * CQE.size  # cqes offset + cqes
        prot, flags = mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_SHARED | mmap.MAP_POPULATE
        if self.features & IORING_FEAT_SINGLE_MMAP:  # one mapping serves both rings
            sq = cq = mmap.mmap(self.fd, max(sq_size, cq_size), flags, prot, offset=IORING_OFF_SQ_RING)
            self._maps.append(sq)
        else:
            sq = mmap.mmap(self.fd, sq_size, flags, prot, offset=IORING_OFF_SQ_RING)
            self._maps.append(sq)
            cq = mmap.mmap(self.fd, cq_size, flags, prot, offset=IORING_OFF_CQ_RING)
            self._maps.append(cq)
        self._sqes = mmap.mmap(self.fd, self.sq_entries * SQE.size, flags, prot, offset=IORING_OFF_SQES)
        self._maps.append(self._sqes)
        self._sq, self._cq = sq, cq
        self._sq_head, self._sq_tail, self._sq_array = sq_off[0], sq_off[1], sq_off[6]
        self._sq_mask = U32.unpack_from(sq, sq_off[2])[0]
        self._cq_head, self._cq_tail, self._cqes = cq_off[0], cq_off[1], cq_off[5]
        self._cq_mask = U32.unpack_from(cq, cq_off[2])[0]
        # We always fill sqe slot (tail & mask), so the indirection array is the identity.
        for i in range(self.sq_entries):
            U32.pack_into(sq, self._sq_array + 4 * i, i)
        self._to_submit = 0

    # -- submission ------------------------------------------------------------------
    @property
    def free_slots(self) -> int:
        """SQEs that can be prepared now without overrunning the CQ either."""
        return min(self.sq_entries - self._to_submit, self.cq_entries - self.pending - self._to_submit)

    def prep(self, opcode: int, fd: int, offset: int, addr: int, length: int, user_data: int) -> None:
        """Write one sqe at the SQ tail and publish it.  REQUIRES: ``free_slots > 0``."""
        assert self.free_slots > 0, "ring full: submit and reap first"
        tail = U32.unpack_from(self._sq, self._sq_tail)[0]
        slot = tail & self._sq_mask
        SQE.pack_into(self._sqes, slot * SQE.size, opcode, 0, 0, fd, offset, addr, length, 0,
                      user_data, 0, 0, 0, 0, 0)
        # u32 counters wrap at 2**32; the masks above make the slot index wrap with them.
        U32.pack_into(self._sq, self._sq_tail, (tail + 1) & 0xFFFFFFFF)
        self._to_submit += 1

    def submit_and_wait(self, min_complete: int) -> None:
        """Submit every prepared sqe and wait until ``min_complete`` cqes are ready.

        Retries on EINTR, and when the kernel takes fewer sqes than offered.
        REQUIRES: ``min_complete <= pending + prepared``.
        """
        while True:
            ret = self._enter(self._to_submit, min_complete)
            self._to_submit -= ret
            self.pending += ret
            if self._to_submit == 0 and self.ready() >= min_complete:
                return

    def drain(self) -> bool:
        """Wait until every submitted sqe has completed and drop the completions (sqes
        prepared but never submitted stay unknown to the kernel).  False if the wait
        fails: reads may then still be in flight."""
        try:
            while self.pending:
                self._enter(0, self.pending)
                self.reap()
        except OSError:
            return False
        return True

    def _enter(self, to_submit: int, min_complete: int) -> int:
        """One ``io_uring_enter`` with GETEVENTS; the number of sqes it took.  EINTR (the
        wait was interrupted; completions are not lost) is retried at once; EAGAIN (the
        kernel could not allocate for the request) and EBUSY (completions it could not
        post yet) after a growing pause, for up to TRANSIENT_RETRY_S in all -- the man
        page's "wait and try again": both clear by themselves, and failing the read
        would fail a user's multi_get or count against a merge."""
        paused = delay = 0.0
        while True:
            ret = _syscall(ctypes.c_long(self._nr_enter), ctypes.c_long(self.fd),
                           ctypes.c_long(to_submit), ctypes.c_long(min_complete),
                           ctypes.c_long(IORING_ENTER_GETEVENTS), None, ctypes.c_long(0))
            if ret >= 0:
                return int(ret)
            err = ctypes.get_errno()
            if err == errno.EINTR:
                continue
            if err not in (errno.EAGAIN, errno.EBUSY) or paused >= TRANSIENT_RETRY_S:
                raise OSError(err, os.strerror(err))
            delay = min(max(2 * delay, 1e-4), 0.01)
            time.sleep(delay)
            paused += delay

    def ready(self) -> int:
        """Completions waiting in the CQ."""
        head = U32.unpack_from(self._cq, self._cq_head)[0]
        tail = U32.unpack_from(self._cq, self._cq_tail)[0]
        return (tail - head) & 0xFFFFFFFF

    def reap(self) -> list[tuple[int, int]]:
        """Take every ready completion as ``(user_data, res)`` and advance the CQ head."""
        cq = self._cq
        head = U32.unpack_from(cq, self._cq_head)[0]
        tail = U32.unpack_from(cq, self._cq_tail)[0]
        out = []
        while head != tail:
            user_data, res, _flags = CQE.unpack_from(cq, self._cqes + (head & self._cq_mask) * CQE.size)
            out.append((user_data, res))
            head = (head + 1) & 0xFFFFFFFF
        U32.pack_into(cq, self._cq_head, head)  # hand the slots back to the kernel
        self.pending -= len(out)
        return out

    # -- registration ---------------------------------------------------------------
    def supported_ops(self) -> set[int]:
        """Opcodes the kernel supports (IORING_REGISTER_PROBE, Linux >= 5.6)."""
        buf = ctypes.create_string_buffer(PROBE_HEADER.size + _PROBE_OPS * PROBE_OP.size)
        _check(_syscall(ctypes.c_long(self._nr_register), ctypes.c_long(self.fd),
                        ctypes.c_long(IORING_REGISTER_PROBE), buf, ctypes.c_long(_PROBE_OPS)))
        raw = buf.raw
        ops_len = PROBE_HEADER.unpack_from(raw, 0)[1]
        ops = set()
        for i in range(ops_len):
            op, _r, flags, _r2 = PROBE_OP.unpack_from(raw, PROBE_HEADER.size + i * PROBE_OP.size)
            if flags & IO_URING_OP_SUPPORTED:
                ops.add(op)
        return ops

    def close(self) -> None:
        """Unmap the rings and close the ring fd.  Idempotent."""
        for m in self._maps:
            m.close()
        self._maps = []
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)
