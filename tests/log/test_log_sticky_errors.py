"""A Log iterator that raised gives no further records: every later ``next()`` raises the
same error (docs/api.md), never ``StopIteration`` -- a consumer that catches the error and
calls ``next()`` again must not take the end of the iterator for the end of the log."""

from __future__ import annotations

import pytest
from log_helpers import open_log, payload

from banyanstore.errors import LogRangeError, StorageIOError, from_oserror
from banyanstore.io.hooked import HookedEnv


class FailingReads(HookedEnv):
    """Fails every ``read``/``read_batch`` with EIO once ``failing`` is set."""

    failing = False

    def hook(self, op, paths, nbytes=0):  # type: ignore[no-untyped-def]
        if self.failing and op in ("read", "read_batch", "open_readable"):
            raise from_oserror(op, paths[0], OSError(5, "injected EIO"))


def test_follow_behind_a_truncation_raises_at_every_next(env_dir):
    env, root = env_dir
    log = open_log(env, root)
    for seq in range(1, 1001):
        log.append(payload(seq))
    follower = log.follow(1, timeout=0)
    for seq in range(1, 1001):
        assert next(follower)[0] == seq
    for seq in range(1001, 2001):
        log.append(payload(seq))
    log.truncate_before(1800)
    for _ in range(3):
        with pytest.raises(LogRangeError):
            next(follower)
    log.close()


def test_read_that_failed_raises_at_every_next(env_dir):
    env, root = env_dir
    failing = FailingReads(env)
    log = open_log(failing, root)
    for seq in range(1, 2001):
        log.append(payload(seq))
    log.close()
    log = open_log(failing, root)
    records = log.read()
    assert next(records) == (1, payload(1))
    failing.failing = True
    with pytest.raises(StorageIOError):
        for _ in records:
            pass
    for _ in range(3):
        with pytest.raises(StorageIOError):
            next(records)
    failing.failing = False
    log.close()
