"""The expected-state file of the kill -9 harness (in the spirit of RocksDB's
``db_crashtest`` expected state): what the writer process *intended* and what the
store *acknowledged*, written so that it survives the writer's death.

Grammar: one JSON object per line (UTF-8, ``\\n``-terminated), each written with a
single ``os.write`` on an ``O_APPEND`` descriptor::

    {"open": V, "log_last": S, ...}        the child opened the store at version V and
                                          the Log with last seq S (first line)
    {"i": N, "op": KIND, ...}              intent: operation N is about to be issued
    {"a": N, ...}                          acknowledgement: operation N returned
                                          (writes: "v" = its version; Log appends:
                                          "seq" = last seq; checkpoints: "v")

An intent reaches the kernel before the operation starts, an acknowledgement
right after it returns; acknowledgements of operations the store promised to
make durable are also ``fdatasync``ed, so the file is never behind the store it
describes.  A kill can only cut the last line short: :func:`read_journal` drops a
last line without its newline, and any other malformed line is an error of the
harness itself.

>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "j")
>>> with Journal(path) as j:
...     j.record({"open": 0})
...     j.intent(1, "w", e=[[0, 7, 20]])
...     j.ack(1, durable=True, v=1)
>>> [sorted(r) for r in read_journal(path)]
[['open'], ['e', 'i', 'op'], ['a', 'v']]
"""

from __future__ import annotations

import json
import os
from typing import Any

__all__ = ["Journal", "read_journal"]


class Journal:
    """The child's side: appends records; ``durable=True`` acknowledgements are fdatasynced."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def record(self, obj: dict[str, Any], *, durable: bool = False) -> None:
        """Append one line (one ``write`` call, so a kill never interleaves two)."""
        line = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
        written = os.write(self._fd, line)
        if written != len(line):  # a regular file only writes short on a full disk
            raise OSError(f"short write to the journal {self.path}: {written} of {len(line)}")
        if durable:
            os.fdatasync(self._fd)

    def intent(self, n: int, op: str, **fields: Any) -> None:
        self.record({"i": n, "op": op, **fields})

    def ack(self, n: int, *, durable: bool, **fields: Any) -> None:
        self.record({"a": n, **fields}, durable=durable)

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_journal(path: str) -> list[dict[str, Any]]:
    """Every complete record of the file at ``path``, in order (a last line cut by the
    kill is dropped)."""
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    records = []
    for i, line in enumerate(lines[:-1]):  # the part after the last newline is incomplete
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise AssertionError(f"journal {path} line {i + 1} is malformed: {line[:80]!r}") from exc
        if not isinstance(obj, dict):
            raise AssertionError(f"journal {path} line {i + 1} is not an object")
        records.append(obj)
    return records
