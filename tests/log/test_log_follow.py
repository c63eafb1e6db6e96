"""A read-only Log beside its writer: pinned segments, ``refresh()`` (log/follow.py)."""

from __future__ import annotations

import random
import threading

import pytest
from log_helpers import SMALL, open_log, payload, rewrite, segments

from banyanstore.errors import CorruptionError, LogRangeError, StorageIOError
from banyanstore.io.hooked import HookedEnv
from banyanstore.log import Log
from banyanstore.log.format import BLOCK_SIZE, FRAG_HEADER, HEADER_SIZE, SEQ_SIZE, fragment
from banyanstore.log.segment import MAX_RELISTS, list_segments, list_segments_after


def check(ro: Log, start: int | None = None) -> None:
    """Every record the reader can read (from ``start``) is the writer's, with no gap."""
    first = ro.first_seq if start is None else max(start, ro.first_seq)
    seqs = [seq for seq, data in ro.read(first) if data == payload(seq)]
    assert seqs == list(range(first, ro.last_seq + 1))


def test_refresh_follows_appends_rotations_and_truncation(env_dir):
    env, root = env_dir
    w = open_log(env, root)
    for seq in range(1, 301):
        w.append(payload(seq))
    w.sync()
    ro = open_log(env, root, read_only=True)
    assert (ro.first_seq, ro.last_seq) == (1, 300)
    for seq in range(301, 2001):
        w.append(payload(seq))
    assert ro.last_seq == 300  # until it catches up
    w.sync()
    assert ro.refresh() == 2000 and len(segments(env, f"{root}/log")) > 3
    check(ro)
    old_reader = ro.read(1)  # started before the writer removes segments
    assert w.truncate_before(1500) > 0
    assert ro.refresh() == 2000 and ro.first_seq == w.first_seq > 1
    check(ro)
    assert [seq for seq, _ in old_reader] == list(range(1, 2001))  # pinned: still all there
    assert ro.get(1999) == payload(1999)
    w.close()
    ro.close()


def test_refresh_reads_only_complete_records(env_dir):
    """A record cut short at the end of the live segment (a write in progress) is not
    read, and is read once it is complete; zero-filled space after it likewise."""
    env, root = env_dir
    w = open_log(env, root)
    for seq in range(1, 11):
        w.append(payload(seq, 100))
    w.close()
    path = segments(env, f"{root}/log")[-1]
    f = env.open_readable(path)
    good = f.read(0, f.size)
    f.close()
    record = b"".join(frag for _, frag in fragment(11, payload(11, 3000), BLOCK_SIZE - len(good)))
    ro = open_log(env, root, read_only=True)
    for cut in (3, 9, 1500):
        rewrite(env, path, good + record[:cut])
        assert ro.refresh() == 10
    rewrite(env, path, good + bytes(4096))  # space written ahead of the records
    assert ro.refresh() == 10
    rewrite(env, path, good + record)
    assert ro.refresh() == 11
    assert list(ro.read()) == [(seq, payload(seq, 100)) for seq in range(1, 11)] + [(11, payload(11, 3000))]
    ro.close()


def _follower_of_closed_writer(env, root: str, records: int, options=SMALL) -> Log:  # type: ignore[no-untyped-def]
    """A read-only log opened after records 1-10 were synced, then the writer appends up
    to ``records`` (100-byte payloads) and closes: the follower has not refreshed yet."""
    w = open_log(env, root)
    for seq in range(1, 11):
        w.append(payload(seq, 100))
    w.sync()
    ro = open_log(env, root, read_only=True, options=options)
    for seq in range(11, records + 1):
        w.append(payload(seq, 100))
    w.close()
    return ro


def test_damage_in_a_sealed_segment_is_corruption(env_dir):
    env, root = env_dir
    ro = _follower_of_closed_writer(env, root, 1000)
    sealed = segments(env, f"{root}/log")[0]
    f = env.open_readable(sealed)
    data = bytearray(f.read(0, f.size))
    f.close()
    assert len(data) > HEADER_SIZE + 2000
    data[HEADER_SIZE + 1500] ^= 0x40
    rewrite(env, sealed, bytes(data))
    with pytest.raises(CorruptionError, match="damaged log record"):
        ro.refresh()
    ro.close()


