"""Closing the stores and logs a program left open when the interpreter exits.

A program that opens a store and ends without ``close()`` -- a script that
just returns, an exception that ends ``main`` -- must lose nothing, and the
next open should find the store as a clean ``close()`` leaves it (memtables in
tables, nothing to replay).  Every writer store and log registers here when it
has opened (:func:`track`) and leaves when it closes (:func:`untrack`); an
:mod:`atexit` hook closes what is still open, newest first, so a store is
closed before the WAL it embeds.

Why closing works at that moment: ``atexit`` hooks run after the interpreter
has joined the program's non-daemon threads and before it stops the daemon
ones, so a store's own flush, compaction and sync threads still run while it
closes; its worker processes are plain children (``lsm/workers.py``), not a
``multiprocessing`` pool with an exit hook of its own.

Tracking keeps an object alive until it is closed.  A store or log dropped
without ``close()`` would otherwise be collected while its threads, descriptors
and lock live on (they hold no reference to the handle): the process could not
open it again, and at exit nothing would close it.  Kept here, it stays open --
a second open in the process gets StoreLockedError, as for any open store --
and is closed at exit like one the program kept.

A forked child forgets its parent's objects and disowns them (``disown``): they
are closed handles there, whose ``close()`` -- a ``with`` block the child
leaves, its exit -- releases nothing, since closing them would write the
parent's files from a second process, cut its WAL under its writes and unlock
its lock.  A child that only shares the module state forgets them by the pid
check.

Durability does not depend on this hook: a record is in the kernel once
``put``/``append`` has returned (:mod:`banyanstore.log.writer`), so an exit
that skips ``atexit`` (``os._exit``, a fatal signal) loses nothing either; the
hook saves the next open its recovery work.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from .errors import BanyanStoreError

__all__ = ["track", "untrack", "track_reader", "close_all", "inside_own_call"]

_log = logging.getLogger("banyanstore")


class Closable(Protocol):
    @property
    def closed(self) -> bool: ...

    def close(self) -> None: ...

    def disown(self) -> None: ...


_lock = threading.Lock()
_open: dict[int, Closable] = {}  # token -> object, in the order they opened
_tokens = itertools.count(1)
_pid = os.getpid()
_readers: weakref.WeakSet[Closable] = weakref.WeakSet()  # read-only stores and logs


def track(obj: Closable) -> int:
    """Keep ``obj`` and close it at interpreter exit unless it is closed by then.
    Returns the token for :func:`untrack`."""
    token = next(_tokens)
    with _lock:
        _open[token] = obj
    return token


def track_reader(obj: Closable) -> None:
    """``obj`` (a read-only store or log) is disowned in a forked child like the tracked
    objects, but neither kept alive nor closed at exit: it writes nothing, so an exit
    without close() loses nothing, and one dropped unclosed is collected as before.  In
    a child it could not go on: a follow thread does not run there, and the parent's
    threads may have held its locks at the fork (a refresh or close waited for ever)."""
    with _lock:
        _readers.add(obj)


def untrack(token: int) -> None:
    """``obj`` was closed: nothing to do at exit."""
    with _lock:
        _open.pop(token, None)


def close_all() -> None:
    """Close every tracked object that is still open, newest first.  Errors are
    logged, never raised: one failing close must not keep the others open (an IO
    error in one line, anything else with its traceback)."""
    if os.getpid() != _pid:
        return
    with _lock:
        objs = list(_open.values())
    for obj in reversed(objs):
        if obj.closed:
            continue
        name = repr(obj)  # before close(), which makes it say "closed" even when it fails
        try:
            obj.close()
        except BanyanStoreError as exc:
            # An IO failure (a failed disk), whose message names the operation and the file:
            # one line.  Its traceback -- the engine's internals -- said nothing more, 30
            # lines for each store or log left open on the failed disk.
            _log.error("closing %s at interpreter exit failed: %s", name, exc)
        except Exception:  # noqa: BLE001 - reported, and the next object still gets closed
            _log.exception("closing %s at interpreter exit failed", name)


def inside_own_call(owner: object, calls: Iterable[Callable[..., Any]]) -> bool:
    """Whether this thread is inside one of ``owner``'s ``calls`` (bound methods of it),
    looking above the method that asks (``close()``, ``flush()`` -- itself one of the
    calls, maybe -- through its helper that calls this): a close() from a signal handler
    that interrupted one of them waits for ever for the lock that call holds.  A cold
    path (frames walked): ask only while the owner's lock is held."""
    import inspect
    holding = {getattr(f, "__func__", f).__code__ for f in calls}
    frame = inspect.currentframe()
    for _ in range(3):  # past this function, the helper, and the method that asks
        frame = frame.f_back if frame is not None else None
    while frame is not None:
        if frame.f_code in holding and frame.f_locals.get("self") is owner:
            return True
        frame = frame.f_back
    return False


def _disown_after_fork() -> None:
    """In a forked child (one thread, nothing else running): the parent's open objects
    are the parent's -- each is disowned, and none is closed at this process's exit."""
    global _lock, _open, _pid, _readers
    inherited = [*_open.values(), *_readers]  # (no lock: another thread may have held it)
    _lock = threading.Lock()
    _open = {}
    _readers = weakref.WeakSet()
    _pid = os.getpid()
    for obj in inherited:
        try:
            obj.disown()
        except Exception:  # noqa: BLE001, S110 - a fork hook must not fail; the next one still runs
            pass


atexit.register(close_all)
os.register_at_fork(after_in_child=_disown_after_fork)
