"""The decoder fuzzer: mutated real files against every on-disk decoder.

Each **decoder** below owns a corpus of real files (built once, in memory, by the
engine itself) and a way to read them through the public entry point that decodes
them.  An input is one file of a sample mutated shallowly (checksums untouched) or
deeply (checksums recomputed: :mod:`tests.torture.mutate`).  The verdict:

* ``same``: the answer equals the answer for the intact files;
* ``corruption``: :class:`~banyanstore.errors.CorruptionError` -- the expected
  outcome for damage;
* ``accepted``: a different answer that the format allows -- a deep mutation made
  a different but well-formed file, or the damage is a torn tail, which the Log
  and the WAL cut off (the answer must then be a *prefix* of the intact one);
* ``wrong``: any other answer (data lost or changed silently);
* ``crash``: any other exception (including ``MemoryError``: an allocation
  sized by a corrupt length, under the memory limit of :func:`run_subprocess`);
* ``hang``: no answer within :data:`INPUT_SECONDS`.

Only the first three are allowed.  Decoders: ``sstable.data``, ``sstable.filter``,
``sstable.index``, ``sstable.ranges``, ``sstable.props``, ``sstable.footer`` (a table read through
:class:`~banyanstore.sstable.reader.TableReader`: open, scans both ways, gets,
history), ``manifest``, ``current`` and ``checkpoint`` (a store opened read-only,
then for writing, then read-only again: every table the intact store had must
still exist), ``wal.segment`` and ``wal.record`` (the store's WAL, replayed on
open), ``log.segment`` (a Log opened read-only and for writing, read whole and by
``get``).  ``dbm`` has no format of its own (it is a Store).

Run one decoder in a memory-limited subprocess with :func:`run_subprocess` (or
``python -m tests.torture.fuzz DECODER INPUTS SEED``).
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import banyanstore
from banyanstore.errors import CorruptionError, VersionUnavailableError
from banyanstore.io.memory import MemoryEnv
from banyanstore.log import Log
from banyanstore.options import Options
from banyanstore.sstable.builder import TableBuilder
from banyanstore.sstable.cache import BlockCache
from banyanstore.sstable.meta import TableOrigin
from banyanstore.sstable.reader import TableReader

from . import mutate

__all__ = ["DECODERS", "fuzz", "run_subprocess", "Result"]

INPUT_SECONDS = 20.0
MEMORY_HEADROOM = 768 << 20  # bytes of address space above the start-up size
REPO = Path(__file__).resolve().parents[2]
ROOT = "/s"
Files = dict[str, bytes]


class InputHang(BaseException):
    """Raised by the alarm when one input takes too long (BaseException: the code
    under test must not swallow it)."""


@dataclass
class Sample:
    """Intact files, the file to mutate, the answer for the intact files, and (for
    decoders with torn-tail repair) the answers of every prefix."""

    files: Files
    target: str
    answer: Any
    prefixes: list[Any] = field(default_factory=list)
    donor: bytes | None = None
    dirs: tuple[str, ...] = ()  # directories that exist even when empty
    probes: list[bytes] = field(default_factory=list)  # keys a table read looks up


@dataclass
class Result:
    decoder: str
    inputs: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)  # descriptions of wrong/crash/hang inputs

    def as_dict(self) -> dict[str, Any]:
        return {"decoder": self.decoder, "inputs": self.inputs, "verdicts": dict(self.verdicts),
                "failures": self.failures[:20]}


# -- files in memory ----------------------------------------------------------------------
def materialize(files: Files, dirs: tuple[str, ...] = ()) -> MemoryEnv:
    """A fresh MemoryEnv holding ``files`` and the (maybe empty) directories ``dirs``,
    all synced, as after a clean crash."""
    env = MemoryEnv()
    dirs = tuple(sorted({os.path.dirname(p) for p in files} | set(dirs)))
    for d in dirs:
        env.mkdir(d)
    for path, data in files.items():
        f = env.open_writable(path)
        f.write(data)
        f.sync()
        f.close()
    for d in dirs:
        env.sync_dir(d)
    return env


def _files_under(env: MemoryEnv, root: str) -> Files:
    return {p: d for p, d in env.snapshot_state().items()
            if p.startswith(root + "/") and not p.endswith("/LOCK")}


# -- corpora ----------------------------------------------------------------------------------
def _table_samples() -> list[Sample]:
    """Tables of every layout: compressions, bloom or not, fixed and variable keys and
    values, tombstones, many versions of a key, values larger than a block."""
    out = []
    rng = random.Random(7)
    for compression in ("none", "lz4", "zstd"):
        for bloom in (0, 10):
            env = MemoryEnv()
            env.mkdir("/t")
            entries = []
            for i in range(rng.choice((40, 300))):
                k = b"key%05d" % (i * 3) if compression != "zstd" else b"k" * (1 + i % 7) + b"%d" % i
                for v in range(rng.choice((1, 1, 3)), 0, -1):
                    val = None if rng.random() < 0.1 else bytes(rng.choice((8, 8, 30, 1500))) + b"%d" % i
                    entries.append((k, 1000 + i * 4 + v, val))
            entries.sort(key=lambda e: (e[0], -e[1]))
            opts = Options(block_size=1024, compression=compression, bloom_bits_per_key=bloom)
            # format 2 (with an origin section, as a store writes) and format 1 (without)
            origin = TableOrigin(bloom % 3, "index") if compression != "zstd" else None
            b = TableBuilder(env, "/t/000001.sst", opts, origin=origin)
            b.add_many(entries)
            if bloom:  # format 3: range tombstones, with an origin section and without
                keys = [e[0] for e in entries]
                b.add_range_dels((keys[i], keys[i + rng.choice((1, 5, 30))] + b"\x00",
                                  rng.choice([e[1] for e in entries]))
                                 for i in range(0, len(keys) - 31, max(1, len(keys) // 6)))
            b.finish()
            files = {"/t/000001.sst": env.read_file("/t/000001.sst")}
            probes = sorted({e[0] for e in entries[::7]} | {b"key00001", b"zzz", b"", b"key00000x"})
            out.append(Sample(files, "/t/000001.sst", _read_table(materialize(files), probes), probes=probes))
    for s in out:
        s.donor = out[0].files[out[0].target]
    return out


def _read_table(env: MemoryEnv, probes: list[bytes]) -> Any:
    reader = TableReader.open(env, "/t/000001.sst", BlockCache(1 << 20))
    try:
        forward = list(reader.scan())
        backward = list(reader.scan(reverse=True))
        gets = [reader.get(k, v) for k in probes for v in (1, 1003, 1 << 62)]
        hist = [reader.history(k) for k in probes]
        ranged = list(reader.scan(probes[1], probes[-2])) if len(probes) > 3 else []
        return forward, backward, gets, hist, ranged, reader.range_dels
    finally:
        reader.close()


STORE_OPTS: dict[str, Any] = dict(memtable_size=64 * 1024, block_size=1024, segment_size=64 * 1024,
                                  compaction=False, history_retention=1e9, wal_sync="never")


def _populate(store: Any, seed: int, *, checkpoint: str | None = None) -> None:
    """Tables (flushed and merged), three keyspaces, deletes, batches, a history floor, a
    TTL, and synced writes still only in the WAL; plus a checkpoint if asked."""
    rng = random.Random(seed)
    spaces = [store, store.keyspace("index"), store.keyspace("ttl", ttl=1e9)]
    for phase in range(3):
        for i in range(rng.choice((300, 700))):
            ks = rng.choice(spaces)
            k = b"k%04d" % rng.randrange(400)
            if rng.random() < 0.1:
                ks.delete(k)
            elif rng.random() < 0.01:  # a range tombstone (format 3 tables, format 2 WAL records)
                ks.delete_range(k, b"k%04d" % (int(k[1:]) + rng.randrange(1, 30)))
            elif rng.random() < 0.1:
                with store.batch() as b:
                    for j in range(3):
                        b.put(k + b"/%d" % j, b"b%d" % i, keyspace=rng.choice(("index", None)))
            else:
                ks.put(k, b"v%d-%d|" % (phase, i) * rng.choice((1, 5, 60)))
        store.flush()
        if phase == 1:
            store.compact()
            store.set_history_floor(store.version // 3)
    if checkpoint is not None:
        store.checkpoint(checkpoint)
    for i in range(rng.choice((5, 40, 200))):  # only in the WAL
        store.put(b"w%04d" % i, b"wal-%d" % i * rng.choice((1, 30)))
    store.delete_range(b"w0001", b"w0003")  # a format-2 WAL record
    store.sync()


def _build_store(env: MemoryEnv, compression: str, seed: int) -> MemoryEnv:
    """A populated store in ``env`` (with a checkpoint at ``/cp`` for odd seeds)."""
    store = banyanstore.open(ROOT, env=env, compression=compression, **STORE_OPTS)
    try:
        _populate(store, seed, checkpoint="/cp" if seed % 2 else None)
        return env.clone()
    finally:
        store.close()


def store_answer(env: MemoryEnv, root: str, *, read_only: bool = True) -> Any:
    """What a store at ``root`` holds: version, keyspaces, every scan, a versioned scan."""
    with banyanstore.open(root, env=env, read_only=read_only, compaction=False) as s:
        spaces = sorted(s.keyspaces())
        scans = tuple(tuple(s.keyspace(n).scan()) for n in spaces)
        try:
            mid = tuple(s.scan(version=max(s.oldest_version, s.version * 2 // 3)))
        except VersionUnavailableError as exc:
            mid = ("unavailable", str(exc))
        return s.version, tuple(spaces), scans, mid


def _store_samples(root: str) -> list[Sample]:
    out = []
    for n, compression in enumerate(("none", "lz4", "zstd", "none")):
        if root != ROOT and n % 2 == 0:
            continue  # the checkpoint exists in odd-seeded stores only
        env = _build_store(MemoryEnv(), compression, seed=n)
        files = _files_under(env, root)
        dirs = (f"{root}/wal", f"{root}/tables")
        out.append(Sample(files, "", store_answer(materialize(files, dirs), root), dirs=dirs))
    return out


def _wal_prefix_answers(sample: Sample, root: str) -> list[Any]:
    """The store's answer with the WAL cut after each of its records (the torn tails a
    crash can leave), newest cut first."""
    answers = []
    segs = sorted(p for p in sample.files if p.startswith(f"{root}/wal/") and p.endswith(".log"))
    if not segs:
        return answers
    last = segs[-1]
    data = sample.files[last]
    frags = mutate.segment_fragments(data)
    cuts = {mutate.logfmt.HEADER_SIZE}
    cuts |= {off + mutate.logfmt.FRAG_HEADER_SIZE + length for off, length, _ in frags}
    for end in sorted(cuts, reverse=True):
        files = dict(sample.files)
        files[last] = data[:end]
        try:
            answers.append(store_answer(materialize(files, sample.dirs), root))
        except CorruptionError:
            continue
    return answers


def _log_samples() -> list[Sample]:
    out = []
    for n, sizes in enumerate(((10, 100, 700), (5000, 40_000, 70_000, 1))):
        env = MemoryEnv()
        rng = random.Random(n)
        with Log.open("/log", env=env, segment_size=64 * 1024, wal_sync="never") as log:
            for _ in range(rng.choice((150, 400))):
                log.append(bytes([rng.randrange(256)]) * rng.choice(sizes))
            log.truncate_before(log.first_seq + 5)
        files = {p: d for p, d in env.snapshot_state().items() if p.endswith(".log")}
        sample = Sample(files, "", None)
        sample.answer = _read_log(materialize(files), read_only=True)
        out.append(sample)
    return out


def _read_log(env: MemoryEnv, *, read_only: bool) -> Any:
    with Log.open("/log", env=env, read_only=read_only, create_if_missing=False) as log:
        records = list(log.read())
        first, last = log.first_seq, log.last_seq
        gets = [log.get(s) for s in range(first, last + 1, 7)]
        return first, last, records, gets


# -- decoders -------------------------------------------------------------------------------
@dataclass
class Decoder:
    """How to build a decoder's corpus, pick and mutate a file, and judge the answer."""

    name: str
    corpus: Callable[[], list[Sample]]
    pick: Callable[[Sample, random.Random], str]  # which file to mutate
    deep: Callable[[bytes, random.Random], tuple[bytes, str]] | None
    run: Callable[[Sample, Files], Any]
    torn_tail_ok: Callable[[Sample, str], bool] = lambda s, path: False
    rehome: Callable[[Sample, Files, str], Files] | None = None  # after a deep mutation
    removes: bool = False  # inputs remove files (``pick`` names them) instead of changing bytes


