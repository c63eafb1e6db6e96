"""Child process of test_log_kill9: append synced records until killed.

Usage: ``python log_kill_child.py DIR THREADS IO_MODE``.  Prints ``ready`` once open, then
each seq once it is acknowledged durable (stdout flushed per line).  The record
of seq ``s`` is ``payload(s)``, so the parent can verify it.  Appends happen
under a lock and the durability wait outside it, as the LSM store does.
"""

from __future__ import annotations

import sys
import threading

from log_helpers import payload

from banyanstore.log import Log


def main() -> None:
    directory, threads, io_mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    log = Log.open(directory, io_mode=io_mode, wal_sync="never", segment_size=64 * 1024)
    mu = threading.Lock()
    out = threading.Lock()
    print("ready", flush=True)

    def worker() -> None:
        while True:
            with mu:
                seq = log.last_seq + 1
                assert log.append(payload(seq), sync=False) == seq
            log.wait_durable(seq)
            with out:
                sys.stdout.write(f"{seq}\n")
                sys.stdout.flush()

    workers = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


if __name__ == "__main__":
    main()
