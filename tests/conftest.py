"""Shared fixtures: every backend behind one parametrized fixture.

* ``env_dir`` -> ``(env, root_dir)`` for io modes sync, nonblocking, io_uring and memory;
  ``root_dir`` is an empty existing directory (``tmp_path`` for real backends,
  ``/mem/<n>`` for the in-memory one).  io_uring is skipped, with the probe's
  reason, only where it cannot work.
* ``real_env_dir`` -> the same for the three real backends only.

The env is closed at teardown.

Every test under ``tests/`` must leave the SIGINT handler as it found it (an autouse
guard): a test that relies on Ctrl-C raising KeyboardInterrupt -- and a developer's
Ctrl-C -- would silently lose it to a handler a test before it left behind; and the
trace function as it found it (coverage's, when measured).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from banyanstore.io.base import Env
from banyanstore.io.testing import ALL_MODES, REAL_MODES, io_uring_skip_reason, make_test_env, new_root


@pytest.fixture(autouse=True)
def _sigint_handler_left_alone() -> Iterator[None]:
    """Fail (and repair) a test that leaves the SIGINT handler changed."""
    before = signal.getsignal(signal.SIGINT)
    yield
    after = signal.getsignal(signal.SIGINT)
    if after is not before:
        signal.signal(signal.SIGINT, before)
        pytest.fail(f"the test left the SIGINT handler changed: {before!r} -> {after!r}")


@pytest.fixture(autouse=True)
def _tracer_left_alone() -> Iterator[None]:
    """Fail (and repair) a test that leaves the trace function changed: a test that traced
    and then cleared it removed coverage's tracer for every later test in its worker."""
    before = sys.gettrace()
    yield
    after = sys.gettrace()
    if after is not before:
        sys.settrace(before)
        pytest.fail(f"the test left the trace function changed: {before!r} -> {after!r}")


def _env_and_root(mode: str, tmp_path: Path) -> Iterator[tuple[Env, str]]:
    if mode == "io_uring":
        reason = io_uring_skip_reason()
        if reason is not None:
            pytest.skip(f"io_uring unavailable: {reason}")
    env = make_test_env(mode)
    try:
        yield env, new_root(env, str(tmp_path))
    finally:
        env.close()


@pytest.fixture(params=ALL_MODES)
def env_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Env, str]]:
    """``(env, root_dir)`` for every IO backend (see the module docstring)."""
    yield from _env_and_root(request.param, tmp_path)


@pytest.fixture(params=REAL_MODES)
def real_env_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Env, str]]:
    """``(env, root_dir)`` for the sync, nonblocking and io_uring backends."""
    yield from _env_and_root(request.param, tmp_path)
