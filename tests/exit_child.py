"""The writer process of tests/test_exit_durability.py (run as a script).

Usage: ``python exit_child.py KIND PATH IO_MODE WAL_SYNC END`` with KIND ``store`` or
``log`` and END ``exit`` or ``kill``.  It opens a store (or a Log) with default options
but for ``io_mode`` and ``wal_sync`` (and a long ``wal_sync_interval_ms``, so that no
background sync happens to rescue a buffered write while the test runs), runs the
scripted writes of :func:`script` without ``sync``, and prints ``done``.  Then:

* ``exit``: returns from the script normally, *without* ``close()`` -- the handle stays
  referenced by a module global, as in a plain script;
* ``kill``: keeps writing extra records, printing ``ack N`` only after the call for
  extra record ``N`` returned, until the parent SIGKILLs it.
"""

from __future__ import annotations

import sys
from typing import Any

N_PUTS, N_DELETES, N_BATCHES = 1000, 100, 50


def key(i: int) -> bytes:
    return b"key:%06d" % i


def value(i: int) -> bytes:
    return b"value %d " % i * (1 + i % 7)


def extra(n: int) -> bytes:
    return b"extra:%06d" % n


def expected_store() -> dict[bytes, bytes]:
    """What the store holds after :func:`script` (before any extra record)."""
    out = {key(i): value(i) for i in range(N_DELETES, N_PUTS)}
    for b in range(N_BATCHES):
        out[b"batch:%04d:a" % b] = value(b)
        out[b"batch:%04d:b" % b] = value(b + 1)
        out.pop(key(N_DELETES + b), None)
    return out


def expected_log() -> list[bytes]:
    """The records of the Log after :func:`script`, seq 1 first."""
    return [value(i) for i in range(N_PUTS)] + [b"batch %d/%d" % (b, j) for b in range(N_BATCHES)
                                                for j in range(3)]


def script(kind: str, handle: Any) -> None:
    if kind == "store":
        for i in range(N_PUTS):
            handle.put(key(i), value(i))
        for i in range(N_DELETES):
            handle.delete(key(i))
        for b in range(N_BATCHES):
            with handle.batch() as batch:
                batch.put(b"batch:%04d:a" % b, value(b))
                batch.put(b"batch:%04d:b" % b, value(b + 1))
                batch.delete(key(N_DELETES + b))
    else:
        for i in range(N_PUTS):
            handle.append(value(i))
        for b in range(N_BATCHES):
            handle.append_many([b"batch %d/%d" % (b, j) for j in range(3)])


HANDLE: Any = None  # a module global: the program "forgets" to close it


def main() -> None:
    global HANDLE
    import banyanstore

    kind, path, io_mode, wal_sync, end = sys.argv[1:6]
    opts = dict(io_mode=io_mode, wal_sync=wal_sync, wal_sync_interval_ms=600_000)
    HANDLE = banyanstore.open(path, **opts) if kind == "store" else banyanstore.open_log(path, **opts)
    script(kind, HANDLE)
    print("done", flush=True)
    if end == "kill":
        n = 0
        while True:
            if kind == "store":
                HANDLE.put(extra(n), value(n))
            else:
                HANDLE.append(extra(n))
            print(f"ack {n}", flush=True)
            n += 1


if __name__ == "__main__":
    main()
