"""An organisation's generation layered on the workspace's: whole folders as links into it.

Files can be hard-linked, folders cannot: an organisation's generation that carries botocore over from
the workspace's made its 943 folders again (4 KiB each), so 50 organisations of one small package each
took almost two workspace sets on disk. Instead, a top-level folder of the site that only distributions
carried over unchanged *from the workspace's generation* fill becomes one relative symbolic link to the
same folder there::

    <packages>/orgs/<org>/generations/<id>/site/botocore -> ../../../../../generations/<ws>/site/botocore

The generation's ``builds-on`` file names ``<ws>``, written before the first link; the workspace's gc keeps
every generation an organisation's generation (published or being built) names there. Relative links
resolve alike on every instance, wherever it mounts the share. A link is only ever taken for exactly that
text (``linked_names``). Where the filesystem
refuses links (an SMB share without Unix extensions), the files are hard-linked or copied, as before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from bootstrap.store.layout import BUILDS_ON_FILE, Layout
from bootstrap.store.paths import GENERATIONS_DIR, ORGS_DIR, SITE_DIR
from bootstrap.store.records import Distribution

log = logging.getLogger("bootstrap")

# From an organisation's site folder (<packages>/orgs/<org>/generations/<id>/site, or staging/<name>/site)
# up to <packages>: site, <id>, generations, <org>, orgs.
_UP_TO_PACKAGES = "../" * 5


def link_text(workspace_generation: str, name: str) -> str:
    """What the link for the top-level ``name`` says: the same name in that workspace generation's site."""
    return f"{_UP_TO_PACKAGES}{GENERATIONS_DIR}/{workspace_generation}/{SITE_DIR}/{name}"


def builds_on(generation_dir: Path) -> str | None:
    """The workspace generation a generation's links lead into (its ``builds-on`` file), or None."""
    try:
        text = (generation_dir / BUILDS_ON_FILE).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return text if text and "/" not in text and text not in (".", "..") else None


def linked_names(site_dir: Path) -> frozenset[str]:
    """The top-level entries of ``site_dir`` that are links made here: each says exactly what ``link_text``
    gives for the workspace generation its generation builds on (one listing; where a link leads is checked
    as its files are, by RECORD and hash). Any other link in a site folder stays "unlisted" to ``verify``."""
    workspace_generation = builds_on(site_dir.parent)
    if workspace_generation is None:
        return frozenset()
    found = set()
    try:
        entries = list(os.scandir(site_dir))
    except OSError:
        return frozenset()
    for entry in entries:
        if entry.is_symlink():
            with contextlib.suppress(OSError):
                if os.readlink(entry.path) == link_text(workspace_generation, entry.name):
                    found.add(entry.name)
    return frozenset(found)


def workspace_site_for(site_dir: Path, workspace_site: Path) -> str | None:
    """``workspace_site``'s generation id, if the links from ``site_dir`` to it would be ``link_text``'s (the
    organisation's folder is where ``paths.org_packages_dir`` puts it); else None: no layering."""
    generation = workspace_site.parent.name
    expected = link_text(generation, "")
    return generation if os.path.relpath(workspace_site, site_dir) + "/" == expected else None


def folders_to_link(
    workspace_site: Path, workspace_dists: Iterable[Distribution], carried: Iterable[Distribution]
) -> set[str]:
    """The top-level folders of ``workspace_site`` that only distributions in ``carried`` (those carried over
    from that very site) put files in, by every RECORD there, and no distribution carried from elsewhere
    does: a link to one shows nothing the set lacks, and lacks nothing it has. (The caller leaves out
    the folders the backend just installed into.)"""
    carried = list(carried)
    mine = {dist.name for dist in carried if dist.dist_info.parent == workspace_site}
    elsewhere = {top for dist in carried if dist.name not in mine for top in _folders(dist)}
    owners: dict[str, set[str]] = {}
    for dist in workspace_dists:
        for top in _folders(dist):
            owners.setdefault(top, set()).add(dist.name)
    found = set()
    for top, who in owners.items():
        if top == "__pycache__" or top in elsewhere or not who <= mine:
            continue
        with contextlib.suppress(OSError):
            if stat.S_ISDIR(os.lstat(workspace_site / top).st_mode):
                found.add(top)
    return found


def _folders(dist: Distribution) -> set[str]:
    """The top-level folders ``dist`` puts a file in (by its RECORD)."""
    found = set()
    for entry in dist.records:
        top, slash, _ = entry.path.partition("/")
        if slash and entry.inside:
            found.add(top)
    return found


def link_folders(site_dir: Path, workspace_generation: str, names: Iterable[str]) -> bool:
    """Link each top-level ``name`` of ``site_dir`` to the workspace generation's; False (and no link left)
    where the filesystem refuses links: the caller links the files instead."""
    made: list[Path] = []
    for name in sorted(names):
        try:
            os.symlink(link_text(workspace_generation, name), site_dir / name, target_is_directory=True)
        except OSError as exc:
            log.debug("no folder links in %s (%s): linking files", site_dir, exc.strerror)
            for link in made:
                with contextlib.suppress(OSError):
                    os.unlink(link)
            return False
        made.append(site_dir / name)
    return True


def generations_built_on(packages_dir: Path) -> frozenset[str]:
    """Workspace generations that an organisation's generation links into, published or being built: gc keeps
    them. One small file read per organisation generation (three or so per organisation)."""
    named: set[str] = set()
    orgs = packages_dir / ORGS_DIR
    try:
        layouts = [Layout(orgs / org) for org in os.listdir(orgs)]
    except OSError:  # no organisation
        return frozenset()
    folders = [folder for layout in layouts for folder in (layout.generations, layout.staging)]
    for folder in folders:
        try:
            entries = os.listdir(folder)
        except OSError:
            continue
        for entry in entries:
            generation = builds_on(folder / entry)
            if generation is not None:
                named.add(generation)
    return frozenset(named)