class StaleListing(HookedEnv):
    """Lists a directory as it was when :meth:`freeze` was called (a listing taken just
    before the writer removed segments)."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        super().__init__(inner)
        self.frozen: dict[str, list[str]] = {}

    def freeze(self, path: str) -> None:
        self.frozen[path] = self.inner.listdir(path)

    def listdir(self, path: str) -> list[str]:
        return self.frozen.pop(path, None) or self.inner.listdir(path)


def test_segments_removed_after_the_listing(env_dir):
    """Segments the writer removes between a reader's listing and its opening them:
    neither the open nor a refresh fails; the log starts later."""
    env, root = env_dir
    stale = StaleListing(env)
    w = open_log(env, root)
    for seq in range(1, 1001):
        w.append(payload(seq))
    w.sync()
    stale.freeze(f"{root}/log")
    w.truncate_before(600)
    ro = open_log(stale, root, read_only=True)
    assert ro.first_seq == w.first_seq and ro.last_seq == 1000
    check(ro)
    for seq in range(1001, 3001):
        w.append(payload(seq))
    w.sync()
    stale.freeze(f"{root}/log")
    w.truncate_before(2500)
    assert ro.refresh() == 3000
    check(ro)
    ro.close()
    w.close()


class BeforeOpen(HookedEnv):
    """Runs ``action`` once, right before the reader opens the file ``path`` (after it
    listed the directory): the writer moving on in that window."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        super().__init__(inner)
        self.path: str | None = None
        self.action = lambda: None

    def hook(self, op: str, paths: tuple[str, ...], nbytes: int = 0) -> None:
        if op == "open_readable" and paths[0] == self.path:
            self.path = None
            self.action()


def _rotate_and_cut(w: Log, records: int) -> None:
    """What a store's flush does to its WAL: a new segment, records in it, and every
    older segment removed."""
    w.rotate()
    for _ in range(records):
        w.append(payload(w.last_seq + 1))
    w.truncate_before(w.last_seq)


def test_refresh_when_the_newest_listed_segment_is_gone(env_dir):
    """The writer rotates and removes every segment the reader listed (the newest
    included) before the reader opens them: the reader lists again and reaches the
    writer's end.  It used to stop at the listing, with no segment, and report the
    log ending before records appended before refresh() was called -- the
    follower that missed acknowledged writes (tests/lsm/test_follower.py)."""
    env, root = env_dir
    hooked = BeforeOpen(env)
    w = open_log(env, root)
    for seq in range(1, 11):
        w.append(payload(seq))
    ro = open_log(hooked, root, read_only=True)
    assert ro.last_seq == 10
    w.rotate()
    for seq in range(11, 21):
        w.append(payload(seq))  # in a segment the reader has not seen: it lists, then opens it
    hooked.path = segments(env, f"{root}/log")[-1]
    hooked.action = lambda: _rotate_and_cut(w, 5)
    assert ro.refresh() == w.last_seq == 25
    assert hooked.path is None  # the race happened
    assert ro.first_seq == w.first_seq == 21
    check(ro)
    ro.close()
    w.close()


def test_read_only_open_when_the_newest_listed_segment_is_gone(env_dir):
    """The same race at a read-only open: it lists again instead of opening an empty log."""
    env, root = env_dir
    hooked = BeforeOpen(env)
    w = open_log(env, root)
    for seq in range(1, 11):
        w.append(payload(seq))
    w.rotate()
    for seq in range(11, 21):
        w.append(payload(seq))
    hooked.path = segments(env, f"{root}/log")[-1]
    hooked.action = lambda: _rotate_and_cut(w, 5)
    ro = open_log(hooked, root, read_only=True)
    assert hooked.path is None
    assert (ro.first_seq, ro.last_seq) == (w.first_seq, w.last_seq) == (21, 25)
    check(ro)
    ro.close()
    w.close()


