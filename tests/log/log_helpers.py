"""Shared helpers of the Log tests: records whose content is derived from their seq."""

from __future__ import annotations

import hashlib

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
