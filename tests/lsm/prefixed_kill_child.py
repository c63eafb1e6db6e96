"""The writer of tests/lsm/test_prefixed_kill9.py (``python prefixed_kill_child.py PATH
WAL_SYNC``): batches that mix three prefix views -- two of the default keyspace, one
of keyspace ``idx`` -- until it is SIGKILLed.  Batch ``g`` puts key ``%08d`` and
``latest`` = ``g`` in every view and deletes the previous generation's ``gone/`` keys
of view ``c`` with a range delete; once it is committed, ``g`` is printed (the
parent's acknowledgement).  Generations go on from what the store holds."""

from __future__ import annotations

import sys

import banyanstore


def main() -> None:
    path, wal_sync = sys.argv[1], sys.argv[2]
    store = banyanstore.open(path, wal_sync=wal_sync, memtable_size=64 * 1024, block_size=1024,
                             compaction_min_width=2, compaction_max_width=4)
    views = (store.prefixed(b"a/"), store.keyspace("idx").prefixed(b"\xff"), store.prefixed(b"c/"))
    last = views[0].get(b"latest")
    g = 0 if last is None else int(last) + 1
    while True:
        value = b"%d" % g
        with store.batch() as batch:
            for view in views:
                writes = view.in_batch(batch)
                writes.put(b"%08d" % g, value * 20)
                writes.put(b"latest", value)
            gone = views[2].prefixed(b"gone/").in_batch(batch)
            gone.delete_range(b"", b"\xff")
            gone.put(b"%08d" % g, value)
        sys.stdout.write(f"{g}\n")
        sys.stdout.flush()
        g += 1


if __name__ == "__main__":
    main()
