"""The writer process of tests/lsm/test_kill9.py (run as a script, killed with SIGKILL).

Usage: ``python kill9_child.py STORE_DIR FIRST_BATCH MODE IO_MODE`` where MODE is ``write``
(batches forever) or ``compact`` (batches, with ``compact()`` calls in between) and
IO_MODE the store's ``io_mode``.

Each batch ``b`` spans two keyspaces -- ``default`` gets ``b:<b>:<j>`` for j < PARTS,
``index`` gets ``i:<b>`` -- with values derived from ``b`` (see :func:`expected`), is
committed with ``sync=True``, and only then reported on stdout as ``ack <version> <b>``
(flushed at once), so every line the parent reads is an acknowledged durable batch.
"""

from __future__ import annotations

import sys

PARTS = 3
OPTIONS = dict(io_mode="sync", memtable_size=64 * 1024, block_size=1024, wal_sync="never",
               compaction_min_width=2, compaction_max_width=4, history_retention=1e9,
               max_tables_before_slowdown=8, max_tables_before_stall=64)


def expected(b: int) -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
    """The entries batch ``b`` writes: ``(default keyspace, index keyspace)``."""
    default = {b"b:%08d:%d" % (b, j): (b"%d/%d:" % (b, j)) * (20 + b % 40) for j in range(PARTS)}
    index = {b"i:%08d" % b: b"%d" % b}
    return default, index


def main() -> None:
    import banyanstore

    path, first, mode, io_mode = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    store = banyanstore.open(path, **dict(OPTIONS, io_mode=io_mode))
    out = sys.stdout
    out.write(f"open {store.version}\n")
    out.flush()
    b = first
    while True:
        default, index = expected(b)
        with store.batch(sync=True) as batch:
            for k, v in default.items():
                batch.put(k, v)
            for k, v in index.items():
                batch.put(k, v, keyspace="index")
        out.write(f"ack {batch.version} {b}\n")
        out.flush()
        b += 1
        if mode == "compact" and b % 150 == 0:
            out.write("compact start\n")
            out.flush()
            store.compact()
            out.write("compact end\n")
            out.flush()


if __name__ == "__main__":
    main()