def _table_decoder(region: str) -> Decoder:
    def run(sample: Sample, files: Files) -> Any:
        return _read_table(materialize(files), sample.probes)
    return Decoder(f"sstable.{region}", _table_samples, lambda s, r: s.target,
                   lambda d, r: mutate.deep_table(d, r, region), run)


def _pick_manifest(sample: Sample, rng: random.Random, root: str = ROOT) -> str:
    names = [p for p in sample.files if p.startswith(f"{root}/MANIFEST-")]
    return rng.choice(names)


def _store_run(root: str) -> Callable[[Sample, Files], Any]:
    def run(sample: Sample, files: Files) -> Any:
        """Read-only open, writer open, read-only open: the answers must agree, and the
        writer open must not have deleted a table the intact store had."""
        env = materialize(files, sample.dirs)
        first = store_answer(env, root)
        second = store_answer(env, root, read_only=False)
        tables = {p for p in sample.files if p.startswith(f"{root}/tables/")}
        now = set(env.snapshot_state())
        gone = sorted(p for p in tables if p not in now and p in files)
        if gone:
            return ("deleted tables", gone)
        if second[2] != first[2]:
            return ("writer open disagrees", first, second)
        return first
    return run


def _pick_segment(sample: Sample, rng: random.Random, where: str) -> str:
    segs = sorted(p for p in sample.files if p.startswith(where) and p.endswith(".log"))
    return rng.choice(segs)


