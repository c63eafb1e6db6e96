"""``banyanstore.open``: which kind of store an open returns.

A writer gets a :class:`~banyanstore.lsm.store.Store`; ``read_only=True`` (given in
any way options are given) a :class:`~banyanstore.lsm.follower.FollowerStore`, a
reader that can catch up with a writer in another process.  The choice lives here,
above both classes, so the store module never imports its own subclass.
"""

from __future__ import annotations

from typing import Any

from ..io.base import Env
from ..options import Options, resolve_options
from .follower import FollowerStore
from .store import Store

__all__ = ["open_store"]


def open_store(path: Any, *, options: Options | None = None, env: Env | None = None,
               clock: Any = None, monotonic: Any = None, **kwargs: Any) -> Store:
    """Open the store at ``path``: a :class:`FollowerStore` when the resolved options
    say ``read_only``, else a :class:`Store` (see :meth:`Store.open` for ``clock`` and
    ``monotonic``)."""
    opts = resolve_options(options, kwargs)
    cls = FollowerStore if opts.read_only else Store
    return cls.open(path, options=opts, env=env, clock=clock, monotonic=monotonic)
