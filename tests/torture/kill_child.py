"""The writer process of the kill -9 harness (run as ``python -m tests.torture.kill_child
ARGS_JSON``; killed with SIGKILL at a random moment by :mod:`tests.torture.kill`).

``ARGS_JSON`` holds ``store``, ``log`` (directories), ``journal`` (the expected-state
file, :mod:`tests.torture.journal`), ``checkpoints`` (a directory for checkpoints),
``round``, ``seed`` and ``options`` (store options).  The child opens the store and a
Log beside it, then runs a random workload forever, journalling every operation:

* ``w``: a put, a delete, a ``delete_range`` (``r``; ``e`` lists the keys it covers as
  deletes), or an atomic batch across keyspaces (``e`` = entries, ``s`` =
  the ``sync=`` argument, ``d`` = whether the store promises durability on return);
* ``log``: ``append``/``append_many`` of ``k`` records to the Log (``s``, ``d`` as above);
* ``ltrunc``: ``Log.truncate_before(seq)``;
* ``ckpt``: ``store.checkpoint(dir)``; ``flush``; ``compact``;
* ``snap``: a snapshot is read, writes go on, and it is read again: the child itself
  checks that the answers did not change (and that a write reads back at its own
  version), and exits with status 3 and a ``fail`` record if not.

On SIGUSR1 the child dumps every thread's stack to stderr (the parent asks for it
before killing a child that stopped making progress).
"""

from __future__ import annotations

import faulthandler
import json
import os
import random
import signal
import sys
from typing import Any

from tests.torture.expected import KEYSPACES, entries_of, key, log_record
from tests.torture.journal import Journal

SIZES = (0, 1, 12, 40, 100, 300, 1500, 5000, 20_000)


def _durable(sync: bool | None, wal_sync: str) -> bool:
    return bool(sync) or (sync is None and wal_sync == "always")


