"""Range scans: merge memtables and tables into one ordered stream of live entries.

Per-entry Python work is the cost of a scan, so the merge works a *chunk* at a
time rather than an entry at a time through a heap:

1. every source (a memtable or a table) hands out *runs*: lists of internal
   entries ``(key, version, value)`` in internal order (key ascending,
   version descending), a block's worth each;
2. a chunk takes, from every source, the entries with keys strictly before the
   *bound* -- the smallest "last loaded key" among sources that still have
   more to load -- so every version of a key lands in the same chunk;
3. the pieces are concatenated newest source first and sorted by key with a
   stable sort (Timsort merges the runs in C), which keeps, for each key, its
   newest entry first;
4. one pass keeps the first entry of each key whose version is visible.

Reverse scans use the same machinery mirrored (take entries after the largest
"first loaded key", prepend new runs) and reverse each finished chunk.

Every scan takes a *guard*: a callable that raises (StoreClosedError) once the
store or snapshot the scan reads from is closed.  It runs before each chunk
is fetched -- so a scan read after ``close()`` stops with that error instead
of reading closed files -- and before each entry of results held in memory
(a seek's first entries, a key's history).  Once per chunk costs nothing
measurable; once per entry of a long scan would cost a fifth of its speed.

An iterator that raised raises the same error at every later ``next()``
(:func:`sticky`, :func:`guarded`): never a silent end after an error, which a
caller catching it would take for the end of the range.

Seeks (forward scans with a ``limit``) start differently, because their cost
is the setup, not the entries: every source hands over a *head* -- its first
few entries, an *edge* below which the head is complete, and a lazy iterator of
the rest -- with no generator run per source, and :func:`seek_merged` merges
the entries below the smallest edge directly (see there).

REQUIRES: sources are ordered newest first, and a key's entries in a newer
source all have higher versions than its entries in an older one (tables of a
keyspace cover disjoint version ranges; compaction merges adjacent tables).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from itertools import chain, tee
from operator import itemgetter
from typing import Any, TypeVar

from ..arguments import as_bytes
from ..sticky import STICKY, Failed, then_failure
from .memtable import Memtable
from .rangedel import Cover

__all__ = ["Entry", "merged_chunks", "scan_merged", "seek_merged", "memtable_runs", "memtable_head",
           "table_runs", "prefix_end", "scan_bounds", "relative_bounds", "cut_keys", "Head", "Guard",
           "guarded", "guarded_runs", "sticky", "limited", "STICKY"]

Entry = tuple[bytes, int, Any]
Guard = Callable[[], None]
"""Raises once the scan's store or snapshot is closed (see the module docstring)."""
RUN_KEYS = 1024
SEEK_ROUNDS = 3
"""Merge rounds a seek tries on its own before the generic chunk merge takes over."""
FIRST_RUN = 16
SHORT_RANGE_KEYS = 64
"""A memtable range of at most this many keys is read at the call (memtable_runs)."""
_key_of = itemgetter(0)
_value_of = itemgetter(1)
_Chunk = TypeVar("_Chunk")
_Row = TypeVar("_Row")


