"""The Log's reading conveniences: ``read(start, end, limit)``, ``len()``, iteration,
and ``follow()``, the blocking tail."""

from __future__ import annotations

import math
import threading
import time

import pytest
from log_helpers import open_log
from log_helpers import payload as _payload

from banyanstore.errors import LogRangeError, StoreClosedError
from banyanstore.log import Log


def payload(seq: int) -> bytes:
    return _payload(seq, 300)


def _filled(env, root, count: int = 1000, **kw) -> Log:  # type: ignore[no-untyped-def]
    log = open_log(env, root, **kw)
    for seq in range(1, count + 1):
        log.append(payload(seq))  # SMALL: 64 KiB segments, so reads cross several
    assert log.stats()["segments"] > 3
    return log


def _expected(seqs: range) -> list[tuple[int, bytes]]:
    return [(s, payload(s)) for s in seqs]


def test_read_bounds_and_limit(env_dir):
    env, root = env_dir
    with _filled(env, root) as log:
        assert list(log.read()) == _expected(range(1, 1001))
        assert list(log.read(100, 850)) == _expected(range(100, 850))
        assert list(log.read(100, end=10_000)) == _expected(range(100, 1001))
        assert list(log.read(100, 850, limit=7)) == _expected(range(100, 107))
        assert list(log.read(150, limit=600)) == _expected(range(150, 750))
        assert list(log.read(limit=3)) == _expected(range(1, 4))
        assert list(log.read(990, limit=100)) == _expected(range(990, 1001))
        assert list(log.read(100, 100)) == [] and list(log.read(100, 50)) == []
        assert list(log.read(5, limit=0)) == []
        assert list(log.read(1001)) == []  # last_seq + 1: nothing yet, not an error


def test_a_read_iterator_reads_its_snapshot_to_the_end_after_close(env_dir):
    # docs/api.md (errors): a read() iterator is a snapshot of the segments it pinned; it
    # reads them to its end after close(), the same records a reopened log holds.
    env, root = env_dir
    log = _filled(env, root)
    records = log.read(10, 900)
    assert next(records) == (10, payload(10))
    log.close()
    with pytest.raises(StoreClosedError):
        log.read()
    assert list(records) == _expected(range(11, 900))
    with open_log(env, root, read_only=True) as again:
        assert list(again.read(10, 900)) == _expected(range(10, 900))


@pytest.mark.parametrize(("kwargs", "error", "names"), [
    ({"start": "1"}, TypeError, "start"), ({"start": True}, TypeError, "start"),
    ({"start": 1.0}, TypeError, "start"), ({"end": b"9"}, TypeError, "end"),
    ({"end": False}, TypeError, "end"), ({"limit": "3"}, TypeError, "limit"),
    ({"limit": 2.0}, TypeError, "limit"), ({"limit": -1}, ValueError, "limit"),
    ({"start": 0}, LogRangeError, "start"), ({"start": 1002}, LogRangeError, "start"),
])
def test_read_rejects_bad_arguments(env_dir, kwargs, error, names):
    env, root = env_dir
    with _filled(env, root) as log:
        with pytest.raises(error, match=names):
            log.read(**kwargs)


def test_len_and_iteration(env_dir):
    env, root = env_dir
    with open_log(env, root) as log:
        assert len(log) == 0 and list(log) == []
        for seq in range(1, 1001):
            log.append(payload(seq))
        assert len(log) == 1000
        assert [seq for seq, _ in log] == list(range(1, 1001))
        assert log.truncate_before(500) > 0
        assert len(log) == log.last_seq - log.first_seq + 1 < 1000
        assert list(log) == _expected(range(log.first_seq, 1001))
    with open_log(env, root, read_only=True) as again:
        assert len(again) == 1000 - again.first_seq + 1


def test_follow_yields_what_is_there_then_what_is_appended_across_rotations(env_dir):
    env, root = env_dir
    with open_log(env, root) as log:
        for seq in range(1, 11):
            log.append(payload(seq))
        got: list[tuple[int, bytes]] = []
        total = 1500  # ~ 8 segments of 64 KiB: the tail crosses rotations

        def consume() -> None:
            for item in log.follow(1, timeout=30):
                got.append(item)
                if item[0] == total:
                    return

        consumer = threading.Thread(target=consume)
        consumer.start()
        for seq in range(11, total + 1, 7):
            log.append_many([payload(s) for s in range(seq, min(seq + 7, total + 1))])
        consumer.join(60)
        assert not consumer.is_alive()
        assert got == _expected(range(1, total + 1))
        assert log.stats()["segments"] > 5


