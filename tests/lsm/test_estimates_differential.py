"""approximate_count / approximate_size on the compiled core against pure Python, on the
same stores: random writes, deletes and range tombstones in several keyspaces, in
several tables (flushed, some merged) and in memtables (the WAL tail a read-only store
reads), with bounds None, empty, inside, between and outside the keys.  A writer here
holds the store open; a read-only store in a child process per engine reads it, and the
three answers must be the same figures (docs/api.md: the same one in both engines)."""

from __future__ import annotations

import inspect
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import banyanstore
from banyanstore import accel

from .crashenv import soak

pytestmark = pytest.mark.skipif(accel.load_native() is None, reason="the compiled core is not built")

_CHILD = """
import json, sys, banyanstore
path, bounds = sys.argv[1], json.loads(sys.argv[2])
dec = lambda b: None if b is None else bytes.fromhex(b)
with banyanstore.open(path, read_only=True) as r:
    print(json.dumps([r.stats()["implementation"], _answers(r, [(dec(s), dec(e)) for s, e in bounds])]))
"""


def _answers(store: Any, bounds: list[tuple[bytes | None, bytes | None]]) -> dict[str, Any]:
    out = {}
    for name in store.keyspaces():
        ks = store.keyspace(name)
        out[name] = ([[ks.approximate_count(s, e), ks.approximate_size(s, e)] for s, e in bounds]
                     + [[ks.approximate_count(prefix=p), ks.approximate_size(prefix=p)]
                        for p in (b"", b"k0", b"k01", b"z")])
    return out


def _in_child(path: Path, bounds: list[tuple[bytes | None, bytes | None]], pure: bool) -> Any:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANYANSTORE_")}
    if pure:
        env["BANYANSTORE_PURE_PYTHON"] = "1"
    enc = [[None if b is None else b.hex() for b in pair] for pair in bounds]
    code = "from __future__ import annotations\n" + inspect.getsource(_answers) + _CHILD
    run = subprocess.run([sys.executable, "-c", code, str(path), json.dumps(enc)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def _key(rng: random.Random) -> bytes:
    return b"k%04d" % rng.randrange(2000) + b"x" * rng.randrange(0, 12)


@pytest.mark.parametrize("seed", range(12 if soak() else 2))
def test_estimates_are_the_same_in_both_engines(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "db"
    with banyanstore.open(path, compaction=False, block_size=rng.choice([1024, 4096]),
                          wal_sync="never") as w:
        handles = [w, w.keyspace("a"), w.keyspace("b")]
        for step in range(rng.randrange(2, 5)):
            for _ in range(rng.randrange(200, 1500)):
                ks, r = rng.choice(handles), rng.random()
                if r < 0.8:
                    ks.put(_key(rng), rng.randbytes(rng.randrange(0, 200)))
                elif r < 0.95:
                    ks.delete(_key(rng))
                else:
                    lo, hi = sorted((_key(rng), _key(rng)))
                    if lo != hi:
                        ks.delete_range(lo, hi)
            if step < 2 or rng.random() < 0.6:
                w.flush()
            if rng.random() < 0.3:
                w.compact(rng.choice(["default", "a", "b"]))
        w.put(b"k0001", b"in the WAL")  # and a memtable that stays one
        keys = sorted(k for h in handles for k in h.keys())
        edges = [None, b"", b"\x00", b"k", b"k1", b"zz", *rng.sample(keys, min(6, len(keys)))]
        bounds = [(s, e) for s in edges for e in edges]
        mine = [accel.IMPLEMENTATION, _answers(w, bounds)]
        pure = _in_child(path, bounds, pure=True)
        native = _in_child(path, bounds, pure=False)
    assert (pure[0], native[0]) == ("python", "native")
    assert pure[1] == native[1] == mine[1]
