"""Build a generation in staging: the exact pins, into a new folder.

``pip install --target`` is only safe into a new, empty folder (pypa/pip#11645,
#13763, #10629), so every generation is a new folder: the backend installs the
exact pins (``--no-deps``: the lock is complete) into ``staging/<id>/site``;
distributions carried over from the active generation are linked in first,
and what was installed is merged in beside them.
"""

from __future__ import annotations

import logging
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

from bootstrap.errors import VerificationError
from bootstrap.inputs.requirements import Desired
from bootstrap.pipeline import reuse, verify
from bootstrap.pipeline.bytecode import compile_tree
from bootstrap.pipeline.lockfile import Lock, Pin
from bootstrap.pipeline.reuse import Carried
from bootstrap.store import layers, leases, safety
from bootstrap.store.fs import atomic_write_text, counted, resolves_inside
from bootstrap.store.layout import BUILDS_ON_FILE, LOCK_FILE, SITE_DIR, Layout
from bootstrap.store.records import Distribution, installed, listed_paths
from bootstrap.tools.backends import Backend
from bootstrap.tools.backends.base import OnStart

log = logging.getLogger("bootstrap")


def new_generation_id() -> str:
    """A staging folder's name, and the generation's ``created_stamp``: sortable by creation time (to the
    microsecond: gc and rollback rely on it), unique across hosts. (The generation's id is its content's.)"""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + os.urandom(3).hex()


def new_staging(layout: Layout) -> Path:
    """A new staging folder of this builder's own, and its lease beside it (``<name>.lease``, renewed while
    this process builds), so a sync on another instance never takes the folder for debris. A kill between
    the two leaves a folder without a lease: debris, removed by the next sync."""
    staging = layout.staging / new_generation_id()
    safety.make_private_dir(staging, exist_ok=False)  # a name of this builder's alone (time and random)
    lease = leases.claim_new(layout.staging_lease(staging), staging, layout.lease_seconds, purpose="staging")
    leases.keep_renewed(lease)
    safety.make_private_dir(staging / SITE_DIR, exist_ok=False)
    return staging


# In a staging folder, beside SITE_DIR: where the backend installs when the site already holds what was carried
# over (pip --target skips folders that exist), merged in after.
NEW_SITE_DIR = "new-site"


def build(
    layout: Layout,
    lock: Lock,
    tools: Backend,
    *,
    timeout: float,
    carried: Carried,
    index_args: list[str] | None = None,
    compile_bytecode: bool = True,
    layered_on: Path | None = None,
    speculated: Path | None = None,
    provided: dict[str, str] | None = None,
) -> Path:
    """Install exactly ``lock`` into a new staging folder; return the folder (``site/`` inside it).

    The ``carried`` distributions (unchanged from the active generation) are linked over with
    their bytecode instead of installed again; only what the backend installed is compiled.
    ``index_args``: the index options the operator allowed the committed file to give.
    ``layered_on``: an organisation's, the workspace generation's site folder; the top-level folders
    that only distributions carried from there fill become links to it (``store.layers``).
    ``speculated``: a staging folder whose ``new-site`` holds an organisation's own lines installed (and
    compiled) while they resolved (``adopt_beside``); kept where it holds exactly what is not carried.
    """
    staging = speculated if speculated is not None else new_staging(layout)
    remove_compile_input(staging)
    site_dir = staging / SITE_DIR
    atomic_write_text(staging / LOCK_FILE, lock.pins_text)  # pins only: whatever else a lock said never reaches pip
    rest = [pin for pin in lock.pins if pin.name not in carried.names]
    target = staging / NEW_SITE_DIR if carried.dists or speculated is not None else site_dir
    if speculated is not None and not adopt_beside(target, rest, carried, provided or {}):
        shutil.rmtree(target)
        speculated = None
    if rest and speculated is None:
        count = len(rest)
        log.info("installing %d distribution%s into a new generation", count, "" if count == 1 else "s")
        pins_file = staging / "install.txt"
        atomic_write_text(pins_file, "".join(pin.line() + "\n" for pin in rest))
        target.mkdir(exist_ok=True)
        tools.install(target, pins_file, no_deps=True, timeout=timeout, index_args=index_args)
        pins_file.unlink()
        if compile_bytecode:
            compile_tree(target, timeout=timeout)
    if carried.dists:
        linked = _link_folders(staging, layered_on, carried, installed_there=target if rest else None)
        made: set[str] = set()
        for dist in carried.dists:  # each from its own site folder (an organisation's come from several)
            reuse.link_distribution(dist.dist_info.parent, site_dir, dist, made, skip=linked)
        log.info("reusing %s", counted(len(carried.dists), "unchanged distribution"))
    if target != site_dir:
        if rest:  # the rule of every path, before two files meet (verify_generation has it too)
            verify.check_shared_files([*carried.dists, *installed(target)])
        reuse.merge(target, site_dir)
    return staging