def test_follow_timeout_ends_the_iterator_when_nothing_comes(env_dir):
    env, root = env_dir
    with open_log(env, root) as log:
        log.append_many([b"a", b"b"])
        assert list(log.follow(timeout=0)) == [(1, b"a"), (2, b"b")]
        t0 = time.monotonic()
        assert list(log.follow(3, timeout=0.05)) == []
        assert time.monotonic() - t0 >= 0.05  # it did wait (a lower bound, not a speed claim)
        follower = log.follow(2, timeout=0.05)
        assert next(follower) == (2, b"b")
        log.append(b"c")  # arrives while the consumer is away: yielded next, no waiting
        assert list(follower) == [(3, b"c")]


@pytest.mark.parametrize("timeout", [math.inf, 1e300, 10**30], ids=["inf", "1e300", "int-1e30"])
def test_follow_with_a_timeout_beyond_any_clock_waits_like_none(env_dir, timeout):
    """A timeout longer than the platform can wait in one go (math.inf included) is
    accepted at the call, so it must wait -- not raise OverflowError once iterated."""
    env, root = env_dir
    with open_log(env, root) as log:
        log.append(b"a")
        threading.Timer(0.05, log.append, (b"b",)).start()
        follower = log.follow(2, timeout=timeout)
        assert next(follower) == (2, b"b")


def test_follow_ends_cleanly_when_the_log_is_closed(env_dir):
    env, root = env_dir
    log = open_log(env, root)
    log.append(b"first")
    seen: list[int] = []
    finished = threading.Event()

    def consume() -> None:
        for seq, _ in log.follow(1):  # no timeout: only close() ends it
            seen.append(seq)
        finished.set()

    consumer = threading.Thread(target=consume)
    consumer.start()
    deadline = time.monotonic() + 30
    while not seen and time.monotonic() < deadline:
        time.sleep(0.01)
    log.append(b"second")
    log.close()
    consumer.join(30)
    assert finished.is_set(), "the follower did not end on close"
    assert seen[0] == 1 and set(seen) <= {1, 2}
    with pytest.raises(StoreClosedError):
        log.follow()


def test_follow_raises_log_range_error_when_it_fell_behind_truncation(env_dir):
    env, root = env_dir
    with _filled(env, root) as log:
        follower = log.follow(1, timeout=0)
        assert next(follower) == (1, payload(1))
        for seq in range(1001, 2001):
            log.append(payload(seq))
        assert log.truncate_before(1800) > 0
        # What it had started reading stays readable (pinned); what came after was cut.
        assert [s for s, _ in _take(follower, 999)] == list(range(2, 1001))
        with pytest.raises(LogRangeError):
            next(follower)


def _take(it, n):  # type: ignore[no-untyped-def]
    return [next(it) for _ in range(n)]


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"timeout": -1}, ValueError), ({"timeout": math.nan}, ValueError),
    ({"timeout": "1"}, TypeError), ({"timeout": True}, TypeError),
    ({"start": "1"}, TypeError), ({"start": 5}, LogRangeError),
])
def test_follow_rejects_bad_arguments_at_the_call(env_dir, kwargs, error):
    env, root = env_dir
    with open_log(env, root) as log:
        log.append_many([b"a", b"b", b"c"])
        with pytest.raises(error, match=next(iter(kwargs))):
            log.follow(**kwargs)


def test_a_read_only_log_follows_a_writer_by_refreshing(env_dir):
    env, root = env_dir
    with open_log(env, root) as writer:
        writer.append(payload(1))
        writer.sync()
        with open_log(env, root, read_only=True, follow_interval_ms=5) as reader:
            got: list[int] = []

            def consume() -> None:
                for seq, record in reader.follow(1, timeout=30):
                    assert record == payload(seq)
                    got.append(seq)
                    if seq == 300:
                        return

            consumer = threading.Thread(target=consume)
            consumer.start()
            for seq in range(2, 301):
                writer.append(payload(seq))
                if seq % 50 == 0:
                    writer.sync()  # hands the records to the OS, where the reader sees them
            writer.sync()
            consumer.join(60)
            assert not consumer.is_alive() and got == list(range(1, 301))