@lru_cache(maxsize=1024)  # (a prefix view's every scan asks it for the same prefix)
def prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix``.

    >>> prefix_end(b"ab"), prefix_end(b"a\\xff"), prefix_end(b"\\xff")
    (b'ac', b'b', None)
    """
    p = bytearray(prefix)
    while p and p[-1] == 0xFF:
        p.pop()
    if not p:
        return None
    p[-1] += 1
    return bytes(p)


def scan_bounds(start: object, end: object, prefix: object) -> tuple[bytes | None, bytes | None]:
    """Validated ``[start, end)`` narrowed to ``prefix``."""
    s = None if start is None else as_bytes(start, "start")
    e = None if end is None else as_bytes(end, "end")
    if prefix is not None:
        p = as_bytes(prefix, "prefix")
        if s is None or s < p:
            s = p
        pe = prefix_end(p)
        if pe is not None and (e is None or e > pe):
            e = pe
    return s, e


def relative_bounds(prefix: bytes, start: object, end: object) -> tuple[bytes, bytes | None]:
    """``[start, end)`` relative to ``prefix`` (checked as a scan's bounds) as the whole keys'
    bounds: ``prefix + start`` (``prefix``) to ``prefix + end`` (``prefix_end(prefix)``, None
    only where every key from ``prefix`` on starts with it: a prefix of 0xff bytes)."""
    if (start is not None and type(start) is not bytes) or (end is not None and type(end) is not bytes):
        start, end = scan_bounds(start, end, None)
    return ((prefix if start is None else prefix + start),
            (prefix_end(prefix) if end is None else prefix + end))


def cut_keys(rows: Iterator[Any], skip: int, keys_only: bool) -> Iterator[Any]:
    """``rows`` (keys, or ``(key, value)`` pairs) with ``skip`` bytes cut off every key,
    in C (map, itemgetter, zip, tee: no Python frame per row; a scan that raised raises
    again at the next step).  The pure-Python paths' form of the compiled merge's ``skip``."""
    cut = itemgetter(slice(skip, None))
    if keys_only:
        return map(cut, rows)
    keys, values = tee(rows)
    return zip(map(cut, map(_key_of, keys)), map(_value_of, values), strict=True)


def memtable_runs(mem: Memtable, start: bytes | None, end: bytes | None, version: int,
                  reverse: bool) -> Iterable[list[Entry]]:
    """Runs of the newest visible entry per key (ascending within each run); a list,
    read now, when the range holds at most SHORT_RANGE_KEYS keys (a complete source
    for the merge, as TableReader.scan_runs gives for a short range)."""
    keys = mem.sorted_keys()
    lo = 0 if start is None else bisect_left(keys, start)
    hi = len(keys) if end is None else bisect_left(keys, end)
    if hi - lo <= SHORT_RANGE_KEYS:
        run = mem.visible_entries(keys[lo:hi], version) if lo < hi else []
        return [run] if run else []
    return _memtable_runs(mem, keys, lo, hi, version, reverse)


def _memtable_runs(mem: Memtable, keys: list[bytes], lo: int, hi: int, version: int,
                   reverse: bool) -> Iterator[list[Entry]]:
    """:func:`memtable_runs` of ``keys[lo:hi]``, a run at a time."""
    size = FIRST_RUN
    while lo < hi:
        if reverse:
            run = mem.visible_entries(keys[max(lo, hi - size):hi], version)
            hi -= size
        else:
            run = mem.visible_entries(keys[lo:min(hi, lo + size)], version)
            lo += size
        if run:
            yield run
        size = min(size * 4, RUN_KEYS)


def table_runs(reader: Any, start: bytes | None, end: bytes | None, reverse: bool,
               fill_cache: bool = True) -> Iterable[list[Entry]]:
    """Runs of a table's internal entries, each in ascending internal order (the
    reader's ``scan_runs``: a block's worth each, the first one short for seeks; a
    list, read now, when the range lies in a block or two).
    ``fill_cache=False`` keeps a long read (a merge) from evicting hot blocks."""
    return reader.scan_runs(start, end, reverse=reverse, fill_cache=fill_cache)


class _Source:
    __slots__ = ("runs", "buf", "done")

    def __init__(self, runs: Iterable[list[Entry]] | None, buf: list[Entry] | None = None,
                 reverse: bool = False) -> None:
        """``runs`` None: nothing beyond ``buf``.  ``runs`` a list: every run there is,
        already read (a short range: TableReader.scan_runs), taken in now -- a complete
        source sets no bound, so the merge does not wait for it to run dry."""
        self.buf: list[Entry] = buf if buf is not None else []
        if isinstance(runs, list):
            for run in runs:  # (in scan direction, each ascending: as load() adds them)
                self.buf = (run + self.buf) if reverse else (self.buf + run)
            runs = None
        self.runs: Iterator[list[Entry]] = iter(runs) if runs is not None else iter(())
        self.done = runs is None

    def buf_then_runs(self) -> Iterator[list[Entry]]:
        """The buffered entries, then the remaining runs (a single source needs no merge)."""
        return chain((self.buf,), self.runs)

    def load(self, reverse: bool) -> None:
        """Add the next run (at the end going forward, at the front in reverse)."""
        for run in self.runs:
            if run:
                self.buf = (run + self.buf) if reverse else (self.buf + run)
                return
        self.done = True


def merged_chunks(run_sources: Iterable[Iterable[list[Entry]]],
                  reverse: bool) -> Iterator[list[Entry]]:
    """Chunks of the entries of several sorted sources of runs (newest source first),
    each key's entries from all sources in exactly one chunk: a merge's input."""
    return _chunks([_Source(r, None, reverse) for r in run_sources], reverse)


def _chunks(sources: list[_Source], reverse: bool) -> Iterator[list[Entry]]:
    """Chunks of entries (ascending internal order) such that each key's entries
    from all sources fall into exactly one chunk; chunks ascend (or descend).
    A source may come with entries already buffered (a seek's head)."""
    for s in sources:
        if not s.buf and not s.done:
            s.load(reverse)
    while True:
        live = [s for s in sources if not s.done]
        if not live and not any(s.buf for s in sources):
            return
        if live:
            edges = [s.buf[0][0] if reverse else s.buf[-1][0] for s in live]
            bound = max(edges) if reverse else min(edges)
        pieces: list[Entry] = []
        for s in sources:
            buf = s.buf
            if not buf:
                continue
            if not live:
                cut = 0 if reverse else len(buf)
            elif reverse:
                cut = bisect_right(buf, bound, key=_key_of)
            else:
                cut = bisect_left(buf, bound, key=_key_of)
            if reverse:
                pieces += buf[cut:]
                s.buf = buf[:cut]
            else:
                pieces += buf[:cut]
                s.buf = buf[cut:]
        if len(sources) > 1 and pieces:
            pieces.sort(key=_key_of)  # stable: newer sources stay first within a key
        if pieces:
            yield pieces
        for s in live:
            edge = (s.buf[0][0] if reverse else s.buf[-1][0]) if s.buf else None
            if edge is None or edge == bound:
                s.load(reverse)


def guarded(items: Iterable[_Row], guard: Guard) -> Iterator[_Row]:
    """``items`` (already in memory), with ``guard()`` run before each one and before
    the end: every ``next()`` after a close raises -- and, once it raised, every later
    ``next()`` raises the same error (sticky, as :func:`sticky`'s rows are), never a
    silent end."""
    failed: list[Failed] = []
    return chain.from_iterable(then_failure(_guarded_rows(items, guard, failed), failed))


def _guarded_rows(items: Iterable[_Row], guard: Guard, failed: list[Failed]) -> Iterator[_Row]:
    try:
        for item in items:
            guard()
            yield item
        guard()
    except STICKY as exc:
        failed.append(Failed(exc))
        raise


def _failing_last(chunks: Iterable[Iterable[_Row]]) -> Iterator[Iterable[_Row]]:
    """``chunks``, and once fetching one raised, a :class:`Failed` of that error
    in place of the rest."""
    try:
        yield from chunks
    except STICKY as exc:
        yield Failed(exc)


def sticky(chunks: Iterable[Iterable[_Row]]) -> Iterator[_Row]:
    """The rows of ``chunks`` (lists of rows) one by one; once fetching a chunk raised,
    every later ``next()`` raises the same error (docs/api.md: an iterator that raised
    gives no further rows) -- never a silent end, which a caller catching the error and
    calling ``next()`` again took for the end of the range: a shorter result.

    Costs nothing per row: ``chain`` keeps a source iterator that raised and asks it
    again (it drops the iterator *of* sources that raised), so the error is handed to it
    as such a source.  A generator per row could not do it: one that raised is over."""
    return chain.from_iterable(_failing_last(chunks))


def limited(chunks: Iterable[list[_Row]], limit: int | None) -> Iterable[list[_Row]]:
    """``chunks`` holding at most ``limit`` rows in all (None: no limit) -- what
    ``islice`` of the rows does, but a chunk at a time (islice drops an iterator that
    raised, so a later ``next()`` would end silently)."""
    if limit is None:
        return chunks
    return _limited(chunks, limit)


def _limited(chunks: Iterable[list[_Row]], limit: int) -> Iterator[list[_Row]]:
    if limit <= 0:
        return
    for chunk in chunks:
        if len(chunk) >= limit:
            yield chunk[:limit]
            return
        limit -= len(chunk)
        yield chunk


def guarded_runs(chunks: Iterable[_Chunk], guard: Guard) -> Iterator[_Chunk]:
    """``chunks`` (or runs), with ``guard()`` run before each one is fetched.  An IO
    error while fetching is re-checked: a close() that raced with the read wins."""
    it = iter(chunks)
    while True:
        guard()
        try:
            chunk = next(it, None)
        except OSError:
            guard()
            raise
        if chunk is None:
            return
        yield chunk


def scan_merged(run_sources: Iterable[Iterable[list[Entry]]], version: int, floor: int,
                reverse: bool, limit: int | None, guard: Guard,
                cover: Cover | None = None) -> Iterator[tuple[bytes, bytes]]:
    """``(key, value)`` of every live key: the newest entry with a version
    ``<= version`` is a value written at or after ``floor`` (TTL) that no range
    tombstone of ``cover`` hides."""
    runs = list(run_sources)
    if limit == 0:
        return iter(())
    if len(runs) == 1 and not reverse:
        # One source going forward (the common case after compaction): its runs
        # are already in order, so no merge -- only the visibility pass, with the
        # last key carried across runs (a key's versions may span two runs).
        chunks: Iterable[list[Entry]] = runs[0]
    else:
        chunks = _chunks([_Source(r, None, reverse) for r in runs], reverse)
    return sticky(_visible(guarded_runs(chunks, guard), version, floor, reverse,
                           -1 if limit is None else limit, None, cover))


def _visible(chunks: Iterable[list[Entry]], version: int, floor: int, reverse: bool,
             remaining: int, last: bytes | None,
             cover: Cover | None = None) -> Iterator[list[tuple[bytes, bytes]]]:
    """The visibility pass over chunks: per key its first entry at or below
    ``version``, if a value at or above ``floor``; at most ``remaining`` of them
    (-1: all), a list per chunk (:func:`sticky` hands them out one by one).
    ``last``: the key decided last before these chunks (its further, older entries
    are skipped)."""
    for chunk in chunks:
        if cover is None:
            out, last = _live(chunk, version, floor, last)
        else:
            out, last = _live_covered(chunk, version, floor, last, cover)
        if reverse:
            out.reverse()
        if remaining >= 0:
            if len(out) >= remaining:
                yield out[:remaining]
                return
            remaining -= len(out)
        if out:
            yield out


def _live(chunk: list[Entry], version: int, floor: int,
          last: bytes | None) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
    """One chunk's visibility pass and the last key it decided.  ``last``: the key
    decided before the chunk, whose further (older) entries are skipped."""
    out: list[tuple[bytes, bytes]] = []
    append = out.append
    for k, v, val in chunk:
        if v > version or k == last:
            continue
        last = k
        if val is not None and v >= floor:
            append((k, val))
    return out, last


def _live_covered(chunk: list[Entry], version: int, floor: int, last: bytes | None,
                  cover: Cover) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
    """:func:`_live` that also drops a key whose newest entry a range tombstone hides
    (then every older entry of it is hidden too)."""
    out: list[tuple[bytes, bytes]] = []
    append = out.append
    hides = cover.hides
    for k, v, val in chunk:
        if v > version or k == last:
            continue
        last = k
        if val is not None and v >= floor and not hides(k, v):
            append((k, val))
    return out, last


Head = tuple[list[Entry], "bytes | None", "Iterator[list[Entry]] | None"]
"""A forward scan's start in one source: ``(run, edge, rest)`` -- see
``TableReader.seek_head``; :func:`memtable_head` is the memtable's."""


def memtable_head(mem: Memtable, start: bytes | None, end: bytes | None, version: int,
                  n: int) -> Head:
    """A memtable's :data:`Head`: the visible entries of its first ``n`` keys in range;
    ``edge`` is the first key not looked at (every smaller key is covered)."""
    keys = mem.sorted_keys()
    lo = 0 if start is None else bisect_left(keys, start)
    hi = len(keys) if end is None else bisect_left(keys, end)
    take = min(hi, lo + n)
    run = mem.visible_entries(keys[lo:take], version) if lo < take else []
    if take >= hi:
        return run, None, None
    return run, keys[take], _memtable_runs(mem, keys, take, hi, version, False)


def seek_merged(heads: list[Head], version: int, floor: int, limit: int,
                guard: Guard, cover: Cover | None = None) -> Iterator[tuple[bytes, bytes]]:
    """A forward scan of at most ``limit`` keys starting from each source's head
    (newest source first).

    Every entry below the smallest edge (the *bound*) is known, so those entries
    are merged and passed through the visibility pass right here.  Short of
    ``limit`` live keys, the sources holding the bound back get their next run
    and the merge is redone (it is a few dozen entries); after SEEK_ROUNDS
    rounds the generic chunk merge continues from what is left.

    REQUIRES: ``limit >= 1``; the sources obey the module's REQUIRES."""
    # (map and zip rather than comprehensions: each comprehension is a Python frame, and
    # these run on every seek)
    runs, edges, rests = map(list, zip(*heads, strict=True))
    for _ in range(SEEK_ROUNDS):
        live = [e for e in edges if e is not None]
        bound = min(live) if live else None
        if bound is None:
            cuts = list(map(len, runs))
        else:
            cuts = [bisect_left(r, bound, key=_key_of) for r in runs]
        if len(runs) == 1:
            chunk = runs[0][:cuts[0]]
        else:
            chunk = []
            for r, c in zip(runs, cuts, strict=True):
                chunk += r[:c]
            chunk.sort(key=_key_of)  # stable: newer sources stay first within a key
        if cover is None:
            out, last = _live(chunk, version, floor, None)
        else:
            out, last = _live_covered(chunk, version, floor, None, cover)
        if len(out) >= limit or bound is None:
            return guarded(out[:limit], guard)
        for i, (e, rest) in enumerate(zip(edges, rests, strict=True)):
            if e == bound and rest is not None:  # this source holds the bound back: its next run
                more = next(rest, None)
                if more is None:
                    edges[i] = rests[i] = None
                else:
                    runs[i] = runs[i] + more
                    edges[i] = more[-1][0]
    # Still short (many invisible entries): hand the leftovers to the generic merge.
    sources = [_Source(rest, r[c:]) for r, c, rest in zip(runs, cuts, rests, strict=True)]
    more_chunks = sources[0].buf_then_runs() if len(sources) == 1 else _chunks(sources, False)
    return chain(guarded(out, guard), sticky(_visible(guarded_runs(more_chunks, guard), version,
                                                      floor, False, limit - len(out), last, cover)))
