"""Child process of test_log_seal_kill9: append synced records, dying by SIGKILL at a
chosen step of the first rotation that seals a segment (or whenever the parent kills it).

Usage: ``python log_seal_kill_child.py DIR STEP``; the record of seq ``s`` is
``payload(s, 3000)`` (a few dozen records fill a segment).  STEP is one of

* ``before-seal``: the successor exists (header and directory synced), the SEAL is not
  stored yet;
* ``seal-stored``: the SEAL is stored into the mapping, the reserved space after it not
  cut yet, nothing synced;
* ``none``: no self-kill (the parent kills at a random time).

Prints ``ready`` once open, then each seq once it is acknowledged durable.
"""

from __future__ import annotations

import os
import signal
import sys

from log_helpers import payload

import banyanstore.log.writer as writer_module
from banyanstore.log import Log
from banyanstore.log.format import seal_bytes

SIZE = 3000


def _die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _install(step: str) -> None:
    original = writer_module._cut

    def cut(file, offset, next_seq):  # type: ignore[no-untyped-def]
        if next_seq is not None and step == "before-seal":
            _die()
        if next_seq is not None and step == "seal-stored":
            seal = seal_bytes(offset, next_seq)
            view, base = file.map(offset, len(seal))
            view[offset - base:offset - base + len(seal)] = seal
            _die()
        return original(file, offset, next_seq)

    writer_module._cut = cut


def main() -> None:
    directory, step = sys.argv[1], sys.argv[2]
    if step != "none":
        _install(step)
    log = Log.open(directory, wal_sync="never", segment_size=64 * 1024)
    print("ready", flush=True)
    while True:
        seq = log.last_seq + 1
        assert log.append(payload(seq, SIZE), sync=True) == seq
        sys.stdout.write(f"{seq}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
