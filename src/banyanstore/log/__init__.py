"""The append-only, segmented, crash-safe Log (see :mod:`banyanstore.log.log`)."""

from __future__ import annotations

from .log import Log, LogExistsError, LogNotFoundError

__all__ = ["Log", "LogExistsError", "LogNotFoundError"]
