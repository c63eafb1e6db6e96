"""db_bench-style benchmark of the Store, optionally side by side with peers.

    python benchmarks/bench_store.py [--num 1000000 | --quick] [--repeat 3] [--writes-only]
        [--io-mode sync] [--compression lz4] [--block-cache 64M] [--warm-cache] [--wal-sync interval]
        [--peers] [--json out.json] [--profile-dir /tmp/h_bench/prof --profile-phases readrandom]

16-byte keys (``%016d``), 100-byte values that compress about 2:1 (like db_bench).
Each engine runs in its own subprocess (so its peak RSS is its own), in this order:

* ``fillseq``     N puts in key order into a fresh store (then the store is dropped);
* ``fillrandom``  the N keys in random order into a fresh store R;
* ``overwrite``   N puts of random existing keys into R; then ``flush()``, ``close()`` and reopen
                  R, so reads are served from tables and the block cache, *before* ``compact()``.
                  Every engine reads as it runs by default: its background compaction goes on
                  during the read phases (LevelDB's and RocksDB's always do; they have no switch
                  for it).  The engine ``banyanstore-frozen`` is banyanstore opened for its
                  reads with ``compaction=False`` instead: they see the tables the writes left
                  (a harsher test than the peers get).  The report shows each engine's tables
                  or levels at the start and the end of every read phase;
* ``readrandom``  N gets of random existing keys; ``readmissing``: N gets of absent keys that fall
                  inside the tables' fences; ``readseq``: a full scan (entries/s); ``seekrandom``:
                  ``scan(start=k, limit=10)`` drained (seeks/s); ``multiget``: ``multi_get`` of 100
                  random keys at a time (keys/s);
* ``compact()``   then the five read phases again (rows tagged ``+compact``);
  with ``--warm-cache`` each set of read phases starts after an untimed full scan, so that
  with ``--block-cache 1G`` every block is cached (the aim "readrandom and readmissing with
  every block cached within 2x of lmdb" is measured so);
* ``deleterandom`` N deletes of random keys in R;
* ``ts-ingest``   an observability workload into a fresh store: N points of 10,000 series,
                  keys = 8-byte big-endian series id + 8-byte big-endian timestamp, values of
                  50-200 bytes, arriving in time order across series (every series gets its
                  point for t before any gets t+1); then flush, close, reopen;
* ``ts-query``    one series over a random window of ~100 points (a range scan), queries/s.

Every read result is checked (hits found, misses absent, scan count, a sample of values after
the overwrite); a wrong answer is reported as an error in the table, never hidden.  With
``--repeat`` each figure is the median of the runs, which go in rounds (every engine once a
round, in turn), so a change in the machine's load falls on every engine alike.
``banyanstore`` runs on its compiled core when it is built; ``banyanstore-pure`` is the same
engine with ``BANYANSTORE_PURE_PYTHON=1`` (both run by default).  ``--peers`` adds plyvel (LevelDB),
rocksdict (RocksDB), lmdb (sync=False) and sqlite3 (WAL, synchronous=NORMAL), each skipped with
the reason if it cannot be imported.  Data goes to ``--dir`` (default /tmp/h_bench/store).

``--phases fillseq`` runs only the named phases (with those of the fillrandom chain a named
one builds on).  Every phase of every round also records where its time went -- its CPU and
its workers', the machine's CPU, load and dirty page cache, RSS, GC, and for banyanstore the
deltas of ``stats()`` (flushes, merges, writer waits) -- under ``"diag"`` in the ``--json``
output (benchmarks/README.md lists the keys) and on one line of the progress output.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import (  # noqa: E402
    dir_bytes,
    fmt_rate,
    machine_now,
    parse_size,
    peak_rss_mb,
    phase_figures,
    print_summary,
    print_table,
    pyspy,
    reset_peak_rss,
    rss_mb,
    snapshot,
    src_fingerprint,
    summarize,
)

READ_PHASES = ("readrandom", "readmissing", "readseq", "seekrandom", "multiget")
ALL_PHASES = ("fillseq", "fillrandom", "overwrite", *READ_PHASES,
              *(p + "+compact" for p in READ_PHASES), "deleterandom", "ts-ingest", "ts-query")
UNITS = {"readseq": "entries/s", "multiget": "keys/s", "seekrandom": "seeks/s", "ts-query": "queries/s"}
TS_SERIES = 10_000
TS_WINDOW = 100
AIMS = {"fillrandom": 250e3, "readrandom": 250e3, "readmissing": 500e3, "readseq": 1.5e6}
PEERS = ("plyvel", "rocksdict", "lmdb", "sqlite3")
ENGINES = ("banyanstore", "banyanstore-pure")
VARIANTS = ("banyanstore-frozen",)  # run when named in --engines
NVALS = 4096


# -- engines -----------------------------------------------------------------------------------
class Engine:
    """The operations a phase needs, as plain callables (no adapter call in the timed loops
    where the engine's own method can be handed out)."""

    name = "?"

    def open(self, path: str, *, for_reads: bool = False) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def put_fn(self) -> Callable[[bytes, bytes], Any]:
        raise NotImplementedError

    def get_fn(self) -> Callable[[bytes], bytes | None]:
        raise NotImplementedError

    def delete_fn(self) -> Callable[[bytes], Any]:
        raise NotImplementedError

    def multi_get(self, keys: list[bytes]) -> list[bytes | None]:
        get = self.get_fn()
        return [get(k) for k in keys]

    def seek(self, key: bytes, n: int) -> int:
        """Entries read by a seek to ``key`` and ``n`` steps."""
        raise NotImplementedError

    def scan_all(self) -> Iterator[Any]:
        raise NotImplementedError

    def range_count(self, start: bytes, end: bytes) -> int:
        """Entries with ``start <= key < end``, each read (key and value)."""
        raise NotImplementedError

    def flush(self) -> None:
        pass

    def compact(self) -> bool:
        """Full compaction; False if the engine has none."""
        return False

    def end_reads(self) -> None:
        pass

    def info(self) -> dict[str, Any]:
        return {}

    def structure(self) -> str:
        """The sorted runs a read may consult (tables, files per level), for the report."""
        return ""

    def counters(self) -> dict[str, float]:
        """The engine's own cumulative counters (flushes, merges, stalls...), flat, for the
        deltas across a phase; {} for an engine that keeps none we can read."""
        return {}

    def queued(self) -> dict[str, int]:
        """Work the engine has queued at a phase's end (memtables awaiting flush...)."""
        return {}


class Banyan(Engine):
    name = "banyanstore"

    def __init__(self, args: argparse.Namespace) -> None:
        self.opts: dict[str, Any] = {"io_mode": args.io_mode, "compression": args.compression,
                                     "block_cache_size": args.block_cache, "wal_sync": args.wal_sync}
        if args.memtable_size:
            self.opts["memtable_size"] = args.memtable_size
        if args.max_immutable_memtables:
            self.opts["max_immutable_memtables"] = args.max_immutable_memtables
        self.bg_compaction = not args.no_bg_compaction
        self.frozen_reads = False  # banyanstore-frozen: reads with compaction=False
        self.store: Any = None

    def open(self, path: str, *, for_reads: bool = False) -> None:
        import banyanstore
        compaction = self.bg_compaction and not (for_reads and self.frozen_reads)
        self.store = banyanstore.open(path, compaction=compaction, **self.opts)

    def close(self) -> None:
        self.store.close()

    def put_fn(self) -> Callable[[bytes, bytes], Any]:
        return self.store.put

    def get_fn(self) -> Callable[[bytes], bytes | None]:
        return self.store.get

    def delete_fn(self) -> Callable[[bytes], Any]:
        return self.store.delete

    def multi_get(self, keys: list[bytes]) -> list[bytes | None]:
        return self.store.multi_get(keys)

    def seek(self, key: bytes, n: int) -> int:
        c = 0
        for _ in self.store.scan(start=key, limit=n):
            c += 1
        return c

    def scan_all(self) -> Iterator[Any]:
        return self.store.scan()

    def range_count(self, start: bytes, end: bytes) -> int:
        c = 0
        for _ in self.store.scan(start, end):
            c += 1
        return c

    def flush(self) -> None:
        self.store.flush()

    def compact(self) -> bool:
        self.store.compact()
        return True

    def info(self) -> dict[str, Any]:
        st = self.store.stats()
        ks = st["keyspaces"]["default"]
        return {"tables": ks["tables"], "table_bytes": ks["table_bytes"],
                "block_cache": st.get("block_cache"), "bloom": st.get("bloom"),
                "io_mode": st.get("io_mode"), "stalls": st.get("stalls"),
                "implementation": st.get("implementation"),
                "flush_bytes": st.get("flush", {}).get("bytes_written"),
                "compaction": {k: v for k, v in (st.get("compaction") or {}).items()
                               if k in ("merges", "bytes_written", "failed_merges", "last_error")}}

    def structure(self) -> str:
        tables = self.store.stats()["keyspaces"]["default"]["tables"]
        return f"{tables} table{'s' if tables != 1 else ''}"

    def counters(self) -> dict[str, float]:
        st = self.store.stats()
        fl, co, sl = st.get("flush") or {}, st.get("compaction") or {}, st.get("stalls") or {}
        out: dict[str, float] = {
            "flushes": fl.get("flushes", 0), "flush_bytes": fl.get("bytes_written", 0),
            "merges_started": co.get("merges_started", co.get("merges", 0)),
            "merges_finished": co.get("merges", 0), "merges_failed": co.get("failed_merges", 0),
            "merge_bytes": co.get("bytes_written", 0)}
        wal = st.get("wal") or {}
        for k in ("rotations", "rotate_seconds", "syncs"):
            if k in wal:  # the writer rotates the WAL at each memtable switch, syncs included
                out["wal_" + k] = wal[k]
        for k in ("count", "seconds", "memtable_waits", "memtable_wait_seconds",
                  "table_stalls", "table_stall_seconds"):
            if k in sl:
                out["stall_" + k if k in ("count", "seconds") else k] = sl[k]
        return out

    def queued(self) -> dict[str, int]:
        """Memtables waiting for their flush now, and tables of the default keyspace."""
        st = self.store.stats()
        return {"flush_pending": (st.get("flush") or {}).get("pending", 0),
                "immutable_memtables": sum(k["immutable_memtables"]
                                           for k in st["keyspaces"].values()),
                "tables": st["keyspaces"]["default"]["tables"]}


class Plyvel(Engine):
    name = "plyvel"

    def open(self, path: str, *, for_reads: bool = False) -> None:
        import plyvel
        os.makedirs(path, exist_ok=True)
        self.db: Any = plyvel.DB(path, create_if_missing=True)

    def close(self) -> None:
        self.db.close()

    def put_fn(self) -> Callable[[bytes, bytes], Any]:
        return self.db.put

    def get_fn(self) -> Callable[[bytes], bytes | None]:
        return self.db.get

    def delete_fn(self) -> Callable[[bytes], Any]:
        return self.db.delete

    def seek(self, key: bytes, n: int) -> int:
        it = self.db.iterator(start=key)
        c = 0
        for _ in islice(it, n):
            c += 1
        it.close()
        return c

    def scan_all(self) -> Iterator[Any]:
        return self.db.iterator()

    def range_count(self, start: bytes, end: bytes) -> int:
        c = 0
        with self.db.iterator(start=start, stop=end) as it:
            for _ in it:
                c += 1
        return c

    def compact(self) -> bool:
        self.db.compact_range()
        return True

    def structure(self) -> str:
        # leveldb.stats: a header, then "level files size(MB) ..." rows
        rows = [line.split() for line in self.db.get_property(b"leveldb.stats").decode().splitlines()]
        levels = [f"L{r[0]}:{r[1]}" for r in rows if len(r) >= 2 and r[0].isdigit() and r[1] != "0"]
        return " ".join(levels) + " files" if levels else "empty"


class RocksDict(Engine):
    name = "rocksdict"

    def open(self, path: str, *, for_reads: bool = False) -> None:
        from rocksdict import Options, Rdict
        self.db: Any = Rdict(path, options=Options(raw_mode=True))

    def close(self) -> None:
        self.db.close()

    def put_fn(self) -> Callable[[bytes, bytes], Any]:
        return self.db.put

    def get_fn(self) -> Callable[[bytes], bytes | None]:
        return self.db.get

    def delete_fn(self) -> Callable[[bytes], Any]:
        return self.db.delete

    def multi_get(self, keys: list[bytes]) -> list[bytes | None]:
        return self.db.get(keys)

    def seek(self, key: bytes, n: int) -> int:
        it = self.db.iter()
        it.seek(key)
        c = 0
        while c < n and it.valid():
            it.key()
            it.value()
            it.next()
            c += 1
        return c

    def scan_all(self) -> Iterator[Any]:
        return self.db.items()

    def range_count(self, start: bytes, end: bytes) -> int:
        it = self.db.iter()
        it.seek(start)
        c = 0
        while it.valid() and it.key() < end:
            it.value()
            it.next()
            c += 1
        return c

    def flush(self) -> None:
        self.db.flush()

    def compact(self) -> bool:
        self.db.compact_range(None, None)
        return True

    def structure(self) -> str:
        levels = []
        for level in range(7):
            files = self.db.property_int_value(f"rocksdb.num-files-at-level{level}")
            if files:
                levels.append(f"L{level}:{files}")
        return " ".join(levels) + " files" if levels else "empty"


class Lmdb(Engine):
    """lmdb with ``sync=False`` (one write transaction per put, like the others' WAL writes to
    the OS without fsync); reads share one long read transaction per phase."""

    name = "lmdb"

    def open(self, path: str, *, for_reads: bool = False) -> None:
        import lmdb
        os.makedirs(path, exist_ok=True)
        self.env: Any = lmdb.open(path, map_size=1 << 36, sync=False, metasync=False)
        self.txn: Any = None

    def close(self) -> None:
        self.end_reads()
        self.env.close()

    def put_fn(self) -> Callable[[bytes, bytes], Any]:
        begin = self.env.begin

        def put(k: bytes, v: bytes) -> None:
            with begin(write=True) as txn:
                txn.put(k, v)
        return put

    def delete_fn(self) -> Callable[[bytes], Any]:
        begin = self.env.begin

        def delete(k: bytes) -> None:
            with begin(write=True) as txn:
                txn.delete(k)
        return delete

    def _rtxn(self) -> Any:
        if self.txn is None:
            self.txn = self.env.begin()
        return self.txn

    def get_fn(self) -> Callable[[bytes], bytes | None]:
        return self._rtxn().get

    def seek(self, key: bytes, n: int) -> int:
        cur = self._rtxn().cursor()
        c = 0
        if cur.set_range(key):
            for _ in islice(cur.iternext(), n):
                c += 1
        cur.close()
        return c

    def scan_all(self) -> Iterator[Any]:
        return self._rtxn().cursor().iternext()

    def range_count(self, start: bytes, end: bytes) -> int:
        cur = self._rtxn().cursor()
        c = 0
        if cur.set_range(start):
            for k, _ in cur.iternext():
                if k >= end:
                    break
                c += 1
        cur.close()
        return c

    def flush(self) -> None:
        self.env.sync(True)

    def end_reads(self) -> None:
        if self.txn is not None:
            self.txn.abort()
            self.txn = None


class Sqlite(Engine):
    """sqlite3 in WAL mode with ``synchronous=NORMAL``, autocommit (one transaction per write)."""

    name = "sqlite3"

    def open(self, path: str, *, for_reads: bool = False) -> None:
        import sqlite3
        os.makedirs(path, exist_ok=True)
        self.con: Any = sqlite3.connect(os.path.join(path, "db.sqlite"), isolation_level=None,
                                   check_same_thread=False)
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA synchronous=NORMAL")
        self.con.execute("CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID")

    def close(self) -> None:
        self.con.close()

    def put_fn(self) -> Callable[[bytes, bytes], Any]:
        ex = self.con.execute
        sql = "INSERT OR REPLACE INTO kv VALUES (?, ?)"
        return lambda k, v: ex(sql, (k, v))

    def delete_fn(self) -> Callable[[bytes], Any]:
        ex = self.con.execute
        return lambda k: ex("DELETE FROM kv WHERE k = ?", (k,))

    def get_fn(self) -> Callable[[bytes], bytes | None]:
        ex = self.con.execute

        def get(k: bytes) -> bytes | None:
            row = ex("SELECT v FROM kv WHERE k = ?", (k,)).fetchone()
            return None if row is None else row[0]
        return get

    def multi_get(self, keys: list[bytes]) -> list[bytes | None]:
        sql = f"SELECT k, v FROM kv WHERE k IN ({','.join('?' * len(keys))})"
        found = dict(self.con.execute(sql, keys).fetchall())
        return [found.get(k) for k in keys]

    def seek(self, key: bytes, n: int) -> int:
        return len(self.con.execute("SELECT k, v FROM kv WHERE k >= ? ORDER BY k LIMIT ?",
                                    (key, n)).fetchall())

    def scan_all(self) -> Iterator[Any]:
        return self.con.execute("SELECT k, v FROM kv ORDER BY k")

    def range_count(self, start: bytes, end: bytes) -> int:
        return len(self.con.execute("SELECT k, v FROM kv WHERE k >= ? AND k < ? ORDER BY k",
                                    (start, end)).fetchall())

    def flush(self) -> None:
        self.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def make_engine(name: str, args: argparse.Namespace) -> Engine:
    if name in (*ENGINES, *VARIANTS):
        eng = Banyan(args)
        eng.name = name
        eng.frozen_reads = name == "banyanstore-frozen"
        return eng
    return {"plyvel": Plyvel, "rocksdict": RocksDict, "lmdb": Lmdb, "sqlite3": Sqlite}[name]()


def peer_available(name: str) -> str | None:
    """None if the peer can run, else why not."""
    if name in (*ENGINES, *VARIANTS):
        return None
    try:
        __import__(name)
    except ImportError as exc:
        return f"not installed ({exc}); try: pip install {name}"
    return None


# -- the benchmark (runs in a worker subprocess) ------------------------------------------------------
class GcTimer:
    """Python's garbage collections during a phase: how many per generation and the
    seconds they took (``gc.callbacks``)."""

    def __init__(self) -> None:
        self.counts = [0, 0, 0]
        self.seconds = 0.0
        self._began = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.counts[info["generation"]] += 1
            self.seconds += time.perf_counter() - self._began

    def start(self) -> tuple[list[int], float]:
        return list(self.counts), self.seconds

    def stop(self, seen: tuple[list[int], float]) -> dict[str, Any]:
        return {"collections": [a - b for a, b in zip(self.counts, seen[0], strict=True)],
                "seconds": round(self.seconds - seen[1], 4)}


GC = GcTimer()


def diag_line(d: dict[str, Any]) -> str:
    """One line of a phase's figures for the progress output."""
    m, e = d["machine"], d.get("engine", {})
    out = (f"cpu {d['self']['cpu_seconds']:.2f}+{d['descendants_cpu_seconds']:.2f} s "
           f"invol {d['self']['involuntary_switches']} gc {d['gc']['seconds']:.2f} s "
           f"machine busy {m['busy_cpu_seconds']:.1f}/{m['ncpu'] * d['wall_seconds']:.1f} "
           f"steal {m['cpu_seconds']['steal']:.2f} iowait {m['cpu_seconds']['iowait']:.2f} "
           f"load {m['load_before'][0]:.1f} dirty {m['mem_mb_before'].get('Dirty', 0):.0f}"
           f"+wb {m['mem_mb_before'].get('Writeback', 0):.0f} MB")
    if e:
        out += (f" | flushes {e['flushes']:.0f} merges {e['merges_started']:.0f}/"
                f"{e['merges_finished']:.0f} memwait {e.get('memtable_waits', 0):.0f}/"
                f"{e.get('memtable_wait_seconds', 0):.2f} s tablestall "
                f"{e.get('table_stall_seconds', 0):.2f} s queued "
                f"{d.get('engine_at_end', {}).get('flush_pending', '?')} wal rotations "
                f"{e.get('wal_rotations', 0):.0f}/{e.get('wal_rotate_seconds', 0):.2f} s")
    return out


class Run:
    def __init__(self, args: argparse.Namespace, engine: Engine, seed: int) -> None:
        self.args, self.eng = args, engine
        self.n = args.num
        self.rng = random.Random(seed)
        chunk = random.Random(7).randbytes(8192)
        self.vals = [chunk[(i * 53) % 8000:(i * 53) % 8000 + 50] * 2 for i in range(NVALS)]
        self.keys = [b"%016d" % i for i in range(self.n)]
        self.results: dict[str, dict[str, Any]] = {}
        self.errors: list[str] = []
        self.info: dict[str, Any] = {}
        gc.collect()
        self.baseline_rss = rss_mb()

    def phase(self, name: str, fn: Callable[[], int], unit: str = "ops/s") -> None:
        """Time ``fn`` (which returns its op count), with RSS growth; profile it if asked."""
        a = self.args
        prof = None
        if a.profile_dir and (name in a.profile_phases or name.split("+")[0] in a.profile_phases):
            os.makedirs(a.profile_dir, exist_ok=True)
            prof = os.path.join(a.profile_dir, f"store-{self.eng.name}-{name}.txt")
        reads = name.split("+")[0] in (*READ_PHASES, "ts-query")
        runs_before = self.eng.structure() if reads else ""
        gc.collect()
        counters0 = self.eng.counters()
        reset_peak_rss()
        gc_seen = GC.start()
        snap0 = snapshot()
        rss0 = snap0["rss"]
        with pyspy(prof):
            t0 = time.perf_counter()
            ops = fn()
            secs = time.perf_counter() - t0
        snap1 = snapshot()  # (before end_reads: the figures are the timed loop's)
        gc_figures = GC.stop(gc_seen)
        self.eng.end_reads()
        rss1 = rss_mb()
        r: dict[str, Any] = {
            "ops": ops, "seconds": secs, "rate": ops / secs if secs > 0 else None, "unit": unit,
            "rss_growth_mb": rss1 - rss0, "rss_mb": rss1, "peak_rss_mb": peak_rss_mb()}
        if reads:  # what the phase read from: it changes while a background compaction runs
            r["structure"] = [runs_before, self.eng.structure()]
        # where the time went (benchmarks/README.md lists the keys)
        diag = phase_figures(snap0, snap1)
        diag["gc"] = gc_figures
        counters1 = self.eng.counters()
        if counters1:
            diag["engine"] = {k: round(v - counters0.get(k, 0), 6) for k, v in counters1.items()}
            diag["engine_at_end"] = self.eng.queued()
        r["diag"] = diag
        self.results[name] = r
        print(f"  {self.eng.name:<12} {name:<22} {fmt_rate(r['rate']):>8} {unit:<10} "
              f"{secs:7.2f} s  rss {rss1:6.0f} MB (+{rss1 - rss0:.0f})  {diag_line(diag)}",
              file=sys.stderr, flush=True)
        if prof and os.path.exists(prof):
            s = summarize(prof)
            r["profile"] = s
            print_summary(f"{self.eng.name} {name}", s)

    def check(self, phase: str, ok: bool, msg: str) -> None:
        if not ok:
            err = f"{phase}: WRONG RESULT: {msg}"
            self.errors.append(err)
            print(f"  !! {self.eng.name} {err}", file=sys.stderr, flush=True)

    # -- write phases ------------------------------------------------------------------------------
    def writes(self, order: list[bytes], salt: int) -> Callable[[], int]:
        vals = self.vals
        pv = [vals[(i + salt) & (NVALS - 1)] for i in range(len(order))]

        def run() -> int:
            put = self.eng.put_fn()
            for k, v in zip(order, pv, strict=True):
                put(k, v)
            return len(order)
        return run

    def wanted(self, *phases: str) -> bool:
        """Whether ``--phases`` names any of ``phases`` (or is not given)."""
        return not self.args.phases or any(p in self.args.phases for p in phases)

    def run(self, root: str) -> None:
        a, eng, n, rng, keys = self.args, self.eng, self.n, self.rng, self.keys
        seq_path, db_path = os.path.join(root, "fillseq"), os.path.join(root, "db")
        for p in (seq_path, db_path):
            shutil.rmtree(p, ignore_errors=True)

        if self.wanted("fillseq"):
            eng.open(seq_path)
            self.phase("fillseq", self.writes(keys, 0))
            eng.close()
            shutil.rmtree(seq_path, ignore_errors=True)
        # The phases from fillrandom to deleterandom build on each other: naming any of
        # them runs the ones before it in that chain too.
        chain = ALL_PHASES[1:ALL_PHASES.index("deleterandom") + 1]
        if not self.wanted(*chain):
            if self.wanted("ts-ingest", "ts-query"):
                self.timeseries(os.path.join(root, "ts"))
            return

        order = keys[:]
        rng.shuffle(order)
        eng.open(db_path)
        self.phase("fillrandom", self.writes(order, 0))
        over = [keys[rng.randrange(n)] for _ in range(n)]
        self.phase("overwrite", self.writes(over, 1000))
        if a.writes_only or not self.wanted(*chain[2:]):
            eng.close()
            if not a.keep:
                shutil.rmtree(db_path, ignore_errors=True)
            if not a.writes_only and self.wanted("ts-ingest", "ts-query"):
                self.timeseries(os.path.join(root, "ts"))
            return
        # expected values of a sample of keys (outside the timing)
        sample = set(rng.sample(keys, min(2000, n)))
        expect: dict[bytes, bytes] = {}
        for i, k in enumerate(order):
            if k in sample:
                expect[k] = self.vals[i & (NVALS - 1)]
        for i, k in enumerate(over):
            if k in sample:
                expect[k] = self.vals[(i + 1000) & (NVALS - 1)]
        del order, over
        t0 = time.perf_counter()
        eng.flush()
        self.info["flush_seconds"] = time.perf_counter() - t0
        self.info["after_writes"] = eng.info()
        eng.close()
        eng.open(db_path, for_reads=True)
        self.info["before_compaction"] = eng.info()
        self.info["disk_bytes_before_compaction"] = dir_bytes(db_path)
        self.verify(expect, "verify")
        self.reads("")
        later = chain[chain.index("readrandom+compact"):]
        t0 = time.perf_counter()
        if self.wanted(*later) and eng.compact():
            self.info["compact_seconds"] = time.perf_counter() - t0
            self.info["after_compaction"] = eng.info()
            self.info["disk_bytes_after_compaction"] = dir_bytes(db_path)
            self.verify(expect, "verify+compact")
            self.reads("+compact")
        self.info["end_of_reads"] = eng.info()
        if self.wanted("deleterandom"):
            dels = [keys[rng.randrange(n)] for _ in range(n)]

            def deleterandom() -> int:
                delete = eng.delete_fn()
                for k in dels:
                    delete(k)
                return len(dels)
            self.phase("deleterandom", deleterandom)
        eng.close()
        if not a.keep:
            shutil.rmtree(db_path, ignore_errors=True)
        if self.wanted("ts-ingest", "ts-query"):
            self.timeseries(os.path.join(root, "ts"))

    def timeseries(self, path: str) -> None:
        """ts-ingest and ts-query (see the module docstring)."""
        eng, n, rng = self.eng, self.n, self.rng
        shutil.rmtree(path, ignore_errors=True)
        series = min(TS_SERIES, n)
        steps = max(1, n // series)
        base_ms = 1_767_225_600_000  # 2026-01-01, 10 s between points
        chunk = random.Random(11).randbytes(8192)
        vals = [chunk[i:i + 50 + (i * 37) % 151] for i in range(NVALS)]

        def key(s: int, t: int) -> bytes:
            return s.to_bytes(8, "big") + (base_ms + 10_000 * t).to_bytes(8, "big")

        def ingest() -> int:
            put, c = eng.put_fn(), 0
            for t in range(steps):
                for s in range(series):
                    put(key(s, t), vals[c & (NVALS - 1)])
                    c += 1
            return c
        eng.open(path)
        self.phase("ts-ingest", ingest, "points/s")
        eng.flush()
        eng.close()
        eng.open(path, for_reads=True)
        window = min(TS_WINDOW, steps)
        queries = [(s, rng.randrange(steps - window + 1))
                   for s in (rng.randrange(series) for _ in range(max(1, min(20_000, n // 50))))]
        got = [0]

        def query() -> int:
            rc, c = eng.range_count, 0
            for s, t0 in queries:
                c += rc(key(s, t0), key(s, t0 + window))
            got[0] = c
            return len(queries)
        self.phase("ts-query", query, "queries/s")
        self.check("ts-query", got[0] == window * len(queries),
                   f"{got[0]} points, expected {window * len(queries)}")
        eng.close()
        if not self.args.keep:
            shutil.rmtree(path, ignore_errors=True)

    def verify(self, expect: dict[bytes, bytes], phase: str) -> None:
        get = self.eng.get_fn()
        bad = [(k, get(k), v) for k, v in expect.items() if get(k) != v]
        self.eng.end_reads()
        self.check(phase, not bad, f"{len(bad)} of {len(expect)} sampled keys have a wrong value, "
                   f"e.g. key {bad[0][0]!r}: got {bad[0][1]!r}, expected {bad[0][2]!r}" if bad else "")

    def reads(self, tag: str) -> None:
        a, eng, n, rng, keys = self.args, self.eng, self.n, self.rng, self.keys
        nreads = a.reads or n
        if a.warm_cache:  # untimed: every block read once (cached if the cache is large enough)
            for _ in eng.scan_all():
                pass
        hits = [keys[rng.randrange(n)] for _ in range(nreads)]
        # absent keys inside the fences: "%015d." sorts right after "%015d0"... no key has a '.'
        misses = [b"%015d." % rng.randrange(n // 10 or 1) for _ in range(nreads)]
        found = [0]

        def readrandom() -> int:
            get, c = eng.get_fn(), 0
            for k in hits:
                if get(k) is not None:
                    c += 1
            found[0] = c
            return len(hits)
        self.phase("readrandom" + tag, readrandom)
        self.check("readrandom" + tag, found[0] == nreads, f"found {found[0]} of {nreads} present keys")

        def readmissing() -> int:
            get, c = eng.get_fn(), 0
            for k in misses:
                if get(k) is not None:
                    c += 1
            found[0] = c
            return len(misses)
        self.phase("readmissing" + tag, readmissing)
        self.check("readmissing" + tag, found[0] == 0, f"found {found[0]} absent keys")

        def readseq() -> int:
            c = 0
            for _ in eng.scan_all():
                c += 1
            return c
        self.phase("readseq" + tag, readseq, "entries/s")
        self.check("readseq" + tag, self.results["readseq" + tag]["ops"] == n,
                   f"scan returned {self.results['readseq' + tag]['ops']} entries, expected {n}")

        seeks = hits[:a.seeks or max(1, n // 10)]
        got = [0]

        def seekrandom() -> int:
            seek, c = eng.seek, 0
            for k in seeks:
                c += seek(k, 10)
            got[0] = c
            return len(seeks)
        self.phase("seekrandom" + tag, seekrandom, "seeks/s")
        expected = sum(min(10, n - int(k)) for k in seeks)
        self.check("seekrandom" + tag, got[0] == expected, f"{got[0]} entries, expected {expected}")

        batches = [hits[i:i + 100] for i in range(0, nreads - 99, 100)]

        def multiget() -> int:
            mg, c = eng.multi_get, 0
            for b in batches:
                for v in mg(b):
                    if v is not None:
                        c += 1
            found[0] = c
            return len(batches) * 100
        self.phase("multiget" + tag, multiget, "keys/s")
        self.check("multiget" + tag, found[0] == len(batches) * 100,
                   f"found {found[0]} of {len(batches) * 100} present keys")


def worker(args: argparse.Namespace) -> None:
    eng = make_engine(args.worker, args)
    out: dict[str, Any] = {"engine": eng.name}
    run = None
    try:
        run = Run(args, eng, args.seed)
        out["baseline_rss_mb"] = run.baseline_rss
        run.run(os.path.join(args.dir, eng.name))
    except BaseException as exc:  # report precisely; the parent prints it
        out["crash"] = "".join(traceback.format_exception(exc))
        print(out["crash"], file=sys.stderr, flush=True)
    if run is not None:
        out["phases"], out["errors"], out["info"] = run.results, run.errors, run.info
    out["peak_rss_mb"] = peak_rss_mb()
    out["peak_rss_children_mb"] = peak_rss_mb(children=True)
    with open(args.out, "w") as fh:
        json.dump(out, fh, default=str)


# -- the parent: one subprocess per engine and repeat ------------------------------------------------------
def spawn(name: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    fd, out = tempfile.mkstemp(prefix="bench_store_", suffix=".json", dir=args.dir)
    os.close(fd)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--out", out,
           "--seed", str(seed), *args.passthrough]
    env = dict(os.environ)
    env.pop("BANYANSTORE_PURE_PYTHON", None)
    if name == "banyanstore-pure":
        env["BANYANSTORE_PURE_PYTHON"] = "1"
    # Every engine's round starts with the page cache written back (the same for all):
    # else one round's timed phases can share the disk with the writeback of what ran
    # before it (an earlier engine's files, another program's), and a round whose syncs
    # are slow runs at half speed with its usual CPU seconds (benchmarks/README.md).
    machine = machine_now()
    if args.sync_between:
        t1 = time.monotonic()
        os.sync()
        machine["sync_seconds"] = round(time.monotonic() - t1, 3)
        machine["after_sync"] = machine_now()
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, timeout=args.timeout, stderr=None, env=env)
        rc: int | str = proc.returncode
    except subprocess.TimeoutExpired:
        rc = f"timeout after {args.timeout} s"
    try:
        with open(out) as fh:
            res: dict[str, Any] = json.load(fh)
    except (OSError, json.JSONDecodeError):
        res = {"engine": name, "crash": f"worker exited with {rc} and wrote no result"}
    os.unlink(out)
    if rc != 0 and "crash" not in res:
        res["crash"] = f"worker exited with {rc}"
    res["wall_seconds"] = time.monotonic() - t0
    res["machine_at_start"] = machine
    return res


def combine(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median per phase over repeats; errors and crashes of every run kept."""
    out: dict[str, Any] = {"engine": runs[0]["engine"], "runs": len(runs), "phases": {},
                           "errors": [e for r in runs for e in r.get("errors", [])],
                           "crashes": [r["crash"] for r in runs if r.get("crash")],
                           "peak_rss_mb": max(r.get("peak_rss_mb", 0) for r in runs),
                           "baseline_rss_mb": statistics.median(r.get("baseline_rss_mb", 0) for r in runs),
                           "info": runs[-1].get("info", {}), "raw": runs}
    for p in ALL_PHASES:
        rs = [r["phases"][p] for r in runs if p in r.get("phases", {})]
        if rs:
            out["phases"][p] = {
                "rate": statistics.median(x["rate"] for x in rs),
                "rates": [x["rate"] for x in rs],
                "unit": rs[0]["unit"],
                "rss_growth_mb": statistics.median(x["rss_growth_mb"] for x in rs),
                "structures": [x.get("structure") for x in rs],
                # one entry a round, in round order: where each round's time went
                "diag": [x.get("diag") for x in rs],
            }
    return out


def structures(phase: dict[str, Any]) -> str:
    """An engine's sorted runs at the start and end of a phase, for each run of it."""
    out = []
    for s in phase.get("structures", []):
        if s and s[0]:
            out.append(s[0] if s[0] == s[1] else f"{s[0]} -> {s[1]}")
    return "; ".join(out) or "—"


def report(results: list[dict[str, Any]], skipped: dict[str, str], n: int) -> None:
    names = [r["engine"] for r in results]
    header = ["phase (ops/s)", *names, "aim"]
    rows = []
    for p in ALL_PHASES:
        if not any(p in r["phases"] for r in results):
            continue
        unit = UNITS.get(p.split("+")[0], "ops/s")
        label = p if unit == "ops/s" else f"{p} ({unit})"
        aim = AIMS.get(p)
        rows.append([label, *[fmt_rate(r["phases"].get(p, {}).get("rate")) for r in results],
                     f"≥ {fmt_rate(aim)}" if aim else ""])
    rows.append(["peak RSS (MB)", *[f"{r['peak_rss_mb']:.0f}" for r in results], ""])
    rows.append(["peak RSS above baseline (MB)",
                 *[f"{r['peak_rss_mb'] - r['baseline_rss_mb']:.0f}" for r in results], ""])
    runs = results[0]["runs"] if results else 0
    print_table(f"bench_store: N = {n:,}, 16 B keys, 100 B values, median of {runs} run(s)", header, rows)
    rows = [[p, *[f"{r['phases'][p]['rss_growth_mb']:+.0f}" if p in r["phases"] else "—"
                  for r in results]] for p in ALL_PHASES if any(p in r["phases"] for r in results)]
    print_table("RSS growth per phase (MB, current RSS after − before)", ["phase", *names], rows)
    rows = [[p, *[structures(r["phases"][p]) if p in r["phases"] else "—" for r in results]]
            for p in ALL_PHASES if any(r["phases"].get(p, {}).get("structures", [None])[0] for r in results)]
    if rows:
        print_table("What the read phases read from (start -> end of the phase; one entry a run)",
                    ["phase", *names], rows)
    for r in results:
        info = r.get("info", {})
        if r["engine"] in (*ENGINES, *VARIANTS):
            for k in ("before_compaction", "after_compaction"):
                if k in info:
                    i = info[k]
                    print(f"{r['engine']} {k}: {i.get('tables')} tables, "
                          f"{i.get('table_bytes', 0) / 1e6:.1f} MB, io_mode {i.get('io_mode')}, "
                          f"implementation {i.get('implementation')}")
            bc = info.get("end_of_reads", {}).get("block_cache")
            if bc:
                print(f"{r['engine']} block cache (end of reads): {bc}")
            if "compact_seconds" in info:
                print(f"{r['engine']} compact(): {info['compact_seconds']:.1f} s; "
                      f"flush before reads: {info.get('flush_seconds', 0):.2f} s")
        for e in r["errors"]:
            print(f"ERROR {r['engine']}: {e}")
        for c in r["crashes"]:
            print(f"CRASH {r['engine']}:\n{c}")
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num", type=int, default=1_000_000, help="keys (default 1,000,000)")
    ap.add_argument("--quick", action="store_true", help="N = 100,000")
    ap.add_argument("--reads", type=int, default=0, help="point reads per read phase (default N)")
    ap.add_argument("--seeks", type=int, default=0, help="seeks in seekrandom (default N/10)")
    ap.add_argument("--phases", default=None, type=lambda s: [p for p in s.split(",") if p],
                    help="comma list of phases to run (e.g. fillseq); a phase needs the ones "
                         "before it from fillrandom on, which run too")
    ap.add_argument("--writes-only", action="store_true",
                    help="only fillseq, fillrandom and overwrite (for write-path comparisons)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per engine; figures are medians")
    ap.add_argument("--io-mode", default="sync", choices=["sync", "nonblocking", "io_uring", "auto"])
    ap.add_argument("--compression", default="lz4", choices=["none", "lz4", "zstd"])
    ap.add_argument("--block-cache", type=parse_size, default=64 << 20, help="bytes, e.g. 64M")
    ap.add_argument("--wal-sync", default="interval", choices=["always", "interval", "never"])
    ap.add_argument("--warm-cache", action="store_true",
                    help="scan everything once, untimed, before each set of read phases: with a "
                         "--block-cache larger than the store (e.g. 1G), reads run with every block cached")
    ap.add_argument("--memtable-size", type=parse_size, default=0, help="default: the store's")
    ap.add_argument("--max-immutable-memtables", type=int, default=0, help="default: the store's")
    ap.add_argument("--no-bg-compaction", action="store_true",
                    help="open with compaction=False during the write phases too")
    ap.add_argument("--peers", action="store_true", help="also run " + ", ".join(PEERS))
    ap.add_argument("--engines", default="", help="comma list instead of banyanstore [+ peers]")
    ap.add_argument("--json", default=None, help="write all results to this file")
    ap.add_argument("--dir", default="/tmp/h_bench/store", help="scratch directory")
    ap.add_argument("--keep", action="store_true", help="keep the store directory")
    ap.add_argument("--timeout", type=float, default=4 * 3600, help="seconds per engine run")
    ap.add_argument("--profile-dir", default=None, help="py-spy profiles of the chosen phases go here")
    ap.add_argument("--profile-phases", default="fillrandom,readrandom,readseq,readmissing",
                    type=lambda s: s.split(","))
    ap.add_argument("--no-sync-between", dest="sync_between", action="store_false",
                    help="do not os.sync() before each engine's round")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    unknown = [p for p in args.phases or () if p not in ALL_PHASES]
    if unknown:
        ap.error(f"--phases: unknown phase(s) {', '.join(unknown)}; the phases: {', '.join(ALL_PHASES)}")
    if args.quick:
        args.num = 100_000
    os.makedirs(args.dir, exist_ok=True)
    if args.worker:
        worker(args)
        return

    # what the workers get: every option but the parent-only ones
    skip_next = {"--engines", "--json", "--repeat", "--seed", "--timeout"}
    skip_flags = ("--peers", "--quick", "--no-sync-between")
    argv, pt, i = sys.argv[1:], [], 0
    while i < len(argv):
        a = argv[i]
        if a in skip_next:
            i += 2
            continue
        if a.split("=")[0] in skip_next or a in skip_flags:
            i += 1
            continue
        pt.append(a)
        i += 1
    args.passthrough = [*pt, "--num", str(args.num)]

    names = args.engines.split(",") if args.engines else [*ENGINES, *(PEERS if args.peers else ())]
    skipped: dict[str, str] = {}
    src = src_fingerprint()
    print(f"banyanstore source {src}", file=sys.stderr)
    runs: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        why = None if name == "banyanstore" else peer_available(name)
        if why:
            skipped[name] = why
            print(f"skipping {name}: {why}", file=sys.stderr)
        else:
            runs[name] = []
    for r in range(args.repeat):  # rounds: a slow minute of the machine hits every engine
        for name, done in runs.items():
            done.append(spawn(name, args, args.seed + r))
    results = [combine(done) for done in runs.values()]
    report(results, skipped, args.num)
    print(f"banyanstore source {src}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"num": args.num, "src": src, "options": {k: v for k, v in vars(args).items()
                                                    if k not in ("worker", "out", "passthrough")},
                       "results": results, "skipped": skipped}, fh, indent=1, default=str)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
