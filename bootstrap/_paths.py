"""Where things live: the defaults and the layout of the packages folder.

This module is on the start-up fast path, so it imports nothing heavy: the
pydantic ``Settings`` (slow path) and the fast path read their defaults here,
so the two can never disagree.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_PREFIX = "BOOTSTRAP_"
DEFAULT_REQUIREMENTS_FILE = Path("/home/repo/requirements.txt")
DEFAULT_PACKAGES_DIR = Path("/home/.packages")
LOCK_SUFFIX = ".lock"


def env_path(name: str, default: Path) -> Path:
    """A path setting read straight from the environment (fast path only)."""
    value = os.environ.get(ENV_PREFIX + name.upper())
    return Path(value) if value else default


def default_lock_file(requirements_file: Path) -> Path:
    """The committed lock lives beside the requirements file: ``requirements.lock``."""
    return requirements_file.with_suffix(LOCK_SUFFIX)


class Layout:
    """The packages folder, as bootstrap arranges it.

    ``manifest.json``        the pointer: which generation is active
    ``.bootstrap.lock``      the inter-process build lock (and ``.owner`` beside it)
    ``generations/<id>/``    published generations, never modified
        ``site/``            the ``sys.path`` entry
        ``lock.txt``         the exact pins installed
        ``generation.json``  what the generation holds and how it was built
    ``staging/<id>/``        generations being built (debris if a sync died)
    ``cache/locks/``         resolutions cached by the hash of their inputs
    """

    MANAGED_NAMES = frozenset(
        {"manifest.json", ".bootstrap.lock", ".bootstrap.lock.owner", "generations", "staging", "cache"}
    )

    def __init__(self, packages_dir: Path) -> None:
        self.root = Path(os.path.abspath(packages_dir))

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def build_lock(self) -> Path:
        return self.root / ".bootstrap.lock"

    @property
    def lock_owner(self) -> Path:
        return self.root / ".bootstrap.lock.owner"

    @property
    def generations(self) -> Path:
        return self.root / "generations"

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def lock_cache(self) -> Path:
        return self.root / "cache" / "locks"

    def generation(self, generation_id: str) -> Path:
        return self.generations / generation_id

    def is_managed(self, name: str) -> bool:
        """True for names bootstrap itself creates at the top of the folder."""
        return name in self.MANAGED_NAMES or name.startswith(".manifest.json.")
