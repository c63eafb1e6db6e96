"""The worker process main loop (see workers.py): ``python -m banyanstore.lsm.worker``.

Reads pickled ``(function, args)`` from stdin, answers pickled ``(True, result)``
or ``(False, exception)`` on stdout, and exits when stdin closes -- or when its
parent dies (``PR_SET_PDEATHSIG`` on Linux), so no worker outlives its store.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import sys

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: stdin EOF still ends the loop
        pass
    if os.getppid() == 1:  # the parent died before prctl took effect
        sys.exit(0)


def main() -> None:
    _die_with_parent()
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    while True:
        try:
            fn, args = pickle.load(inp)
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
