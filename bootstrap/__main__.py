"""``python -m bootstrap``."""

from __future__ import annotations

import sys

from bootstrap.cli import main

if __name__ == "__main__":
    sys.exit(main())