class Writer:
    """One round's workload against an open store and Log."""

    def __init__(self, args: dict[str, Any]) -> None:
        import banyanstore
        from banyanstore.log import Log

        self.args = args
        self.rng = random.Random(args["seed"])
        self.round = args["round"]
        opts = args["options"]
        self.wal_sync = opts["wal_sync"]
        self.store = banyanstore.open(args["store"], **opts)
        self.spaces = [self.store.keyspace(name) for name in KEYSPACES]
        log_opts = {k: opts[k] for k in ("io_mode", "wal_sync", "wal_sync_interval_ms", "segment_size")}
        self.log = Log.open(args["log"], **log_opts)
        self.journal = Journal(args["journal"])
        self.journal.record({"open": self.store.version, "log_last": self.log.last_seq,
                             "log_first": self.log.first_seq, "pid": os.getpid()}, durable=True)
        self.n = 0
        self.n_keys = args.get("keys", 400)
        self.snapshots: list[tuple[Any, list[Any]]] = []

    def fail(self, what: str) -> None:
        self.journal.record({"fail": what}, durable=True)
        sys.stderr.write(f"torture child: {what}\n")
        sys.stderr.flush()
        os._exit(3)

    # -- operations ---------------------------------------------------------------------
    def write(self) -> None:
        rng = self.rng
        kind = rng.random()
        if kind < 0.03:
            self.delete_range()
            return
        count = 1 if kind < 0.7 else rng.randrange(1, 9)
        spec = []
        for _ in range(count):
            size = -1 if rng.random() < 0.15 else rng.choice(SIZES)
            spec.append([rng.randrange(len(KEYSPACES)), rng.randrange(self.n_keys), size])
        batch = count > 1 or rng.random() < 0.1
        sync = rng.choice((None, None, None, True, False))
        n = self.n
        self.journal.intent(n, "w", e=spec, b=batch, s=sync, d=_durable(sync, self.wal_sync))
        entries = entries_of(self.round, n, spec)
        if batch:
            with self.store.batch(sync=sync) as b:
                for (ks, k), v in entries.items():
                    if v is None:
                        b.delete(k, keyspace=KEYSPACES[ks])
                    else:
                        b.put(k, v, keyspace=KEYSPACES[ks])
            version = b.version
        else:
            (ks, k), v = next(iter(entries.items()))
            space = self.spaces[ks]
            version = space.delete(k, sync=sync) if v is None else space.put(k, v, sync=sync)
        self.journal.ack(n, durable=_durable(sync, self.wal_sync), v=version)
        if rng.random() < 0.1:
            for (ks, k), v in entries.items():
                got = self.spaces[ks].get(k, version=version)
                if got != v:
                    self.fail(f"op {n}: {KEYSPACES[ks]}/{k!r} at its version {version} reads {got!r}")

    def delete_range(self) -> None:
        """A range tombstone over key numbers ``lo .. hi - 1``: journaled as a delete of
        each of those keys at its version, which is exactly what it does (the torture
        store holds no other keys between them, and nothing else shares its version)."""
        rng = self.rng
        ks, lo = rng.randrange(len(KEYSPACES)), rng.randrange(self.n_keys)
        hi = min(self.n_keys, lo + rng.choice((1, 4, 20, 80)))
        sync = rng.choice((None, None, True, False))
        n = self.n
        self.journal.intent(n, "w", e=[[ks, k, -1] for k in range(lo, hi)], b=False, s=sync,
                            d=_durable(sync, self.wal_sync), r=True)
        version = self.spaces[ks].delete_range(key(lo), key(hi), sync=sync)
        self.journal.ack(n, durable=_durable(sync, self.wal_sync), v=version)
        if rng.random() < 0.1 and self.spaces[ks].get(key(lo), version=version) is not None:
            self.fail(f"op {n}: {KEYSPACES[ks]}/{key(lo)!r} reads a value after its range delete")

    def log_append(self) -> None:
        rng = self.rng
        count = rng.choice((1, 1, 1, 3, 20))
        sync = rng.choice((None, True, False))
        n = self.n
        first = self.log.last_seq + 1
        records = [log_record(s) for s in range(first, first + count)]
        self.journal.intent(n, "log", k=count, first=first, s=sync, d=_durable(sync, self.wal_sync))
        if count == 1:
            seq = self.log.append(records[0], sync=sync)
        else:
            seq = self.log.append_many(records, sync=sync)
        if seq != first + count - 1:
            self.fail(f"op {n}: log append of seqs {first}.. returned {seq}")
        self.journal.ack(n, durable=_durable(sync, self.wal_sync), seq=seq)

    def log_truncate(self) -> None:
        log = self.log
        if log.last_seq < log.first_seq:
            return
        seq = self.rng.randrange(log.first_seq, log.last_seq + 1)
        self.journal.intent(self.n, "ltrunc", seq=seq)
        log.truncate_before(seq)
        self.journal.ack(self.n, durable=False)

    def checkpoint(self) -> None:
        name = f"r{self.round}-{self.n}"
        self.journal.intent(self.n, "ckpt", dir=name)
        version = self.store.checkpoint(os.path.join(self.args["checkpoints"], name))
        self.journal.ack(self.n, durable=True, v=version)

    def flush(self) -> None:
        self.journal.intent(self.n, "flush")
        self.store.flush()
        self.journal.ack(self.n, durable=True)

    def compact(self) -> None:
        self.journal.intent(self.n, "compact")
        self.store.compact()
        self.journal.ack(self.n, durable=True)

    def snapshot_reads(self, snap: Any) -> list[Any]:
        rng = random.Random(snap.version)  # the same reads each time for this snapshot
        keys = [key(rng.randrange(self.n_keys)) for _ in range(10)]
        out: list[Any] = []
        for ks in KEYSPACES:
            out.append(snap.multi_get(keys, keyspace=ks))
            out.append(list(snap.scan(keyspace=ks, limit=30)))
            out.append(list(snap.scan(keyspace=ks, reverse=True, limit=10)))
        return out

    def snapshot(self) -> None:
        if self.snapshots and (len(self.snapshots) >= 3 or self.rng.random() < 0.5):
            snap, first = self.snapshots.pop(self.rng.randrange(len(self.snapshots)))
            again = self.snapshot_reads(snap)
            if again != first:
                self.fail(f"snapshot at version {snap.version} is not repeatable")
            snap.close()
        else:
            snap = self.store.snapshot()
            self.snapshots.append((snap, self.snapshot_reads(snap)))

    def run(self) -> None:
        rng = self.rng
        table = ((0.72, self.write), (0.84, self.log_append), (0.92, self.snapshot),
                 (0.94, self.log_truncate), (0.95, self.checkpoint), (0.98, self.flush),
                 (1.0, self.compact))
        while True:
            r = rng.random()
            for limit, op in table:
                if r < limit:
                    op()
                    break
            self.n += 1


def main() -> None:
    faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    args = json.loads(sys.argv[1])
    Writer(args).run()


if __name__ == "__main__":
    main()