def test_relisting_is_bounded(env_dir):
    """A writer that removes the newest listed segment every time gives an error after
    MAX_RELISTS listings, not a hang."""
    env, root = env_dir
    w = open_log(env, root)
    w.append(payload(1))
    directory = f"{root}/log"
    assert list_segments_after(env, directory, 0, MAX_RELISTS - 1) == list_segments(env, directory)
    assert list_segments_after(env, directory, 1, 1) == []
    with pytest.raises(StorageIOError, match=f"gave up after {MAX_RELISTS} listings"):
        list_segments_after(env, directory, 0, MAX_RELISTS)
    w.close()


def test_reader_beside_a_busy_writer_thread(env_dir):
    """A writer thread appends, rotates and truncates; the reader refreshes and checks
    every record it can read, the whole time."""
    env, root = env_dir
    w = open_log(env, root)
    w.append(payload(1))
    w.sync()
    ro = open_log(env, root, read_only=True)
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        rng = random.Random(7)
        try:
            while not stop.is_set():
                w.append_many([payload(w.last_seq + 1 + i) for i in range(rng.randint(1, 50))])
                if rng.random() < 0.3:
                    w.sync()
                if rng.random() < 0.05:
                    w.truncate_before(max(1, w.last_seq - 3000))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    t = threading.Thread(target=write)
    t.start()
    try:
        last = 0
        for _ in range(60):
            seq = ro.refresh()
            assert seq >= last
            check(ro, last - 100)  # what is new, and a little before it
            last = seq
    finally:
        stop.set()
        t.join()
    assert not errors
    w.close()
    assert ro.refresh() == w.last_seq
    check(ro)
    ro.close()


class StaleFirstCopy(HookedEnv):
    """The first ``times`` reads of ``path`` that cover ``offset`` return zeros over
    ``length`` bytes there: what a reader's pread copies when it passes a record before
    the live writer has stored it, and the records after it once they are stored (a
    copy of many pages is not atomic against a writer of the mapped file)."""

    path: str | None = None
    offset = HEADER_SIZE
    length = 0
    times = 1

    def open_readable(self, path):  # type: ignore[no-untyped-def]
        inner = super().open_readable(path)
        if path != self.path:
            return inner
        env = self

        class Stale(type(inner)):  # type: ignore[misc]
            def read(self, offset, length):  # type: ignore[no-untyped-def]
                data = super().read(offset, length)
                at = env.offset - offset
                if env.times > 0 and 0 <= at and at + env.length < len(data):
                    env.times -= 1
                    data = data[:at] + bytes(env.length) + data[at + env.length:]
                return data

        inner.__class__ = Stale
        return inner


def test_read_only_open_racing_the_writer_is_not_damage(env_dir):
    """The reader's copy of the last segment passed a record before the writer stored it
    and reached the records stored after it: zeros, then intact records.  A read-only
    open reads again instead of calling that damage -- the torture run's readers saw
    ``log record damaged before the tail: zero-filled space`` beside a live writer.
    Damage that reads the same twice is still corruption (next test)."""
    env, root = env_dir
    w = open_log(env, root)
    for seq in range(1, 11):
        w.append(payload(seq))
    w.sync()
    hooked = StaleFirstCopy(env)
    hooked.path, hooked.times = segments(env, f"{root}/log")[-1], 2  # the tail probe's, the scan's
    hooked.length = sum(len(b) for _, b in fragment(1, payload(1), BLOCK_SIZE - HEADER_SIZE))
    ro = open_log(hooked, root, read_only=True)
    assert hooked.times == 0  # the stale copy was read
    assert ro.last_seq == 10
    check(ro)
    ro.close()
    w.close()


def test_read_only_open_sees_lasting_damage(env_dir):
    """Zeros over the first record that stay on every read: CorruptionError naming the
    segment and the offset, as for a writer's open."""
    env, root = env_dir
    w = open_log(env, root)
    for seq in range(1, 11):
        w.append(payload(seq))
    w.sync()
    hooked = StaleFirstCopy(env)
    path = segments(env, f"{root}/log")[-1]
    hooked.path, hooked.times = path, 1000
    hooked.length = sum(len(b) for _, b in fragment(1, payload(1), BLOCK_SIZE - HEADER_SIZE))
    with pytest.raises(CorruptionError, match="damaged before the tail") as info:
        open_log(hooked, root, read_only=True)
    assert info.value.path == path and info.value.offset == HEADER_SIZE
    w.close()


