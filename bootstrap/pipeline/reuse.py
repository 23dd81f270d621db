"""Incremental generations: carry unchanged distributions over from the active one.

A new generation is still a new folder, but a distribution whose exact pin the
active generation already holds (intact, for this interpreter) is not
installed again: its files, as its RECORD lists them, are hard-linked into the
new folder (copied where the filesystem cannot link). Only what was added or
changed goes through pip, into a folder of its own, and is then moved in file
by file, so distributions sharing a namespace folder merge instead of pip's
``--target`` skipping the folder (pypa/pip#10629). Generations are never
edited in place, so a file shared by two of them never changes under either;
every file of a generation is read-only (``verify.seal``), so an edit fails
instead of reaching both.
"""

from __future__ import annotations

import filecmp
import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from bootstrap.errors import InstallError, VerificationError
from bootstrap.pipeline.lockfile import Pin
from bootstrap.store.fs import copy_file
from bootstrap.store.layout import GENERATION_FILE
from bootstrap.store.records import Distribution, changed_files, installed, missing_files, unchanged_since

log = logging.getLogger("bootstrap")


@dataclass(frozen=True)
class Carried:
    """Distributions carried over unchanged from ``site`` (the active generation's site folder)."""

    site: Path
    dists: tuple[Distribution, ...] = ()

    @property
    def names(self) -> frozenset[str]:
        return frozenset(dist.name for dist in self.dists)


NOTHING = Carried(Path())


def reusable_from(sites: list[Path], pins: tuple[Pin, ...]) -> Carried:
    """``reusable`` over several site folders, in order: each distribution from the first that has it intact
    (an organisation's generation: its own active one, the workspace's, the other organisations')."""
    found: dict[str, Distribution] = {}
    for site in dict.fromkeys(sites):
        left = tuple(pin for pin in pins if pin.name not in found)
        if not left:
            break
        for dist in reusable(site, left).dists:
            found[dist.name] = dist
    return Carried(sites[0], tuple(found.values())) if found else NOTHING


def reusable(active_site: Path | None, pins: tuple[Pin, ...]) -> Carried:
    """The active generation's distributions that match a pin exactly and are intact.

    The one place that decides what is carried over; ``build`` links exactly these (each from its own
    site folder, ``dist.dist_info.parent``).
    """
    if active_site is None or not active_site.is_dir():
        return NOTHING
    wanted = {pin.name: pin.version for pin in pins if pin.url is None and not pin.hashes}
    try:
        found = installed(active_site, frozenset(wanted))  # only the dist-infos that may be carried are read
    except VerificationError:  # a damaged dist-info: reuse nothing rather than guess
        return NOTHING
    candidates = [
        dist
        for dist in found
        if wanted.get(dist.name) == dist.version and dist.safe_to_link and not missing_files(active_site, [dist])
    ]
    try:  # written when the generation was published, after every file in it
        published_ns: int | None = (active_site.parent / GENERATION_FILE).stat().st_mtime_ns
    except OSError:
        published_ns = None
    return Carried(active_site, tuple(dist for dist in candidates if _unchanged(active_site, dist, published_ns)))


def _unchanged(site: Path, dist: Distribution, published_ns: int | None) -> bool:
    """Every file still matches its RECORD: an edit made in place (a platform patching certifi's CA
    bundle, say) is not carried into the next generation; the distribution is installed afresh instead.

    A file not written since the generation was published, at its recorded size, is taken as it
    was (from its stat, as git does); any other file is hashed.
    """
    quick = unchanged_since(published_ns) if published_ns is not None else None
    try:
        changed = changed_files(site, [dist], quick=quick)
    except OSError:
        return False
    if changed:
        log.warning("not reusing %s %s: %s; installing it afresh", dist.display_name, dist.version, changed[0])
    return not changed