def test_what_a_closed_log_answers_and_refuses_is_what_docs_api_md_lists(tmp_path) -> None:
    """docs/api.md (Log): after close() the operations raise StoreClosedError and what
    describes the log answers as it was at the close."""
    import banyanstore
    log = banyanstore.open_log(tmp_path / "log")
    for i in range(5):
        log.append(b"r%d" % i, sync=False)
    log.close()
    for call in (lambda: log.append(b"x"), lambda: log.append_many([b"x"]), lambda: log.get(1),
                 lambda: list(log.read()), lambda: list(log), lambda: next(log.follow(timeout=0)),
                 log.sync, log.rotate, lambda: log.truncate_before(2), log.refresh):
        with pytest.raises(StoreClosedError):
            call()
    assert log.closed and (log.first_seq, log.last_seq, log.durable_seq, len(log)) == (1, 5, 5, 5)
    assert log.failure is None and isinstance(log.stats(), dict) and log.wait_durable(5) is None


@pytest.mark.parametrize("holds", [[], ["LOCK"]], ids=["empty", "lock-only"])
def test_create_if_missing_false_creates_no_log_in_a_directory_holding_none(tmp_path, holds) -> None:
    """open_log(dir, create_if_missing=False) on an empty directory (or one holding only a
    LOCK) created a log there -- a segment and a LOCK -- where a missing directory, and
    open() of a store in the same place, raise StoreNotFoundError.  Now it raises
    LogNotFoundError (a StoreNotFoundError) and adds nothing."""
    import os

    import banyanstore
    from banyanstore.errors import StoreNotFoundError
    from banyanstore.log import LogNotFoundError
    for name in holds:
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(LogNotFoundError, match="holds no log") as info:
        banyanstore.open_log(tmp_path, create_if_missing=False)
    assert isinstance(info.value, StoreNotFoundError) and str(tmp_path) in str(info.value)
    assert sorted(os.listdir(tmp_path)) == holds
    with banyanstore.open_log(tmp_path) as log:  # the default still creates one there
        log.append(b"r")
    with banyanstore.open_log(tmp_path, create_if_missing=False) as log:
        assert log.get(1) == b"r"


def test_log_index_is_get_and_in_is_the_seq_range(env_dir) -> None:
    """``log[seq]`` is ``log.get(seq)`` (LogRangeError, an IndexError, outside the log) and
    ``seq in log`` is ``first_seq <= seq <= last_seq``: before, ``3 in log`` iterated every
    record comparing it with 3 and said False, and ``log[3]`` was a TypeError."""
    env, root = env_dir
    with _filled(env, root) as log:
        assert log.truncate_before(500) > 0
        first, last = log.first_seq, log.last_seq
        assert log[first] == payload(first) and log[last] == payload(last)
        assert first in log and last in log and (first + last) // 2 in log
        for missing in (first - 1, last + 1, 0, -1):
            assert missing not in log
            with pytest.raises(IndexError, match=f"seq {missing} is outside"):
                log[missing]
            with pytest.raises(LogRangeError):
                log.get(missing)
        log.append(b"new")
        assert last + 1 in log and log[last + 1] == b"new"


@pytest.mark.parametrize("bad", ["1", 1.0, True, None, slice(1, 3), b"1"])
def test_log_index_and_in_refuse_what_is_not_a_seq(tmp_path, bad) -> None:
    import banyanstore
    with banyanstore.open_log(tmp_path / "log") as log:
        log.append_many([b"a", b"b", b"c"])
        with pytest.raises(TypeError, match="seq must be an int"):
            log[bad]
        with pytest.raises(TypeError, match="seq must be an int"):
            bad in log  # noqa: B015


def test_log_index_and_in_after_close_raise_as_get_does(tmp_path) -> None:
    import banyanstore
    log = banyanstore.open_log(tmp_path / "log")
    log.append(b"a")
    log.close()
    with pytest.raises(StoreClosedError):
        log[1]
    with pytest.raises(StoreClosedError):
        1 in log  # noqa: B015


def test_a_read_of_an_empty_log_says_it_is_empty(tmp_path) -> None:
    """``log.get(1)`` of an empty log said "seq 1 is outside [1, 0]": a range no reader
    parses at a glance as "the log holds nothing yet"."""
    with Log.open(str(tmp_path / "log")) as log:
        for call in (lambda: log.get(1), lambda: log[1], lambda: log.get(0)):
            with pytest.raises(LogRangeError, match=r"is outside the log, which is empty \(its first record "
                                                    r"will be seq 1\)"):
                call()
        log.append(b"x")
        with pytest.raises(LogRangeError, match=r"^seq 2 is outside \[1, 1\]$"):
            log.get(2)
