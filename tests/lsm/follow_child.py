"""The writer process of tests/lsm/test_follower.py (run as a script; killed at the end).

Usage: ``python follow_child.py STORE_DIR churn`` or ``python follow_child.py STORE_DIR model SEED``.

Both modes use a tiny memtable, tiny WAL segments and eager merges, so flushes, WAL
cuts, merges and table deletions happen every few milliseconds under the readers.

* ``churn``: batch ``i`` (version ``i + 1``) writes ``k:<i % KEYS>`` = :func:`churn_value`
  ``(i)`` in the default keyspace, ``i:<i % KEYS>`` = ``i`` in ``index``, and ``last`` =
  ``i``: a reader at version ``v`` can check every key against ``v`` alone
  (:func:`check_churn`).  Never synced: as fast as it goes.
* ``model``: the operations of :func:`model_ops` ``(SEED)`` -- puts, deletes and
  cross-keyspace batches, with ``flush()`` and ``compact()`` among them; every 8
  operations, ``sync()`` and then ``ack <version>`` on stdout (every write up to that
  version is acknowledged).  The n-th versioned operation gets version n.

Prints ``ready <version>`` once the store (with its ``index`` keyspace) is open.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from typing import Any

KEYS = 500
OPTIONS = dict(io_mode="sync", memtable_size=64 * 1024, block_size=1024, segment_size=64 * 1024,
               compaction_min_width=2, compaction_max_width=4, compaction_mode="thread",
               max_tables_before_slowdown=8, max_tables_before_stall=64)

Op = tuple[str, str, bytes, bytes | None]  # (kind, keyspace, key, value or None)


def churn_value(i: int) -> bytes:
    return b"%d:" % i * (1 + i % 13)


def check_churn(get: Any, version: int, rng: random.Random, lost: frozenset[int] = frozenset()) -> None:
    """Assert what a reader of the churn store must see at ``version``; ``get(key,
    keyspace)`` reads at that version.  Batch i has version i + 1; the batches in
    ``lost`` were never written (their versions were lost with a killed writer's
    buffer, and a restarted writer does not reuse them)."""
    if version == 0:
        return
    i_last = version - 1
    if i_last not in lost:
        assert get(b"last", "default") == b"%d" % i_last, version
    for _ in range(8):
        i = i_last - rng.randrange(min(KEYS, version))  # the last write of key i % KEYS
        while i in lost:
            i -= KEYS
        if i < 0:
            continue
        assert get(b"k:%04d" % (i % KEYS), "default") == churn_value(i), (version, i)
        assert get(b"i:%04d" % (i % KEYS), "index") == b"%d" % i, (version, i)


def model_ops(seed: int) -> Iterator[tuple[str, list[Op]]]:
    """An endless stream of ``(kind, ops)``: kind ``write`` (one version: a put, a
    delete or a batch of ops) or ``flush``/``compact`` (no version)."""
    rng = random.Random(seed)
    n = 0
    while True:
        n += 1
        if n % 97 == 0:
            yield "flush", []
            continue
        if n % 389 == 0:
            yield "compact", []
            continue
        count = 1 if rng.random() < 0.6 else rng.randint(2, 6)
        ops: list[Op] = []
        for _ in range(count):
            ks = "default" if rng.random() < 0.7 else "index"
            key = b"m:%03d" % rng.randrange(300)
            value = None if rng.random() < 0.15 else b"%d-" % n * rng.randint(1, 40)
            ops.append(("put" if value is not None else "delete", ks, key, value))
        yield "write", ops


def main() -> None:
    import banyanstore

    path, mode = sys.argv[1], sys.argv[2]
    store = banyanstore.open(path, **OPTIONS, wal_sync="never")
    index = store.keyspace("index")
    out = sys.stdout
    out.write(f"ready {store.version}\n")
    out.flush()
    if mode == "churn":
        i = store.version  # after a restart: batch i has version i + 1 all the same
        while True:
            with store.batch() as b:
                b.put(b"k:%04d" % (i % KEYS), churn_value(i))
                b.put(b"i:%04d" % (i % KEYS), b"%d" % i, keyspace=index)
                b.put(b"last", b"%d" % i)
            i += 1
    for n, (kind, ops) in enumerate(model_ops(int(sys.argv[3]))):
        if kind == "flush":
            store.flush()
        elif kind == "compact":
            store.compact()
        else:
            with store.batch() as b:
                for _op, ks, key, value in ops:
                    if value is None:
                        b.delete(key, keyspace=ks)
                    else:
                        b.put(key, value, keyspace=ks)
        if n % 8 == 7:  # acknowledge in groups, after one sync for the group
            store.sync()
            out.write(f"ack {store.version}\n")
            out.flush()


if __name__ == "__main__":
    main()
