"""What every open handle (store, keyspace, snapshot, log, dbm, their asyncio wrappers)
refuses: to be pickled.

A handle is an open store in this process -- its threads, descriptors, LOCK and the
exit hook that closes it (shutdown.py) -- and none of that crosses to another
process.  Passed to a ``multiprocessing`` child started by spawn or forkserver, it
failed deep in pickle with ``cannot pickle '_thread.lock' object``, naming neither
the handle nor what to do; a child opens the store itself, from its path.
"""

from __future__ import annotations

from typing import NoReturn

__all__ = ["ProcessLocal"]


class ProcessLocal:
    """A mixin: pickling raises a TypeError naming the handle and what to do."""

    __slots__ = ()

    _handle_kind = "store handle"
    """What the errors call the object ("store", "log"...)."""

    def __reduce__(self) -> NoReturn:
        raise TypeError(
            f"cannot pickle a banyanstore {self._handle_kind} ({type(self).__name__}): it is "
            f"open in this process only; pass its path and open it in the other process")
