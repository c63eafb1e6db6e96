"""Which implementation of the hot loops is in use: the compiled core or pure Python.

``banyanstore._native`` is a C extension (``src/banyanstore/_native.c``) that
``pip install`` builds where a C compiler and the Python headers exist; the build
is optional, and the pure-Python engine is complete without it.  At import:

* ``BANYANSTORE_PURE_PYTHON=1`` (any value but empty, ``0``, ``false``, ``no`` or
  ``off``, in any case: the false words of the option variables) -> pure Python,
  always;
* else the extension if it imports -> ``"native"``;
* else pure Python.

``native`` is the extension module or None (sstable/reader.py binds it to the
engine's Python objects when it is imported);
``IMPLEMENTATION`` is ``"native"`` or ``"python"`` and shows in ``store.stats()``.
Both implementations read and write the same formats and give the same results
(tests/sstable/test_native.py, tests/sstable/test_flush_build.py,
tests/lsm/test_merge_native.py and others compare them on random and damaged inputs).

>>> IMPLEMENTATION in ("native", "python")
True
"""

from __future__ import annotations

import os
from types import ModuleType

__all__ = ["native", "IMPLEMENTATION", "PURE_PYTHON_ENV", "load_native"]

PURE_PYTHON_ENV = "BANYANSTORE_PURE_PYTHON"


# What reads as "no" here, as in a BANYANSTORE_<option> variable of a bool option
# (options.py): BANYANSTORE_PURE_PYTHON=false chose pure Python when only "" and "0" did not.
_FALSE_WORDS = ("", "0", "false", "no", "off")


def _pure_python_requested() -> bool:
    return os.environ.get(PURE_PYTHON_ENV, "").strip().lower() not in _FALSE_WORDS


def load_native() -> ModuleType | None:
    """The compiled core if it is built, else None -- whatever the environment says
    (tests use it to compare both implementations in one process)."""
    try:
        from . import _native
    except ImportError:
        return None
    return _native


native: ModuleType | None = None if _pure_python_requested() else load_native()
IMPLEMENTATION = "native" if native is not None else "python"
