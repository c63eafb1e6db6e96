"""``banyanstore.snapshot.Snapshot``: kept importable here; the class lives with the
other read views in :mod:`banyanstore.lsm.snapshot`."""

from __future__ import annotations

from .lsm.snapshot import Snapshot

__all__ = ["Snapshot"]