def link_distribution(
    source_site: Path,
    target_site: Path,
    dist: Distribution,
    made: set[str] | None = None,
    skip: set[str] | frozenset[str] = frozenset(),
) -> None:
    """Hard-link (or copy) every file of ``dist``, and the bytecode of its modules, into another site folder.

    The ``.pyc`` files are compiled once, when the distribution is first installed;
    RECORD does not list them, so they are found beside each ``.py`` it lists. A
    link keeps the source's mtime, which timestamp-checked bytecode relies on.
    Strings and one listing per ``__pycache__``: an add to a set like M links ~12,000 files.
    ``made``: shared by the calls for one target, so that once links fail there, the rest is copied.
    ``skip``: top-level folders already there as a whole (an organisation's links to the workspace's).
    """
    source_root, target_root = str(source_site), str(target_site)
    made = set() if made is None else made  # folders known to exist in the target (and whether to copy)
    bytecode: dict[str, dict[str, list[str]]] = {}  # folder -> module stem -> its .pyc names
    for entry in dist.records:
        path = entry.path
        if not entry.inside or "__pycache__/" in path:
            continue  # pip's scripts (bin/): not part of the importable set; bytecode: below
        if skip and path.partition("/")[0] in skip:
            continue
        _link(os.path.join(source_root, path), os.path.join(target_root, path), made)
        if path.endswith(".py"):
            folder, _, name = path.rpartition("/")
            compiled = bytecode.get(folder)
            if compiled is None:
                compiled = bytecode[folder] = _bytecode_in(os.path.join(source_root, folder, "__pycache__"))
            for pyc in compiled.get(name[:-3], ()):
                cache = os.path.join(folder, "__pycache__", pyc)
                _link(os.path.join(source_root, cache), os.path.join(target_root, cache), made)


def _bytecode_in(cache: str) -> dict[str, list[str]]:
    """The ``.pyc`` files in ``cache`` for this interpreter (``stem.<tag>.pyc`` and optimised variants), by stem."""
    tag = sys.implementation.cache_tag
    suffixes = (f".{tag}.pyc", f".{tag}.opt-1.pyc", f".{tag}.opt-2.pyc")
    found: dict[str, list[str]] = {}
    try:
        names = os.listdir(cache)
    except OSError:  # no bytecode here
        return found
    for name in names:
        for suffix in suffixes:
            if name.endswith(suffix):
                found.setdefault(name[: -len(suffix)], []).append(name)
                break
    return found


def _link(source: str, target: str, made: set[str]) -> None:
    """Hard-link ``source`` to ``target``; copy it where links fail (then the rest of the distribution
    is copied without trying: ``made`` remembers, as ``_COPY``). The copy keeps the mode and the times
    (timestamp-checked bytecode needs the mtime) but no extended attributes: ``shutil.copy2`` copies
    those, and an SMB share answers EIO to listing them."""
    folder = os.path.dirname(target)
    if folder not in made:
        os.makedirs(folder, exist_ok=True)
        made.add(folder)
    if _COPY not in made:
        try:
            os.link(source, target)
            return
        except (FileExistsError, FileNotFoundError):  # there already; or listed but gone (the caller checked)
            return
        except OSError:  # another filesystem, or one without hard links (SMB shares: EPERM)
            made.add(_COPY)
    try:
        copy_file(source, target)
    except (FileExistsError, FileNotFoundError):
        return


# In ``_link``'s set of folders made: hard links failed here, copy.
_COPY = "\0copy"


def merge(source_site: Path, target_site: Path) -> None:
    """Move every file of a freshly installed folder into the new generation; never overwrite.

    The caller has refused files two distributions install with different contents (their RECORDs:
    ``verify.check_shared_files``, the rule of every path); a file already there with the same bytes
    (an old-style namespace ``__init__.py``), or its bytecode, stays as it is.
    """
    for folder, _, files in os.walk(source_site):
        relative = Path(folder).relative_to(source_site)
        for name in files:
            source, target = Path(folder) / name, target_site / relative / name
            if target.exists():
                if relative.name == "__pycache__" or filecmp.cmp(source, target, shallow=False):
                    continue
                raise InstallError(f"{relative / name} is in the new generation twice, with different contents")
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(source, target)
    shutil.rmtree(source_site, ignore_errors=True)
