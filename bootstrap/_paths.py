"""The default locations and how the fast path reads them from the environment.

On the start-up fast path: ``os`` only (no pathlib, no typing). The pydantic
``Settings`` (slow path) take their defaults from here, so the two never disagree.
"""

from __future__ import annotations

import os

ENV_PREFIX = "BOOTSTRAP_"
DEFAULT_REQUIREMENTS_FILE = "/home/repo/requirements.txt"
DEFAULT_PACKAGES_DIR = "/home/.packages"
MANIFEST_NAME = "manifest.json"
RUNTIME_REQUIREMENTS_NAME = "runtime-requirements.txt"


def default_lock_file(requirements_file: str) -> str:
    """The committed lock lives beside the requirements file: ``requirements.lock``."""
    return os.path.splitext(requirements_file)[0] + ".lock"


def env_path(name: str, default: str) -> str:
    """A path setting read straight from the environment, as ``Settings`` would (fast path only)."""
    value = os.environ.get(ENV_PREFIX + name.upper())
    return os.path.abspath(value if value else default)


def packages_dir() -> str:
    """The packages folder this process uses: ``BOOTSTRAP_PACKAGES_DIR``, default ``/home/.packages``."""
    return env_path("packages_dir", DEFAULT_PACKAGES_DIR)
