"""CRC-32C, the checksum of every banyanstore format.

With the compiled core in use (accel.py) this is the core's own (SSE4.2 instructions in
three interleaved chains, the one its table reads and log framing use), else the
``crc32c`` package's: the same function (tests/log/test_native_framing.py compares them
on random data and seeds).  A program on the compiled core thus never imports the
package, which loads ``importlib.metadata`` with it: about 5 MiB of memory.

>>> hex(crc32c(b"123456789"))
'0xe3069283'
>>> crc32c(b"6789", crc32c(b"12345")) == crc32c(b"123456789")
True
"""

from __future__ import annotations

from collections.abc import Callable

from . import accel

__all__ = ["crc32c"]

crc32c: Callable[..., int]
"""``crc32c(data, value=0)``: the CRC-32C of the bytes-like ``data``, continuing ``value``."""

if accel.native is not None:
    crc32c = accel.native.crc32c
else:
    from crc32c import crc32c as _package_crc32c

    crc32c = _package_crc32c
