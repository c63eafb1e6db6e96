"""The writer of tests/lsm/test_kill9_mixed.py (``python mixed_kill_child.py ARGS_JSON``):
random operations the torture harness does not make -- keyspaces created (with a TTL),
given a new TTL, dropped and created again, history floors raised, snapshots held --
beside puts, deletes, range deletes, batches across keyspaces, flushes, merges and
checkpoints, until it is SIGKILLed.

Every operation is journalled with one ``os.write`` per line: ``{"i": N, "op": ...}``
before it starts, ``{"a": N}`` once it returned (the kernel keeps both when the process
dies, as it keeps the WAL's records)."""

from __future__ import annotations

import json
import os
import random
import sys
from typing import Any

import banyanstore
from banyanstore.errors import VersionUnavailableError

NAMES = ("a", "b", "c")
TTLS = (None, 100_000, 200_000)  # long: nothing expires during a test


class Child:
    def __init__(self, args: dict[str, Any]) -> None:
        self.rng = random.Random(args["seed"])
        self.args = args
        self.store = banyanstore.open(args["store"], **args["options"])
        # the journal appears once the store is open: the parent's kill clock starts then
        self.fd = os.open(args["journal"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.snapshots: list[Any] = []
        self.n = 0

    def record(self, obj: dict[str, Any]) -> None:
        os.write(self.fd, (json.dumps(obj) + "\n").encode())

    def run(self, op: dict[str, Any], call: Any) -> None:
        """Journal ``op``, run it, journal its acknowledgement."""
        self.record({"i": self.n, **op})
        call()
        self.record({"a": self.n})

    def write(self) -> None:
        rng, store = self.rng, self.store
        ks = rng.choice(store.keyspaces())
        space = store.keyspace(ks)
        k = f"k{rng.randrange(100):03d}"
        sync = rng.choice((None, True, False))
        kind = rng.random()
        if kind < 0.7:
            v = f"{self.args['round']}.{self.n}|" * rng.choice((1, 10, 200))
            self.run({"op": "put", "ks": ks, "k": k, "v": v},
                     lambda: space.put(k.encode(), v.encode(), sync=sync))
        elif kind < 0.85:
            self.run({"op": "del", "ks": ks, "k": k}, lambda: space.delete(k.encode(), sync=sync))
        elif kind < 0.93:
            end = f"k{min(100, int(k[1:]) + rng.choice((1, 5, 30))):03d}"
            self.run({"op": "range", "ks": ks, "k": k, "end": end},
                     lambda: space.delete_range(k.encode(), end.encode(), sync=sync))
        else:
            entries = [[rng.choice(store.keyspaces()), f"k{rng.randrange(100):03d}", f"{self.n}.{j}"]
                       for j in range(rng.randrange(1, 6))]
            self.run({"op": "batch", "e": entries}, lambda: self.batch(entries, sync))

    def batch(self, entries: list[list[str]], sync: bool | None) -> None:
        with self.store.batch(sync=sync) as b:
            for ks, k, v in entries:
                b.put(k.encode(), v.encode(), keyspace=ks)

    def keyspace(self) -> None:
        name, ttl = self.rng.choice(NAMES), self.rng.choice(TTLS)
        self.run({"op": "keyspace", "name": name, "ttl": ttl}, lambda: self.store.keyspace(name, ttl=ttl))

    def drop(self) -> None:
        names = [n for n in self.store.keyspaces() if n != "default"]
        if names:
            name = self.rng.choice(names)
            self.run({"op": "drop", "name": name}, lambda: self.store.drop_keyspace(name))

    def floor(self) -> None:
        v = self.rng.randint(self.store.history_floor, self.store.version)
        try:
            self.store.set_history_floor(v)
        except VersionUnavailableError:
            pass  # below a floor a merge raised meanwhile

    def snapshot(self) -> None:
        if self.snapshots and self.rng.random() < 0.5:
            self.snapshots.pop(self.rng.randrange(len(self.snapshots))).close()
        else:
            self.snapshots.append(self.store.snapshot())

    def checkpoint(self) -> None:
        dest = os.path.join(self.args["checkpoints"], f"r{self.args['round']}-{self.n}")
        self.run({"op": "checkpoint", "dir": dest}, lambda: self.store.checkpoint(dest))

    def forever(self) -> None:
        table = ((0.6, self.write), (0.67, self.keyspace), (0.71, self.drop), (0.75, self.floor),
                 (0.82, self.snapshot), (0.86, self.store.flush), (0.9, self.store.compact),
                 (0.93, self.checkpoint), (1.0, self.store.sync))
        while True:
            r = self.rng.random()
            next(op for limit, op in table if r < limit)()
            self.n += 1


if __name__ == "__main__":
    Child(json.loads(sys.argv[1])).forever()
