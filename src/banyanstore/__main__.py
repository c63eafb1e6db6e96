"""``python -m banyanstore``: the ``banyanstore`` command (see :mod:`banyanstore.cli`)."""

import sys

from .cli import main

sys.exit(main())
