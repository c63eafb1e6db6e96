"""The worker process main loop (see workers.py): ``python -m banyanstore.lsm.worker``.

Reads pickled ``(function, args, stream_at)`` from stdin (when ``stream_at`` is set,
followed by bytes pieces in frames up to an end frame -- lsm/flushbuf.py -- joined into
``args[stream_at]``),
answers pickled ``(True, result)`` or ``(False, exception)`` on stdout, and exits when
stdin closes -- or when its parent dies (``PR_SET_PDEATHSIG`` on Linux), so no worker
outlives its store.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import sys
from typing import Any

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: stdin EOF still ends the loop
        pass
    if os.getppid() == 1:  # the parent died before prctl took effect
        sys.exit(0)


def _with_streamed(inp: Any, args: tuple[Any, ...], at: int) -> tuple[Any, ...]:
    """``args`` with ``args[at]`` replaced by the join of the pieces that follow."""
    from .flushbuf import read_frames
    return args[:at] + (b"".join(read_frames(inp)),) + args[at + 1:]


def main() -> None:
    _die_with_parent()
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            fn, args, stream_at = pickle.load(inp)
            if stream_at is not None:
                args = _with_streamed(inp, args, stream_at)
        except EOFError:
            return
        try:
            reply = (True, fn(*args))
        except BaseException as exc:  # noqa: BLE001 - every failure goes back to the store
            try:
                pickle.dumps(exc)
                reply = (False, exc)
            except Exception:  # noqa: BLE001 - an exception that does not pickle
                reply = (False, RuntimeError(f"{type(exc).__name__}: {exc}"))
        pickle.dump(reply, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()


if __name__ == "__main__":
    main()
