"""Transfers to object storage that stall: a server that stops answering mid-transfer
(a moto server in its own process, stopped with SIGSTOP) fails the call after
``stall_timeout`` seconds without progress, naming the object -- it used to hang for
ever, and a Ctrl-C waited for the stalled transfer -- and leaves no backup behind."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import banyanstore
from banyanstore.backups.destination import open_destination
from banyanstore.errors import CorruptionError, StorageIOError

from .conftest import AWS_ENV
from .helpers import OPTIONS

SRC = str(Path(banyanstore.__file__).resolve().parent.parent)
HANG_GUARD = 60.0  # seconds: a call still running then is hung (the test fails, not hangs)

SERVER = """
import logging, threading
from moto.server import ThreadedMotoServer
logging.getLogger("werkzeug").setLevel(logging.ERROR)
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
threading.Event().wait()
"""


class Server:
    """A moto server in a child process, which the test can stop (SIGSTOP) and resume."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout is not None
        try:
            port = int(self.proc.stdout.readline())
        except ValueError:
            self.proc.kill()
            self.proc.wait()
            raise
        self.options: dict[str, Any] = {"client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"}}

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        self.resume()
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    for k, v in AWS_ENV.items():
        monkeypatch.setenv(k, v)
    s = Server()
    try:
        yield s
    finally:
        s.close()


def new_bucket(server: Server) -> str:
    import fsspec
    bucket = f"bkt-{uuid.uuid4().hex[:12]}"
    fsspec.filesystem("s3", **server.options).mkdir(bucket)
    return f"s3://{bucket}/b"


def make_store(path: Path) -> None:
    """Two tables of 1 MB of random bytes (more than a socket buffer takes at once
    from a stalled request), and a WAL tail."""
    rng = random.Random(5)
    with banyanstore.open(path, **OPTIONS) as store:
        for t in range(2):
            for i in range(40):
                store.put(b"k%d-%03d" % (t, i), rng.randbytes(25_000))
            store.flush()
        store.put(b"tail", b"v")


def finishes(call: Callable[[], Any]) -> BaseException | None:
    """What ``call`` raised (None if it returned), run on a thread; a call still
    running after HANG_GUARD seconds is a hang, and fails the test."""
    out: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
            out.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_GUARD)
    assert not thread.is_alive(), f"still running after {HANG_GUARD} s: hung"
    return out[0]


def requests_left() -> list[Any]:
    """The tasks still running on fsspec's IO loop (every request of the process)."""
    import asyncio

    import fsspec.asyn

    async def others() -> list[Any]:
        return [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for _ in range(100):  # a cancelled task ends at the loop's next turns
        left = asyncio.run_coroutine_threadsafe(others(), fsspec.asyn.get_loop()).result()
        if not left:
            break
        threading.Event().wait(0.01)
    return left


def stop_at(server: Server, phase: str) -> Callable[[Any], None]:
    """A progress callback stopping the server as ``phase`` starts (before any transfer)."""
    def progress(p: Any) -> None:
        if p.phase == phase and p.files_done == 0 and p.bytes_done == 0:
            server.stop()
    return progress


def test_a_stalled_upload_fails_naming_the_object_and_leaves_no_backup(
        tmp_path: Path, server: Server) -> None:
    url = new_bucket(server)
    make_store(tmp_path / "s")
    exc = finishes(lambda: banyanstore.backup(tmp_path / "s", url, stall_timeout=1,
                                              progress=stop_at(server, "upload"), **server.options))
    assert isinstance(exc, StorageIOError), repr(exc)
    assert "/objects/" in str(exc) and "no progress for 1 s" in str(exc) and exc.path
    assert requests_left() == []  # every request cancelled, none left holding a connection
    server.resume()
    assert banyanstore.list_backups(url, **server.options) == []
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []  # scratch removed
    # The marker's removal stalled too: this process is alive, so the marker stays live
    # until pending_timeout; a prune past it removes the marker and the objects.
    info = banyanstore.backup(tmp_path / "s", url, **server.options)
    result = banyanstore.prune_backups(url, keep=1, pending_timeout=0, **server.options)
    assert result.in_progress == () and result.kept == (info.backup_id,)
    dest = open_destination(url, server.options)
    assert dest.list("pending") == {}
    assert set(dest.list("objects")) == {o.rsplit("/", 1)[1] for o in _objects(url, server)}
    banyanstore.restore(url, tmp_path / "copy", **server.options)


def _objects(url: str, server: Server) -> list[str]:
    from banyanstore.backups.catalog import load_manifest
    return [o.key for o in load_manifest(open_destination(url, server.options), None).objects]


@pytest.mark.parametrize("call", ["restore", "verify"])
def test_a_stalled_download_fails_naming_the_object(tmp_path: Path, server: Server, call: str) -> None:
    """Not a CorruptionError: the object could not be read, nothing says it is damaged."""
    url = new_bucket(server)
    make_store(tmp_path / "s")
    banyanstore.backup(tmp_path / "s", url, **server.options)
    phase = "download" if call == "restore" else "verify"
    kwargs: dict[str, Any] = dict(stall_timeout=1, progress=stop_at(server, phase), **server.options)
    exc = finishes((lambda: banyanstore.restore(url, tmp_path / "copy", **kwargs)) if call == "restore"
                   else (lambda: banyanstore.verify_backup(url, **kwargs)))
    assert isinstance(exc, StorageIOError) and not isinstance(exc, CorruptionError), repr(exc)
    assert "/objects/" in str(exc) and "no progress for 1 s" in str(exc)
    assert not os.path.exists(tmp_path / "copy")
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []
    server.resume()
    banyanstore.verify_backup(url, **server.options)


CHILD = """
import sys, threading, banyanstore
from banyanstore.backups.destination import FsspecDestination
def progress(p):
    if p.phase == "upload" and p.files_done == 0 and p.bytes_done == 0:
        print("uploading", flush=True)
        sys.stdin.readline()  # the parent stops the server, then says go on
real, lock, said = FsspecDestination.upload, threading.Lock(), []
def upload(self, *args):
    with lock:  # one line, not two threads' words run together
        if not said:
            said.append(print("started", flush=True))
    real(self, *args)
FsspecDestination.upload = upload
banyanstore.backup(sys.argv[1], sys.argv[2], stall_timeout=None, progress=progress,
                   client_kwargs={"endpoint_url": sys.argv[3]})
print("done", flush=True)
"""


def test_ctrl_c_during_a_stalled_upload_returns(tmp_path: Path, server: Server) -> None:
    """With no stall timeout at all, a Ctrl-C cancels the running, stalled requests
    (it waited for them: for ever)."""
    url = new_bucket(server)
    make_store(tmp_path / "s")
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path / "s"), url,
                             server.options["client_kwargs"]["endpoint_url"]],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline() == "uploading\n"
        server.stop()
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == "started\n"  # an upload is running: Ctrl-C
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=HANG_GUARD)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "KeyboardInterrupt" in err and "done" not in _out, err
    server.resume()
    assert banyanstore.list_backups(url, **server.options) == []
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []


@pytest.mark.parametrize("value, error", [
    ("1", TypeError), (True, TypeError), (0, ValueError), (-1.0, ValueError),
    (float("nan"), ValueError), (float("inf"), ValueError), (10**400, ValueError),
])
def test_a_bad_stall_timeout_names_the_argument(tmp_path: Path, value: Any, error: type) -> None:
    with banyanstore.open(tmp_path / "s", **OPTIONS) as store:
        store.put(b"k", b"v")
    url = str(tmp_path / "b")
    banyanstore.backup(tmp_path / "s", url)
    for call in (lambda: banyanstore.backup(tmp_path / "s", url, stall_timeout=value),
                 lambda: banyanstore.restore(url, tmp_path / "copy", stall_timeout=value),
                 lambda: banyanstore.verify_backup(url, stall_timeout=value),
                 lambda: banyanstore.list_backups(url, stall_timeout=value),
                 lambda: banyanstore.prune_backups(url, keep=1, stall_timeout=value)):
        with pytest.raises(error, match="stall_timeout"):
            call()
    assert len(banyanstore.list_backups(url, stall_timeout=None)) == 1
    assert not os.path.exists(tmp_path / "copy")


def test_the_commands_take_a_stall_timeout(tmp_path: Path, server: Server,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from banyanstore.cli import main
    url = new_bucket(server)
    make_store(tmp_path / "s")
    endpoint = "client_kwargs=" + json.dumps(server.options["client_kwargs"])
    assert main(["backup", str(tmp_path / "s"), url, "-o", endpoint, "--stall-timeout", "none",
                 "--quiet"]) == 0
    for bad in ("0", "-1", "inf", "x"):
        assert main(["backups", url, "-o", endpoint, "--stall-timeout", bad]) == 2
        assert "--stall-timeout" in capsys.readouterr().err
    server.stop()
    codes: list[int] = []
    assert finishes(lambda: codes.append(main(["backups", url, "-o", endpoint,
                                              "--stall-timeout", "1"]))) is None
    assert codes == [1]
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "no progress for 1 s" in err and url in err, err


def test_a_worker_a_ctrl_c_left_behind_starts_no_request(tmp_path: Path, server: Server,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C while the pool starts a thread (``pool.submit``) leaves a worker the pool
    does not know: it took its task, but ``shutdown`` does not wait for it.  It started
    its upload after the backup had given up (the stop was lifted once the pool shut
    down) and, against a stalled server, held the interpreter's exit for ever.  The
    stop now lasts: its request is refused."""
    from concurrent.futures import ThreadPoolExecutor

    from banyanstore.backups import transfer as transfer_module
    url = new_bucket(server)
    make_store(tmp_path / "s")
    given_up = threading.Event()
    orphans: list[threading.Thread] = []
    outcome: list[BaseException | None] = []

    class Pool(ThreadPoolExecutor):
        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            if getattr(fn, "__name__", "") != "upload":
                return super().submit(fn, *args, **kwargs)

            sha, staged, size = args[0]
            kept = str(tmp_path / "kept")  # the backup removes its staged files as it gives up
            shutil.copyfile(staged, kept)

            def orphan() -> None:  # what a thread interrupted in its start() does
                given_up.wait(HANG_GUARD)
                try:
                    fn((sha, kept, size))
                    outcome.append(None)
                except BaseException as exc:  # noqa: BLE001 - handed to the test
                    outcome.append(exc)
            orphans.append(threading.Thread(target=orphan, daemon=True))
            orphans[-1].start()
            raise KeyboardInterrupt  # the Ctrl-C, in t.start() of the pool's new thread

    monkeypatch.setattr(transfer_module, "ThreadPoolExecutor", Pool)
    with pytest.raises(KeyboardInterrupt):
        banyanstore.backup(tmp_path / "s", url, stall_timeout=None,
                           progress=stop_at(server, "upload"), **server.options)
    given_up.set()
    orphans[0].join(HANG_GUARD)
    assert not orphans[0].is_alive(), "the left-behind worker's upload hung"
    assert isinstance(outcome[0], StorageIOError) and "interrupted" in str(outcome[0]), outcome
    assert requests_left() == []