def _flip_in_record(env, path: str, seq: int) -> int:  # type: ignore[no-untyped-def]
    """Flip a payload byte of record ``seq`` in segment ``path``; its fragment's offset."""
    f = env.open_readable(path)
    data = bytearray(f.read(0, f.size))
    f.close()
    at = data.find(payload(seq, 100))
    assert at > 0
    data[at + 50] ^= 0x40
    rewrite(env, path, bytes(data))
    return at - FRAG_HEADER.size - SEQ_SIZE


def test_refresh_sees_lasting_damage_in_the_live_segment(env_dir):
    """A damaged record in the last segment with intact records after it is not a record
    still being written: refresh() raises CorruptionError naming the segment and the
    offset, as a read-only open does, and the reader keeps its state.  It used to stop
    before the damage, return the old last_seq, and never read on."""
    env, root = env_dir
    # the writer closed: its last segment stays the last one, the live tail to a reader
    ro = _follower_of_closed_writer(env, root, 100)
    path = segments(env, f"{root}/log")[-1]
    offset = _flip_in_record(env, path, 50)
    for _ in range(2):
        with pytest.raises(CorruptionError, match="damaged") as info:
            ro.refresh()
        assert info.value.path == path and info.value.offset == offset
        assert ro.last_seq == 10
    ro.close()


def test_refresh_skips_lasting_damage_in_the_live_segment_when_asked(env_dir):
    env, root = env_dir
    ro = _follower_of_closed_writer(env, root, 100, SMALL.replace(skip_damaged_records=True))
    _flip_in_record(env, segments(env, f"{root}/log")[-1], 50)
    assert ro.refresh() == 100
    assert ro.stats()["damaged_records_skipped"] == 1
    assert [seq for seq, _ in ro.read(check_gaps=False)] == [s for s in range(1, 101) if s != 50]
    ro.close()


def test_refresh_racing_the_writer_is_not_damage(env_dir):
    """The refresh's copy of the live segment passed a record before the writer stored
    it and reached the records stored after it: it reads again instead of stopping
    there (or calling that damage), and reaches every record written before it began."""
    env, root = env_dir
    w = open_log(env, root)
    for seq in range(1, 11):
        w.append(payload(seq, 100))
    w.sync()
    path = segments(env, f"{root}/log")[-1]
    hooked = StaleFirstCopy(env)
    hooked.path, hooked.times = path, 0
    ro = open_log(hooked, root, read_only=True)
    for seq in range(11, 31):
        w.append(payload(seq, 100))
    w.sync()
    assert segments(env, f"{root}/log")[-1] == path
    f = env.open_readable(path)
    record_11 = f.read(0, f.size).find(payload(11, 100)) - FRAG_HEADER.size - SEQ_SIZE
    f.close()
    hooked.offset, hooked.length, hooked.times = record_11, 100, 1
    assert ro.refresh() == 30
    assert hooked.times == 0  # the stale copy was read
    assert list(ro.read()) == [(seq, payload(seq, 100)) for seq in range(1, 31)]
    ro.close()
    w.close()


def test_refresh_of_a_removed_log_directory_is_corruption(env_dir):
    """The log's directory gone under a read-only log (the writer never removes it):
    CorruptionError naming it, not a bare FileNotFoundError; the reader keeps what it
    had."""
    env, root = env_dir
    w = open_log(env, root)
    for seq in range(1, 11):
        w.append(payload(seq))
    w.close()
    ro = open_log(env, root, read_only=True)
    for name in env.listdir(f"{root}/log"):
        env.remove(f"{root}/log/{name}")
    env.rmdir(f"{root}/log")
    with pytest.raises(CorruptionError, match="directory") as info:
        ro.refresh()
    assert info.value.path == f"{root}/log"
    assert ro.last_seq == 10 and ro.get(10) == payload(10)
    ro.close()


@pytest.mark.parametrize("same_sizes, joined", [(False, False), (False, True), (True, True)],
                         ids=["other-segments", "other-segments-joined", "same-segments"])