def adopt_beside(folder: Path, rest: list[Pin], carried: Carried, provided: dict[str, str]) -> bool:
    """Keep what the backend installed into ``folder`` with its own resolver while the lock resolved, if it is
    exactly ``rest``, the pins not carried over, once the distributions carried (or the host's) at the very
    version are taken out again (``--target`` installs every dependency, whatever the site holds)."""
    if not folder.is_dir():
        return False
    wanted = {pin.name: pin.version for pin in rest}
    elsewhere = {dist.name: dist.version for dist in carried.dists} | provided
    try:
        for dist in installed(folder):
            if dist.name not in wanted and elsewhere.get(dist.name) == dist.version:
                _remove_distribution(folder, dist)
        found = {dist.name: dist.version for dist in installed(folder)}
    except (OSError, VerificationError):
        return False
    kept = found == wanted
    if kept:
        log.info("the install made while resolving matches the lock: kept")
    else:
        log.info("not keeping the install made while resolving (it does not match the lock): installing from it")
    return kept


def _link_folders(staging: Path, layered_on: Path | None, carried: Carried, installed_there: Path | None) -> set[str]:
    """The top-level folders of the workspace generation ``layered_on`` linked into ``staging``'s site (none
    where the filesystem refuses links, or nothing is carried from there): the rest is linked file by file.
    A folder the backend just installed into (a namespace the new distributions share) is made here."""
    site_dir = staging / SITE_DIR
    generation = layers.workspace_site_for(site_dir, layered_on) if layered_on is not None else None
    if layered_on is None or generation is None or not any(d.dist_info.parent == layered_on for d in carried.dists):
        return set()
    try:
        names = layers.folders_to_link(layered_on, installed(layered_on), carried.dists)
    except VerificationError:  # a damaged dist-info there: the files, linked one by one, are checked as ever
        return set()
    if installed_there is not None:
        names -= set(os.listdir(installed_there))
    if not names:
        return set()
    builds_on = staging / BUILDS_ON_FILE
    atomic_write_text(builds_on, generation + "\n")  # first: the workspace's gc keeps it from now on
    if layers.link_folders(site_dir, generation, names):
        return names
    builds_on.unlink()
    return set()


def build_speculatively(
    layout: Layout,
    desired: Desired,
    tools: Backend,
    *,
    timeout: float,
    on_start: OnStart | None = None,
    around: str = "",
    folder: str = SITE_DIR,
) -> Path:
    """Install ``desired`` with the backend's own resolver into a new staging folder, while the lock resolves.

    Only ever kept through ``adopt`` (``adopt_beside`` for an organisation's own lines, installed into
    ``folder`` = ``new-site``, beside what will be carried over), when what was installed is exactly what
    the lock pins: pip-tools stays the only source of pins, and a cold sync
    costs about one install instead of a resolution plus an install.
    """
    staging = new_staging(layout)
    input_file = desired.write_compile_input(staging, around)
    log.info("installing while resolving (kept only if it matches the lock)")
    (staging / folder).mkdir(exist_ok=True)
    tools.install(staging / folder, input_file, no_deps=False, timeout=timeout, quiet=True, on_start=on_start)
    return staging


def remove_compile_input(staging: Path) -> None:
    """What ``Desired.write_compile_input`` wrote into a staging folder: never part of a generation."""
    for scratch in ("requirements.in", "constraints.txt", "host-constraints.txt", "lock-constraints.txt"):
        (staging / scratch).unlink(missing_ok=True)


def adopt(staging: Path, lock: Lock, provided: dict[str, str] | None = None) -> bool:
    """Keep a speculative install if it holds exactly the lock's pins; record the lock in it.

    pip installs what the host already ``provided`` as well (``--target`` ignores what is
    installed): those distributions are taken out again, file by file from their RECORD.
    """
    site_dir = staging / SITE_DIR
    # A pin at the host's very version is the host's; at another (a user's own version of one of bootstrap's
    # tools, an operator's override) it is installed, and must stay.
    wanted = {pin.name: pin.version for pin in lock.pins if (provided or {}).get(pin.name) != pin.version}
    for dist in installed(site_dir):
        if dist.name not in wanted and (provided or {}).get(dist.name) == dist.version:
            _remove_distribution(site_dir, dist)
    found = {dist.name: dist.version for dist in installed(site_dir)}
    if found != wanted:
        return False
    remove_compile_input(staging)
    atomic_write_text(staging / LOCK_FILE, lock.pins_text)
    return True


def drop_provided(site_dir: Path, provided: dict[str, str]) -> None:
    """Take out what ``--target`` installed although the host has it at that very version (``adopt`` would):
    before its bytecode is compiled, which would be wasted (pydantic and its kin: a quarter of set M's)."""
    for dist in installed(site_dir):
        if provided.get(dist.name) == dist.version:
            _remove_distribution(site_dir, dist)


def _remove_distribution(site_dir: Path, dist: Distribution) -> None:
    folders: set[Path] = set()
    # pip's scripts and data files: RECORD says `../../bin/tool`, `pip install --target` put it at `bin/tool`.
    for path in listed_paths([dist]):
        target = site_dir / path
        if not resolves_inside(target, site_dir):  # never outside the site folder, by a link
            continue
        target.unlink(missing_ok=True)
        folders.update(parent for parent in target.parents if site_dir in parent.parents)
        if target.suffix == ".py":  # its bytecode, compiled beside it (RECORD does not list it)
            cache = target.parent / "__pycache__"
            for compiled in cache.glob(f"{target.stem}.*.pyc"):
                compiled.unlink(missing_ok=True)
            folders.add(cache)
    shutil.rmtree(dist.dist_info, ignore_errors=True)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):  # deepest first
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
