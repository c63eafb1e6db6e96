"""Does io_uring work here?  :func:`probe_io_uring` answers with None or the reason.

io_uring can be missing (Linux < 5.1), switched off (``kernel.io_uring_disabled``),
filtered by seccomp (Docker's default profile), starved of locked memory, or
lack the opcodes we need.  The probe tries what the backend will do: set a
ring up, ask which opcodes exist (IORING_REGISTER_PROBE), round-trip a NOP,
and, with ``direct_io``, read one aligned block of an O_DIRECT file through
the ring.  Results are cached per process (the answer does not change), except
for the ``BANYANSTORE_TEST_DISABLE_IO_URING=1`` switch that tests use to force
the fallback path.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import tempfile
import threading
from typing import Any

from .direct import DIRECT_ALIGN
from .uring import reason_for
from .uring_ring import IORING_OP_NOP, IORING_OP_READ, IORING_OP_READV, Ring, syscall_numbers

__all__ = ["probe_io_uring", "DISABLE_ENV_VAR"]

DISABLE_ENV_VAR = "BANYANSTORE_TEST_DISABLE_IO_URING"
_NOP_TAG = 0xB4_11A4  # any value: we check it comes back unchanged

_cache: dict[tuple[bool, str | None], str | None] = {}
_cache_mu = threading.Lock()


def probe_io_uring(options: Any = None, *, directory: str | None = None) -> str | None:
    """None if the ``io_uring`` backend works here, else why not.

    ``options.direct_io`` (if set) adds an O_DIRECT read test in ``directory``
    (default: the temp dir).  ``options`` may be None.
    """
    if os.environ.get(DISABLE_ENV_VAR, "") not in ("", "0"):
        return f"io_uring disabled by the environment ({DISABLE_ENV_VAR}=1)"
    direct = bool(getattr(options, "direct_io", False))
    key = (direct, directory if direct else None)
    with _cache_mu:
        if key not in _cache:
            _cache[key] = _probe(direct, directory)
        return _cache[key]


def _probe(direct: bool, directory: str | None) -> str | None:
    if syscall_numbers() is None:
        return "io_uring syscall numbers are unknown on this platform (Linux x86_64/aarch64 only)"
    try:
        ring = Ring(8)
    except OSError as exc:
        return reason_for(exc)
    try:
        try:
            ops = ring.supported_ops()
        except OSError as exc:
            return reason_for(exc, "IORING_REGISTER_PROBE") + " (needs Linux >= 5.6)"
        if IORING_OP_READ not in ops and IORING_OP_READV not in ops:
            return "io_uring supports neither IORING_OP_READ nor IORING_OP_READV"
        try:
            ring.prep(IORING_OP_NOP, -1, 0, 0, 0, _NOP_TAG)
            ring.submit_and_wait(1)
            cqes = ring.reap()
        except OSError as exc:
            return reason_for(exc, "io_uring_enter")
        if cqes != [(_NOP_TAG, 0)]:
            return f"io_uring NOP round-trip returned {cqes!r}"
        if direct:
            return _probe_direct(ring, IORING_OP_READ if IORING_OP_READ in ops else IORING_OP_READV,
                                 directory)
        return None
    finally:
        ring.close()


def _probe_direct(ring: Ring, opcode: int, directory: str | None) -> str | None:
    """Write one block, read it back with O_DIRECT through the ring."""
    block = bytes(range(256)) * (DIRECT_ALIGN // 256)
    try:
        fd, path = tempfile.mkstemp(prefix=".banyanstore-probe-", dir=directory)
    except OSError as exc:
        return f"cannot create a probe file for O_DIRECT: {exc}"
    buf = mmap.mmap(-1, DIRECT_ALIGN)
    anchor = ctypes.c_char.from_buffer(buf)
    try:
        os.write(fd, block)
        os.close(fd)
        fd = -1
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
        except OSError as exc:
            return f"O_DIRECT is not supported on {os.path.dirname(path)}: {exc}"
        addr = ctypes.addressof(anchor)
        if opcode == IORING_OP_READV:
            iov = ctypes.create_string_buffer(16)
            ctypes.memmove(iov, ctypes.byref(ctypes.c_uint64(addr)), 8)
            ctypes.memmove(ctypes.addressof(iov) + 8, ctypes.byref(ctypes.c_uint64(DIRECT_ALIGN)), 8)
            ring.prep(opcode, fd, 0, ctypes.addressof(iov), 1, 1)
        else:
            ring.prep(opcode, fd, 0, addr, DIRECT_ALIGN, 1)
        try:
            ring.submit_and_wait(1)
        except OSError as exc:
            return reason_for(exc, "io_uring_enter")
        cqes = ring.reap()
        if cqes != [(1, DIRECT_ALIGN)] or buf[:] != block:
            return f"O_DIRECT read through io_uring failed: {cqes!r}"
        return None
    finally:
        if fd >= 0:
            os.close(fd)
        del anchor
        buf.close()
        os.unlink(path)
