"""The tools behind the ``banyanstore`` command (see :mod:`banyanstore.cli`).

One module per concern, all read-only except ``repair`` and ``checkpoint``:

* ``common``     problems, reports, output, key parsing and byte formatting
* ``files``      CURRENT, manifest records, which files the manifest names
* ``verify``     ``verify`` of a store (CURRENT, manifest, tables, WAL, leftovers)
* ``verify_log`` every segment and record of a log (or a store's WAL)
* ``tables``     the deep table check and ``dump-table``
* ``dumps``      ``dump-manifest``, ``dump-log``, ``dump-wal``
* ``reads``      ``stats``, ``get``, ``scan``, ``checkpoint`` through the public API
* ``repair``     the conservative repair
"""

from .repair import RepairResult, repair
from .verify import verify_path

__all__ = ["repair", "RepairResult", "verify_path"]
