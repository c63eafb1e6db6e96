"""Shared helpers of the Log tests: records whose content is derived from their seq."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from banyanstore.log import Log
from banyanstore.options import Options

#: small segments so that rotation, multi-segment reads and truncation get exercised
SMALL = Options(segment_size=64 * 1024, log_index_interval=4, wal_sync="never")


def payload(seq: int, size: int | None = None) -> bytes:
    """A record whose bytes (and, by default, length) are a function of ``seq``."""
    digest = hashlib.blake2b(seq.to_bytes(8, "little"), digest_size=16).digest()
    if size is None:
        size = (digest[0] * 7 + digest[1]) % 300  # 0..~2000 bytes, mostly small
    return (f"{seq}:".encode() + digest * (size // 16 + 1))[:max(size, len(str(seq)) + 1)]


def open_log(env, root, name="log", **kw) -> Log:  # type: ignore[no-untyped-def]
    kw.setdefault("options", SMALL)
    return Log.open(f"{root}/{name}", env=env, **kw)


def segments(env, directory: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Paths of the segment files of a log, oldest first."""
    return [f"{directory}/{n}" for n in env.listdir(directory) if n.endswith(".log")]


def rewrite(env, path: str, data: bytes) -> None:  # type: ignore[no-untyped-def]
    """Replace a file's bytes (to damage it the way a disk or a torn write would)."""
    f = env.open_writable(path)
    try:
        f.write(data)
        f.sync()
    finally:
        f.close()


def run_killed_child(script: str, args: list[str], *, kill_after: float | None, timeout: float,
                     drop_env: str) -> list[int]:
    """Run ``script`` (a file beside this one) with ``args`` until it prints ``ready``,
    SIGKILL it ``kill_after`` seconds later (None: it kills itself), and return the seqs
    it printed as acknowledged -- whole lines only, the last may be cut by the kill.
    The child's environment lacks the variables starting with ``drop_env``."""
    here = Path(__file__).resolve().parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop_env)}
    env["PYTHONPATH"] = os.pathsep.join([str(here), *sys.path])
    child = subprocess.Popen([sys.executable, str(here / script), *args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line == b"ready\n", (line, child.stderr.read() if child.stderr else b"")
        if kill_after is not None:
            time.sleep(kill_after)
            child.send_signal(signal.SIGKILL)
        out, err = child.communicate(timeout=timeout)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL, err
    return [int(x) for x in out.split(b"\n")[:-1] if x]
