"""Minimal reproductions of bugs the torture harness found in areas other engineers
are changing.  Each is ``xfail(strict=True)`` until its fix lands; then the mark goes
(and the test may move next to the code it checks)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from banyanstore.errors import CorruptionError


@pytest.mark.xfail(strict=True, reason="backups/waltail.read_tail reads a record of the length its "
                                       "header claims: a corrupt length allocates up to 4 GiB")
def test_wal_tail_record_length_is_checked_before_it_is_read(tmp_path: Path) -> None:
    """A WAL tail object (untrusted input at restore time, docs/backup.md) whose first
    record claims 2 GiB: ``read_tail`` must report the damage without allocating the
    claimed length (found by the ``backup.waltail`` decoder of tests/torture/fuzz.py,
    as MemoryError under its address-space limit)."""
    from banyanstore.backups.waltail import TailWriter, read_tail
    from banyanstore.lsm.wal import encode_one

    path = tmp_path / "tail"
    with open(path, "wb") as out:
        TailWriter(out).add(encode_one(5, 0, 0, b"k", b"v"), 5)
    data = bytearray(path.read_bytes())
    data[16:20] = (0x7FFFFFFF).to_bytes(4, "little")  # the first record's length field
    path.write_bytes(bytes(data))
    tracemalloc.start()
    try:
        with open(path, "rb") as src, pytest.raises(CorruptionError):
            list(read_tail(src, str(path), records=1, first_version=5, last_version=5, keyspaces={0}))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"reading a damaged tail allocated {peak >> 20} MiB"
