"""Atomic batches: every operation commits under one version, or none does.

A batch may span keyspaces; each one it names must exist already (create it
with ``store.keyspace(name)``, as column families are created before use), so
a misspelt name raises :class:`~banyanstore.errors.KeyspaceNotFoundError`
instead of filling a new keyspace nobody reads.

A batch has no reads: there is no read-your-writes inside a batch.  Until it
commits, reads (``store.get``, scans, snapshots) see none of its operations,
and it offers no ``get`` of its own; within one batch, a later operation on
the same key replaces an earlier one.  Keep what the batch writes in your own
variables if the code building it needs them again.

>>> import banyanstore, tempfile
>>> with tempfile.TemporaryDirectory() as d, banyanstore.open(d) as store:
...     _ = store.keyspace("index")
...     with store.batch() as b:
...         b.put(b"span:1", b"payload")
...         b.put(b"trace:9|span:1", b"", keyspace="index")
...         b.delete(b"span:0")
...     b.version == store.version, store.keyspace("index").get(b"trace:9|span:1")
(True, b'')
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

from ..arguments import BytesLike, as_bytes, check_sync
from .view import KeyspaceState
from .writer import Op, Writer

__all__ = ["Batch"]


class Batch:
    """Operations collected for one atomic commit.  Leaving the ``with`` block
    without an exception commits; with an exception, nothing is written."""

    __slots__ = ("_writer", "_resolve", "_sync", "_ops", "_ranges", "_added", "version", "_done",
                 "_discarded", "_failed", "store")

    def __init__(self, writer: Writer, resolve: Callable[[Any], KeyspaceState],
                 sync: bool | None, store: Any = None) -> None:
        """Operations for ``writer``; ``resolve`` turns a ``keyspace=`` argument into the
        keyspace (the store's rules: None is the default, names must exist); ``store``
        is the store that made it (what ``commit`` writes to)."""
        self.store = store
        """The :class:`~banyanstore.lsm.store.Store` this batch commits to."""
        self._writer = writer
        self._resolve = resolve
        self._sync = sync
        self._ops: list[Op] = []
        self._ranges: list[tuple[KeyspaceState, bytes, bytes]] = []
        # What len() counts: the operations added.  Not len(_ops) + len(_ranges): a
        # delete_range drops the earlier writes it covers from _ops, and the caller
        # who added them would see the batch shrink.
        self._added = 0
        self.version: int | None = None
        """The batch's version once committed (None for an empty batch)."""
        self._done = False
        self._discarded = False  # (what repr says of a batch done without a version)
        # What a commit that failed raised, as text: the exception itself would keep its
        # traceback's frames (this batch among them) alive in a cycle.
        self._failed: str | None = None

    # A batch holds operations for a store open in this process and the store's
    # writer. copy.copy shared its operation list (a put added to the copy was committed
    # by the original, uncounted by its len(), and again by the copy); deepcopy and
    # pickle failed on an internal object that differed by engine. Refused, as for the
    # handles (banyanstore.handles), saying what to do instead.
    def __reduce__(self) -> NoReturn:
        raise TypeError("cannot pickle a banyanstore batch: it holds operations for a store "
                        "open in this process; send the keys and values, and build the batch "
                        "with store.batch() where the store is open")

    def __copy__(self) -> NoReturn:
        raise TypeError("cannot copy a banyanstore batch: make another with store.batch() "
                        "and add the operations to it")

    def __deepcopy__(self, memo: Any) -> NoReturn:
        self.__copy__()

    def put(self, key: BytesLike, value: BytesLike, *, keyspace: Any = None) -> None:
        """Add a write of ``value`` under ``key`` (in ``keyspace``: a name or a handle;
        default the store's own), checked now and written at the commit."""
        self._check_addable()
        value = as_bytes(value, "value")
        key = self._writer.check_entry(key, value)
        self._ops.append((self._resolve(keyspace), key, value))
        self._added += 1

    def delete(self, key: BytesLike, *, keyspace: Any = None) -> None:
        """Add a tombstone for ``key`` (in ``keyspace``, as for :meth:`put`)."""
        self._check_addable()
        ks = self._resolve(keyspace)
        key = self._writer.check_entry(key, None, ks)  # (a held key over max_key_size too)
        self._ops.append((ks, key, None))
        self._added += 1

    def delete_range(self, start: BytesLike, end: BytesLike, *, keyspace: Any = None) -> None:
        """Delete the keys ``start <= key < end`` (a range tombstone, see
        :meth:`Keyspace.delete_range`), including the ones this batch wrote before;
        its writes after this call are kept."""
        self._check_addable()
        start, end = self._writer.check_range(start, end)
        ks = self._resolve(keyspace)
        # A range tombstone hides only older versions, and the batch's writes share its
        # version: so the writes it must delete are dropped here, the later ones kept.
        self._ops = [op for op in self._ops if op[0] is not ks or not start <= op[1] < end]
        self._ranges.append((ks, start, end))
        self._added += 1

    def __repr__(self) -> str:
        where = f"<banyanstore.Batch of {getattr(self.store, 'path', None)!r}: "
        if self._failed is not None:
            return f"{where}commit failed ({self._failed})>"
        if self._discarded:
            return f"{where}discarded>"
        if self._done:
            return f"{where}committed at version {self.version}>"  # (None: it was empty)
        return f"{where}{self._added} operations>"

    def __len__(self) -> int:
        """The operations added (each put, delete and delete_range counts one, also a
        write a later delete_range of the batch deletes); 0 once committed or discarded."""
        return self._added

    def _check_open(self) -> None:
        if self._failed is not None:
            # Not "already committed": a retry loop would take that for a write made.
            raise RuntimeError(f"this batch's commit failed ({self._failed}); a "
                               "batch commits at most once: build another with store.batch()")
        if self._done:
            raise RuntimeError("this batch was already committed or discarded")

    def _check_addable(self) -> None:
        """:meth:`_check_open`, and StoreClosedError once the store is closed: an
        operation added then could never commit (it was accepted, and only the commit
        raised).  Not in :meth:`commit`, whose failure on a closed store is recorded
        as a failed commit."""
        self._check_open()
        if self._writer.closed:
            self._writer.check_writable()  # raises the store's StoreClosedError

    def commit(self, *, sync: bool | None = None) -> int | None:
        """Write every operation under one new version; returns it."""
        check_sync(sync)
        self._check_open()
        self._done = True  # (before the write: a second commit must not write it again)
        try:
            self.version = self._writer.write_batch(self._ops, self._sync if sync is None else sync,
                                                    self._ranges)
        except BaseException as exc:
            self._failed = f"{type(exc).__name__}: {exc}"
            raise
        self._ops, self._ranges, self._added = [], [], 0
        return self.version

    def discard(self) -> None:
        """Drop every operation added, writing nothing; the batch then takes no more
        (build another with ``store.batch()``)."""
        self._done = self._discarded = True
        self._ops, self._ranges, self._added = [], [], 0

    def __enter__(self) -> Batch:
        # Done, failed or of a closed store: raise here, as a closed store's `with` does
        # (every operation inside the block would raise).
        self._check_addable()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._done:
            return
        if exc_type is None:
            self.commit()
        else:
            self.discard()