def _last_segment(sample: Sample, path: str) -> bool:
    where = os.path.dirname(path)
    segs = sorted(p for p in sample.files if p.endswith(".log") and os.path.dirname(p) == where)
    return bool(segs) and path == segs[-1]


def _wal_record_deep(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """A WAL record payload changed behind a recomputed fragment checksum: the store's
    record decoder (lsm/wal.py) meets it on replay.  The seq (first 8 bytes of a
    FULL/FIRST fragment) is left alone so the Log accepts the frame."""
    frags = [f for f in mutate.segment_fragments(data) if f[2] == 1 and f[1] > 8 + 22]
    if not frags:
        return mutate.deep_segment(data, rng)
    off, length, kind = rng.choice(frags)
    start = off + 7
    payload = data[start:start + length]
    seq, body = payload[:8], payload[8:]
    body, what = mutate.mutate_bytes(body, rng, allow_resize=rng.random() < 0.5)
    if len(body) > length - 8:
        body = body[:length - 8]
    new_payload = seq + body
    crc = mutate.logfmt.frame_crc(kind, new_payload)
    header = mutate.logfmt.FRAG_HEADER.pack(crc, len(new_payload), kind)
    pad = bytes(length - len(new_payload))  # keep later fragments where they were
    return data[:off] + header + new_payload + pad + data[start + length:], f"wal record at {off}: {what}"


def _log_run(sample: Sample, files: Files) -> Any:
    env = materialize(files)
    first = _read_log(env, read_only=True)
    second = _read_log(env, read_only=False)  # repairs a torn tail
    third = _read_log(env, read_only=True)
    if not (first == second == third):
        return ("opens disagree", first[:2], second[:2], third[:2])
    return first


def _is_log_prefix(sample: Sample, answer: Any) -> bool:
    """A torn tail cut off: the same records, fewer at the end."""
    if not (isinstance(answer, tuple) and len(answer) == 4):
        return False
    first, last, records, _gets = answer
    f0, l0, r0, _ = sample.answer
    return first == f0 and last <= l0 and records == r0[:len(records)]


def _pick_current(sample: Sample, rng: random.Random, root: str = ROOT) -> str:
    return f"{root}/CURRENT"


# -- backups (real directories: local backups use plain file calls) ------------------------------
def _write_tree(files: Files, base: str) -> None:
    for rel, data in files.items():
        path = os.path.join(base, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def _read_tree(base: str) -> Files:
    out = {}
    for where, _dirs, names in os.walk(base):
        for name in names:
            path = os.path.join(where, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, base)] = f.read()
    return out


def _backup_samples() -> list[Sample]:
    """Two backups of a store each (the second after more writes, so that restoring the
    newest must not quietly fall back to the older one)."""
    out = []
    for n, compression in enumerate(("lz4", "none")):
        base = tempfile.mkdtemp(prefix="banyanstore-fuzz-")
        try:
            with banyanstore.open(f"{base}/s", compression=compression,
                                  **dict(STORE_OPTS, compaction_mode="thread")) as store:
                _populate(store, n)
                banyanstore.backup(store, f"{base}/b")
                for i in range(50):
                    store.put(b"late%03d" % i, b"after the first backup %d" % n)
                banyanstore.backup(store, f"{base}/b")
            files = _read_tree(f"{base}/b")
        finally:
            shutil.rmtree(base, ignore_errors=True)
        out.append(Sample(files, "", _restore_answer(files)))
    return out


def _restore_answer(files: Files) -> Any:
    base = tempfile.mkdtemp(prefix="banyanstore-fuzz-")
    try:
        _write_tree(files, f"{base}/b")
        banyanstore.restore(f"{base}/b", f"{base}/r")
        return store_answer(None, f"{base}/r")  # type: ignore[arg-type]
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _newest_manifest(sample: Sample, rng: random.Random | None = None) -> str:
    return max(p for p in sample.files if p.endswith(".manifest"))


def _wal_tail_object(sample: Sample, rng: random.Random) -> str:
    tail = mutate.backup_payload(sample.files[_newest_manifest(sample)])["wal_tail"]
    return str(tail["object"]) if tail else _newest_manifest(sample)


def _rehome_tail(sample: Sample, files: Files, path: str) -> Files:
    """A deeply changed WAL tail under its new content address, named so by the manifest
    (with a fresh checksum): only the tail's own decoder can object."""
    if not path.startswith("objects/"):
        return files
    import hashlib
    data = files.pop(path)
    digest = hashlib.sha256(data).hexdigest()
    files[f"objects/{digest}"] = data
    name = _newest_manifest(sample)
    obj = mutate.backup_payload(files[name])
    obj["wal_tail"].update(object=f"objects/{digest}", sha256=digest, size=len(data))
    files[name] = mutate.encode_backup_manifest(obj)
    return files


def _pick_removal(sample: Sample, rng: random.Random) -> str:
    """A file, or (``/*``) every WAL segment at once."""
    if rng.random() < 0.1:
        return f"{ROOT}/wal/*"
    return rng.choice(sorted(sample.files))


def _pick_checkpoint_file(sample: Sample, rng: random.Random) -> str:
    return rng.choice(sorted(p for p in sample.files if "/MANIFEST-" in p or p.endswith("CURRENT")))


def _deep_checkpoint(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    if data.startswith(b"BANYANSTORE-CURRENT"):
        return mutate.deep_current(data, rng)
    return mutate.deep_manifest(data, rng)


CP = "/cp"
DECODERS: dict[str, Decoder] = {d.name: d for d in (
    *(_table_decoder(r) for r in ("data", "filter", "index", "ranges", "props", "footer")),
    Decoder("manifest", lambda: _store_samples(ROOT), _pick_manifest, mutate.deep_manifest, _store_run(ROOT)),
    Decoder("current", lambda: _store_samples(ROOT), _pick_current, mutate.deep_current, _store_run(ROOT)),
    Decoder("checkpoint", lambda: _store_samples(CP), _pick_checkpoint_file, _deep_checkpoint,
            _store_run(CP)),
    # A removed *last* WAL segment looks exactly like a crash right after a rotation
    # sealed the one before it: the store holds a prefix of the WAL (a documented limit).
    Decoder("store.files", lambda: _store_samples(ROOT), _pick_removal, None, _store_run(ROOT),
            _last_segment, removes=True),
    Decoder("wal.segment", lambda: _store_samples(ROOT), lambda s, r: _pick_segment(s, r, f"{ROOT}/wal/"),
            mutate.deep_segment, _store_run(ROOT), _last_segment),
    Decoder("wal.record", lambda: _store_samples(ROOT), lambda s, r: _pick_segment(s, r, f"{ROOT}/wal/"),
            _wal_record_deep, _store_run(ROOT), _last_segment),
    Decoder("log.segment", _log_samples, lambda s, r: _pick_segment(s, r, "/log/"), mutate.deep_segment,
            _log_run, _last_segment),
    Decoder("backup.manifest", _backup_samples, _newest_manifest, mutate.deep_backup_manifest,
            lambda s, files: _restore_answer(files)),
    Decoder("backup.waltail", _backup_samples, _wal_tail_object, mutate.deep_wal_tail,
            lambda s, files: _restore_answer(files), rehome=_rehome_tail),
)}


# -- the loop ---------------------------------------------------------------------------------
def _alarm(signum: int, frame: Any) -> None:
    raise InputHang()


def prepare(name: str) -> list[Sample]:
    """The corpus of decoder ``name``, with the answers torn tails may give."""
    logging.getLogger("banyanstore").setLevel(logging.CRITICAL)  # damaged inputs log a lot
    samples = DECODERS[name].corpus()
    if name.startswith("wal.") or name == "store.files":
        for s in samples:
            s.prefixes = _wal_prefix_answers(s, ROOT)
    return samples


def fuzz(name: str, inputs: int, seed: int, *, deep_share: float = 0.4,
         seconds: float | None = None, samples: list[Sample] | None = None) -> Result:
    """Run ``inputs`` mutated inputs (or until ``seconds`` pass) through decoder ``name``."""
    decoder = DECODERS[name]
    rng = random.Random(seed)
    if samples is None:
        samples = prepare(name)
    result = Result(name)
    deadline = None if seconds is None else time.monotonic() + seconds
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        while result.inputs < inputs and (deadline is None or time.monotonic() < deadline):
            sample = rng.choice(samples)
            path = decoder.pick(sample, rng)
            deep = decoder.deep is not None and rng.random() < deep_share
            if decoder.removes:
                prefix = path[:-1] if path.endswith("*") else None
                files = {p: d for p, d in sample.files.items()
                         if p != path and not (prefix and p.startswith(prefix))}
                verdict, detail = _judge(decoder, sample, files, path, False)
                result.inputs += 1
                result.verdicts[verdict] += 1
                if verdict in ("wrong", "crash", "hang"):
                    result.failures.append(f"{verdict}: removed {path}: {detail}")
                continue
            data = sample.files[path]
            if deep:
                assert decoder.deep is not None
                new, what = decoder.deep(data, rng)
            else:
                new, what = mutate.shallow(data, rng, sample.donor)
            if new == data:
                continue
            files = dict(sample.files)
            files[path] = new
            if deep and decoder.rehome is not None:
                files = decoder.rehome(sample, files, path)
            verdict, detail = _judge(decoder, sample, files, path, deep)
            result.inputs += 1
            result.verdicts[verdict] += 1
            if verdict in ("wrong", "crash", "hang"):
                result.failures.append(f"{verdict}: {path} {'deep' if deep else 'shallow'} {what}: {detail}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    return result


def _judge(decoder: Decoder, sample: Sample, files: Files, path: str, deep: bool) -> tuple[str, str]:
    signal.setitimer(signal.ITIMER_REAL, INPUT_SECONDS)
    try:
        answer = decoder.run(sample, files)
    except CorruptionError:
        return "corruption", ""
    except InputHang:
        return "hang", f"no answer in {INPUT_SECONDS:.0f} s"
    except Exception as exc:  # noqa: BLE001 -- every other exception is a finding
        return "crash", f"{type(exc).__name__}: {exc}"[:300]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    if answer == sample.answer:
        return "same", ""
    if deep and not (isinstance(answer, tuple) and answer and answer[0] == "deleted tables"):
        return "accepted", ""  # a different, well-formed file
    if decoder.torn_tail_ok(sample, path):
        if decoder.name == "log.segment" and _is_log_prefix(sample, answer):
            return "accepted", ""
        if answer in sample.prefixes:
            return "accepted", ""
    return "wrong", _describe_difference(sample.answer, answer)


def _describe_difference(want: Any, got: Any) -> str:
    if isinstance(got, tuple) and got and isinstance(got[0], str):
        return repr(got)[:200]
    try:
        if want[0] != got[0]:
            return f"version/first {want[0]} -> {got[0]}"
        return f"contents differ ({sum(len(x) for x in want[2])} -> {sum(len(x) for x in got[2])} items)"
    except (TypeError, IndexError):
        return repr(got)[:200]


# -- the memory-limited subprocess --------------------------------------------------------------
def _limit_memory() -> None:
    import resource
    with open("/proc/self/statm") as f:
        vm_pages = int(f.read().split()[0])
    limit = vm_pages * os.sysconf("SC_PAGE_SIZE") + MEMORY_HEADROOM
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def run_subprocess(name: str, inputs: int, seed: int, *, seconds: float | None = None,
                   timeout: float = 3600) -> Result:
    """Fuzz decoder ``name`` in a child process whose address space is capped at its
    start-up size plus :data:`MEMORY_HEADROOM` (so an allocation sized by a corrupt
    length fails there as MemoryError: a ``crash`` verdict)."""
    env = dict(os.environ, MALLOC_ARENA_MAX="2",
               PYTHONPATH=os.pathsep.join([str(REPO), str(Path(banyanstore.__file__).parent.parent),
                                           os.environ.get("PYTHONPATH", "")]))
    args = [sys.executable, "-m", "tests.torture.fuzz", name, str(inputs), str(seed)]
    if seconds is not None:
        args.append(str(seconds))
    proc = subprocess.run(args, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"fuzz child for {name} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    d = json.loads(proc.stdout.strip().splitlines()[-1])
    return Result(d["decoder"], d["inputs"], Counter(d["verdicts"]), d["failures"])


def main() -> None:
    name, inputs, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    seconds = float(sys.argv[4]) if len(sys.argv) > 4 else None
    samples = prepare(name)  # built before the limit applies
    _limit_memory()
    result = fuzz(name, inputs, seed, seconds=seconds, samples=samples)
    print(json.dumps(result.as_dict()))


if __name__ == "__main__":
    main()
