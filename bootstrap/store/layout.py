"""The layout of the packages folder: every name bootstrap gives a part of it, in one place."""

from __future__ import annotations

import os
from pathlib import Path

from bootstrap.store.paths import (
    ADOPTED_NAME,
    GENERATIONS_DIR,
    MANIFEST_NAME,
    ORGS_DIR,
    RUNTIME_REQUIREMENTS_NAME,
    SITE_DIR,
    default_state_dir,
)

__all__ = [
    "BUILDS_ON_FILE",
    "DEFAULT_LEASE_SECONDS",
    "DEPARTED_MARKER",
    "GENERATION_FILE",
    "LOCK_FILE",
    "SITE_DIR",
    "Layout",
]

# How long a claim lasts unless renewed (BOOTSTRAP_LEASE_SECONDS): a waiter on another instance takes over
# that long after the holder stopped renewing (died, or lost the share). Renewed every quarter of it.
DEFAULT_LEASE_SECONDS = 30.0

# Inside each generation (staged or published), besides SITE_DIR (the sys.path entry):
LOCK_FILE = "lock.txt"  # the exact pins installed
GENERATION_FILE = "generation.json"  # its record, written last before publication
# An organisation's generation whose folders link into a workspace generation: that generation's id
# (``store.layers``; gc keeps what it names).
BUILDS_ON_FILE = "builds-on"
# In an organisation's packages folder whose organisation left the repo: when a sync first saw it gone.
DEPARTED_MARKER = ".departed"


class Layout:
    """The packages folder, as bootstrap arranges it.

    ``manifest.json``        the pointer: which generation is active
    ``.bootstrap.lock``      the inter-process build lock (fcntl: cheap among one machine's processes)
    ``.bootstrap.lease``     the build claim that holds across a share's clients (``store.leases``)
    ``generations/<id>/``    published generations, never modified
        ``site/``            the ``sys.path`` entry
        ``lock.txt``         the exact pins installed
        ``generation.json``  what the generation holds and how it was built
        ``builds-on``        an organisation's: the workspace generation its folder links lead into
    ``staging/<name>/``      generations being built, each with its builder's lease ``<name>.lease``
    ``cache/locks/``         resolutions cached by the hash of their inputs
    ``processes/``           ``<host>-<pid>.json`` of running hosts that need a restart
    ``orgs/<org-id>/``       each organisation's own packages folder, laid out like this one (``inputs.orgs``)
    ``runtime-requirements.txt``, ``.runtime.lock``  where bootstrap before #14 kept the overlay: copied
                             into the state folder by the first sync, and left (``legacy_runtime_requirements``)

    Anything else at the top (``*.dist-info``, modules) is legacy ``pip install --target`` content, adopted
    by ``inputs.legacy``. The state folder (``BOOTSTRAP_STATE_DIR``, beside the packages folder) outlives it:

    ``runtime-requirements.txt``  packages added at run time (``bootstrap.ensure``, ``add``): the overlay
    ``.runtime.lock``        serialises edits of the overlay (and adoption)
    ``adopted.json``         the legacy distributions already adopted (each once)
    """

    MANAGED_NAMES = frozenset(
        {
            MANIFEST_NAME,
            ".bootstrap.lock",
            ".bootstrap.lock.owner",  # written by bootstrap before the build claim named the holder
            ".bootstrap.lease",
            ".bootstrap.lease.takeover",
            "generations",
            "staging",
            "cache",
            RUNTIME_REQUIREMENTS_NAME,
            ".runtime.lock",
            "processes",
            ORGS_DIR,
            DEPARTED_MARKER,
        }
    )

    def __init__(
        self,
        packages_dir: str | os.PathLike[str],
        state_dir: str | os.PathLike[str] | None = None,
        *,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
    ) -> None:
        self.root = Path(os.path.abspath(packages_dir))
        self.state = Path(os.path.abspath(state_dir) if state_dir is not None else default_state_dir(str(self.root)))
        # How long a claim in this folder (the build claim, a builder's staging) lasts unless renewed.
        self.lease_seconds = lease_seconds

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST_NAME

    @property
    def build_lock(self) -> Path:
        return self.root / ".bootstrap.lock"

    @property
    def build_lease(self) -> Path:
        return self.root / ".bootstrap.lease"

    @property
    def generations(self) -> Path:
        return self.root / GENERATIONS_DIR

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def lock_cache(self) -> Path:
        return self.root / "cache" / "locks"

    @property
    def runtime_requirements(self) -> Path:
        return self.state / RUNTIME_REQUIREMENTS_NAME

    @property
    def runtime_lock(self) -> Path:
        return self.state / ".runtime.lock"

    @property
    def adopted(self) -> Path:
        return self.state / ADOPTED_NAME

    @property
    def legacy_runtime_requirements(self) -> Path:
        """Where bootstrap kept the overlay before the state folder: in the packages folder."""
        return self.root / RUNTIME_REQUIREMENTS_NAME

    @property
    def processes(self) -> Path:
        return self.root / "processes"

    def generation(self, generation_id: str) -> Path:
        return self.generations / generation_id

    def staging_lease(self, staging: Path) -> Path:
        """The lease of a builder's staging folder, beside it: ``staging/<name>.lease``."""
        return staging.with_name(staging.name + ".lease")

    def site(self, generation_id: str) -> Path:
        """A published generation's ``sys.path`` entry."""
        return self.generations / generation_id / SITE_DIR

    def is_managed(self, name: str) -> bool:
        """True for names bootstrap itself creates at the top of the folder."""
        if name in self.MANAGED_NAMES:
            return True
        if name.startswith(".filelock-probe-"):  # filelock 4's probe, left where a share refused its unlink
            return True
        # ".<managed name>.<pid>.<random>.tmp": an atomic write under way, or left by a killed process
        # (or ".bootstrap.lease.clock.<pid>.<random>.tmp": a lease's probe of the share's clock, for a moment)
        return name.endswith(".tmp") and any(
            name.startswith(f".{managed}.") or name.startswith(f"{managed}.") for managed in self.MANAGED_NAMES
        )
