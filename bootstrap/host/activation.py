"""Which generation this process serves: read the pointer, put the generation on ``sys.path``; nothing else.

The generation goes *after* the host's own site-packages (the host comes
first), through ``site.addsitedir`` so ``.pth`` files work; a generation that
overrides host packages (an operator's choice) goes first. A switch from an
older generation replaces its entry in one step. On the fast path: ``sys``
and ``site`` only.
"""

from __future__ import annotations

import os
import sys

from bootstrap.host import state
from bootstrap.store import manifest as manifest_mod
from bootstrap.store.freshness import usable_site
from bootstrap.store.paths import MANIFEST_NAME
from bootstrap.store.paths import packages_dir as env_packages_dir

TYPE_CHECKING = False
if TYPE_CHECKING:
    from bootstrap.store.manifest import Manifest


def read_manifest(packages_dir: str | os.PathLike[str] | None = None) -> Manifest | None:
    """The manifest of ``packages_dir`` (default: ``BOOTSTRAP_PACKAGES_DIR``), or None if absent or damaged."""
    folder = env_packages_dir() if packages_dir is None else os.path.abspath(packages_dir)
    return manifest_mod.read(os.path.join(folder, MANIFEST_NAME))


def activate(packages_dir: str | os.PathLike[str] | None = None) -> str | None:
    """Put the active generation's folder on ``sys.path``; return it (None if there is none).

    Idempotent. The generation goes *after* the host's own site-packages (the
    host comes first), through ``site.addsitedir`` so ``.pth`` files work. A
    generation built for another interpreter is never activated. If this
    process had activated an older generation, its entry is replaced. A
    generation that overrides host packages (an operator's choice) goes first.
    """
    folder = env_packages_dir() if packages_dir is None else os.path.abspath(packages_dir)
    return activate_manifest(read_manifest(folder), folder)


def activate_manifest(
    manifest: Manifest | None, packages_dir: str | None = None, *, allow_world_writable: bool | None = None
) -> str | None:
    """Put ``manifest``'s generation on ``sys.path`` if this interpreter can use it; return its folder.

    ``packages_dir``: the folder the manifest was read from (default ``BOOTSTRAP_PACKAGES_DIR``); the
    generation must be one of its own (``freshness.misplaced_site``), and no one but its owner (and
    group) may write where it lies (``freshness.open_to_others``, unless ``allow_world_writable``:
    default ``BOOTSTRAP_ALLOW_WORLD_WRITABLE``).
    """
    site_dir = usable_site(manifest, packages_dir, allow_world_writable=allow_world_writable)
    if manifest is None or site_dir is None:
        return None
    put_on_path(site_dir, first=bool(manifest.get("overrides")))
    return site_dir


def take_packages_root_off_path(packages_dir: str) -> bool:
    """Take the packages folder's own root off ``sys.path``, where a host's old ``function_app.py`` line
    (``sys.path.insert(0, "/home/.packages")``) puts it: the legacy ``pip install --target`` files there would
    shadow the active generation. One log line says which line to delete; True if it was there.

    On the fast path: two membership tests of ``sys.path``, nothing imported unless the line is there.
    """
    variants = (packages_dir, packages_dir + os.sep)
    if variants[0] not in sys.path and variants[1] not in sys.path:
        return False
    sys.path[:] = [entry for entry in sys.path if entry not in variants]
    import logging  # slow path: only for a host that still has the old line

    logging.getLogger("bootstrap").warning(
        "%s was on sys.path, where its old pip install --target files would shadow the active generation: "
        "taken off; delete the line `sys.path.insert(0, %r)` (or its like) from function_app.py",
        packages_dir,
        packages_dir,
    )
    return True


def put_on_path(site_dir: str, *, first: bool = False) -> None:
    """After the host's site-packages, unless the generation overrides host packages (an operator's choice).

    A switch from an older generation replaces its entry in one step (a slice
    assignment), so an import in another thread never finds no generation on the path.
    """
    host = state.current()
    if host.site_dir == site_dir and site_dir in sys.path:
        return
    old = host.site_dir if host.site_dir is not None and host.site_dir in sys.path else None
    import site

    if old is not None and first == host.first:
        sys.path[:] = [site_dir if entry == old else entry for entry in sys.path if entry != site_dir]
    elif first:
        sys.path[:] = [site_dir, *(entry for entry in sys.path if entry not in (old, site_dir))]
    elif old is not None:
        sys.path.remove(old)  # moving from first to last place: rare (an operator's override setting changed)
    site.addsitedir(site_dir)  # appends it if not there yet; reads its .pth files either way
    host.site_dir, host.first = site_dir, first
