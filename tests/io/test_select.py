"""make_env: mode selection, the auto fallback, and the probe's reasons."""

from __future__ import annotations

import errno
import logging

import pytest

from banyanstore.errors import IOModeUnavailableError
from banyanstore.io import make_env as lazy_make_env
from banyanstore.io import select as select_mod
from banyanstore.io.posix import PosixEnv
from banyanstore.io.select import make_env
from banyanstore.io.testing import io_uring_skip_reason
from banyanstore.io.threaded import ThreadedEnv
from banyanstore.io.uring import reason_for
from banyanstore.io.uring_probe import DISABLE_ENV_VAR, probe_io_uring
from banyanstore.options import Options

needs_uring = pytest.mark.skipif(io_uring_skip_reason() is not None,
                                 reason=f"io_uring unavailable: {io_uring_skip_reason()}")


def test_sync_and_nonblocking() -> None:
    env = make_env(Options(io_mode="sync"))
    assert type(env) is PosixEnv and env.describe() == {"io_mode": "sync", "direct_io": False}
    env.close()
    env = lazy_make_env(Options(io_mode="nonblocking", io_threads=3))
    assert isinstance(env, ThreadedEnv) and env.threads == 3
    assert env.describe()["io_mode"] == "nonblocking"
    env.close()
    env = make_env(None)  # the defaults
    assert env.mode == "sync"
    env.close()


@needs_uring
def test_io_uring_and_auto_when_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DISABLE_ENV_VAR, raising=False)
    env = make_env(Options(io_mode="io_uring", io_uring_entries=64))
    assert env.mode == "io_uring" and env.describe()["io_uring_entries"] == 64
    env.close()
    env = make_env(Options(io_mode="auto"))
    assert env.describe() == {"io_mode": "io_uring", "direct_io": False, "io_uring_entries": 256,
                              "io_uring_opcode": "READ", "io_mode_requested": "auto",
                              "io_mode_fallback_reason": None}
    env.close()


def test_auto_falls_back_with_env_var(monkeypatch: pytest.MonkeyPatch,
                                      caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(DISABLE_ENV_VAR, "1")
    monkeypatch.setattr(select_mod, "_logged", set())
    with caplog.at_level(logging.WARNING, logger="banyanstore.io"):
        envs = [make_env(Options(io_mode="auto")) for _ in range(3)]
    info = envs[0].describe()
    assert info["io_mode"] == "sync"
    assert info["io_mode_requested"] == "auto"
    assert DISABLE_ENV_VAR in str(info["io_mode_fallback_reason"])
    fallback_logs = [r for r in caplog.records if "io_uring is unavailable" in r.getMessage()]
    assert len(fallback_logs) == 1  # logged once, not per env
    for env in envs:
        env.close()


def test_explicit_io_uring_unavailable_raises_with_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DISABLE_ENV_VAR, "1")
    with pytest.raises(IOModeUnavailableError, match=DISABLE_ENV_VAR):
        make_env(Options(io_mode="io_uring"))
    assert probe_io_uring(None) is not None
    monkeypatch.setenv(DISABLE_ENV_VAR, "0")
    assert probe_io_uring(None) == io_uring_skip_reason()


def test_probe_failure_reasons(monkeypatch: pytest.MonkeyPatch) -> None:
    assert reason_for(OSError(errno.EPERM, "x")).startswith(
        "io_uring is disabled (sysctl kernel.io_uring_disabled, group restriction, or seccomp)")
    assert reason_for(OSError(errno.ENOSYS, "x")).startswith("kernel has no io_uring (needs Linux >= 5.1)")
    assert reason_for(OSError(errno.ENOMEM, "x")).startswith("memlock limit too low (ulimit -l)")
    assert "EBADF" in reason_for(OSError(errno.EBADF, "Bad file descriptor"))
    # A failing io_uring_setup is reported, not raised.
    import banyanstore.io.uring_probe as probe

    def broken_ring(entries: int) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(probe, "Ring", broken_ring)
    monkeypatch.setattr(probe, "_cache", {})
    assert str(probe_io_uring(None)).startswith("io_uring is disabled")
    monkeypatch.setattr(probe, "syscall_numbers", lambda: None)
    monkeypatch.setattr(probe, "_cache", {})
    assert "unknown on this platform" in str(probe_io_uring(None))


@needs_uring
def test_probe_with_direct_io(tmp_path: object) -> None:
    assert probe_io_uring(Options(direct_io=True), directory=str(tmp_path)) is None
    env = make_env(Options(io_mode="auto", direct_io=True), directory=str(tmp_path))
    assert env.describe()["direct_io"] is True
    env.close()