def test_refresh_after_the_log_directory_was_deleted_and_re_created(env_dir, same_sizes, joined):
    """A new writer deletes the log's directory and starts a new log in its place while a
    read-only log holds the old one's segments open.  Its refresh must not take the new
    log's later segments for the continuation of the old one: before, it went on with the
    new log's records after the old one's last -- two logs mixed by seq, silently -- or
    took the new log for a truncation of the old one.  Now: CorruptionError naming the
    segment whose file was replaced; the reader keeps what it had.  ``same_sizes``: the
    new log's records have the old ones' sizes, so its segments have the old ones' names
    and the new log's segment after them starts right after the old log's last record;
    ``joined``: the new log also starts a segment there (other names before it)."""
    env, root = env_dir
    w = open_log(env, root)
    for seq in range(1, 701):
        w.append(payload(seq))
    w.close()
    ro = open_log(env, root, read_only=True)
    assert ro.last_seq == 700
    for name in env.listdir(f"{root}/log"):
        env.remove(f"{root}/log/{name}")
    env.rmdir(f"{root}/log")
    w = open_log(env, root)
    for seq in range(1, 1501):
        w.append(payload(seq)[::-1] if same_sizes else b"new log " + payload(seq))
        if seq == 700 and joined:
            w.rotate()  # where the old log ended: the next segment is 701
    with pytest.raises(CorruptionError, match="re-created") as info:
        ro.refresh()
    assert info.value.path is not None and info.value.path.startswith(f"{root}/log/")
    assert ro.last_seq == 700
    check(ro)  # only the old log's records
    w.close()
    ro.close()


class RotatesAfterEachListing(HookedEnv):
    """Lets ``writer`` (once set) append a segment's worth of records and sync right after
    every directory listing: a writer that rotates whenever a reader has just listed."""

    def __init__(self, inner) -> None:  # type: ignore[no-untyped-def]
        super().__init__(inner)
        self.writer: Log | None = None

    def listdir(self, path: str) -> list[str]:
        names = self.inner.listdir(path)
        w = self.writer
        if w is not None:
            w.append_many([payload(w.last_seq + 1 + i) for i in range(500)])  # > 64 KiB
            w.sync()
        return names


def test_a_reader_beside_a_writer_that_rotates_after_each_of_its_listings(env_dir):
    """Each catch-up attempt finds its newest segment sealed (the writer rotated after the
    listing): the reader keeps what it read after a few attempts and goes on from there at
    the next refresh.  It used to start over each time and give up after 100 listings
    with StorageIOError -- a reader beside a busy writer of small segments."""
    env, root = env_dir
    w = open_log(env, root)
    w.append(payload(1))
    w.sync()
    hooked = RotatesAfterEachListing(env)
    ro = open_log(hooked, root, read_only=True)
    hooked.writer = w
    seq = ro.refresh()
    hooked.writer = None
    assert 1 <= seq < w.last_seq  # behind the writer, not failed
    check(ro)
    assert ro.refresh() == w.last_seq
    check(ro)
    ro.close()
    w.close()


def test_follow_from_a_seq_appended_since_the_reader_last_caught_up(env_dir):
    """A consumer handed the seq to start from (by the writer, or another reader) calls
    follow(start) on a read-only log opened earlier.  Before, follow() checked ``start``
    against the reader's stale ``last_seq`` and raised LogRangeError for records the
    log had ("follow start 12 is outside [1, 6]"); now it catches up first."""
    env, root = env_dir
    w = open_log(env, root)
    for seq in range(1, 6):
        w.append(payload(seq))
    ro = open_log(env, root, read_only=True)
    for seq in range(6, 21):
        w.append(payload(seq))
    assert ro.last_seq == 5
    assert list(ro.follow(12, timeout=0)) == [(seq, payload(seq)) for seq in range(12, 21)]
    assert list(ro.follow(21, timeout=0)) == []  # last_seq + 1: the next record, when it comes
    with pytest.raises(LogRangeError):
        ro.follow(23)  # beyond the writer's last_seq + 1 too
    w.close()
    ro.close()
