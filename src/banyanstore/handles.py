"""What every open handle (store, keyspace, snapshot, log, dbm, their asyncio wrappers)
refuses: to be pickled or copied.

A handle is an open store in this process -- its threads, descriptors, LOCK and the
exit hook that closes it (shutdown.py) -- and none of that crosses to another
process.  Passed to a ``multiprocessing`` child started by spawn or forkserver, it
failed deep in pickle with ``cannot pickle '_thread.lock' object``, naming neither
the handle nor what to do; a child opens the store itself, from its path.

``copy.copy`` shared every internal with the original (closing the copy closed the
store under the original) and ``copy.deepcopy`` failed the same way as pickle:
there is no second handle to make -- the same one is shared, by threads too.  A
snapshot defines its own copy (a new snapshot at its version), which stays.
"""

from __future__ import annotations

from typing import Any, NoReturn

__all__ = ["ProcessLocal"]


class ProcessLocal:
    """A mixin: pickling and copying raise a TypeError naming the handle and what to do."""

    __slots__ = ()

    _handle_kind = "store handle"
    """What the errors call the object ("store", "log"...)."""

    def __reduce__(self) -> NoReturn:
        raise TypeError(
            f"cannot pickle a banyanstore {self._handle_kind} ({type(self).__name__}): it is "
            f"open in this process only; pass its path and open it in the other process")

    def __copy__(self) -> Any:
        raise TypeError(
            f"cannot copy a banyanstore {self._handle_kind} ({type(self).__name__}): use the "
            f"same object")

    def __deepcopy__(self, memo: Any) -> Any:
        return self.__copy__()
