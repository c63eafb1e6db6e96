"""The lifecycle the store's background threads share (flusher, compactor).

A :class:`BackgroundThread` owns one daemon thread running :meth:`_run`, a
condition the thread sleeps on, and a stop flag; subclasses implement the loop.
"""

from __future__ import annotations

import threading

__all__ = ["BackgroundThread"]


class BackgroundThread:
    """Start, wake and stop one daemon thread that runs :meth:`_run`."""

    thread_name = "banyanstore-background"

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Wake the thread (new work, or a caller waiting for it)."""
        with self._cv:
            self._cv.notify_all()

    def stop(self) -> None:
        """Ask the thread to finish and join it (not from the thread itself)."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        thread = self._thread
        # (not started: a failed open's cleanup, after start() raised)
        if thread is not None and thread.ident is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:  # pragma: no cover - every subclass defines its loop
        raise NotImplementedError
