"""Publish a verified generation in one atomic step; clean staging; collect old generations.

A published generation is never modified. Its id is its content's (``generation_id``: the pins, what
was installed, the interpreter and platform), so two builders of the same set on two instances make
the same generation: the one whose rename comes second finds it published and uses it. Publishing is
one rename into ``generations/``; the caller then writes the manifest, which is what makes it active:
a crash between the two leaves an unreferenced generation that gc removes.

Each builder's staging folder has its lease beside it (``build.new_staging``): cleanup removes only
folders whose lease expired (the builder died, here or on another instance) or that are this process's
own, and gc keeps every generation a live lease names (one about to be pointed at).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shutil
from collections.abc import Callable
from pathlib import Path

from bootstrap.errors import PublishError
from bootstrap.store import leases, records, safety
from bootstrap.store.fs import bytes_sha256, retrying
from bootstrap.store.layout import GENERATION_FILE, SITE_DIR, Layout
from bootstrap.store.manifest import interpreter, read_generation_record, write_generation_record

TYPE_CHECKING = False
if TYPE_CHECKING:  # the manifest's types exist for the type checker only (and packaging stays unloaded: gc
    # runs under a bare interpreter, tests/test_sealed.py)
    from bootstrap.pipeline.lockfile import Lock
    from bootstrap.store.manifest import GenerationRecord

log = logging.getLogger("bootstrap")

# Part of every generation id: a change to what a generation folder holds, or how, gets new ids.
GENERATION_FORMAT = 1


def generation_id(lock: Lock, installed: Lock, *, compile_bytecode: bool, overrides: list[str]) -> str:
    """The id of the generation holding ``installed`` (of ``lock``'s pins) for this interpreter.

    The same on every instance for the same inputs; readable enough to tell the interpreter apart.
    """
    python = interpreter()
    key = {
        "format": GENERATION_FORMAT,
        "libc": list(platform.libc_ver()),  # glibc or musl, and which: wheels built for one may not load on another
        "pins": lock.pins_text,
        "installed": installed.pins_text,
        "python": python,
        "bytecode": compile_bytecode,
        "overrides": sorted(overrides),
    }
    digest = bytes_sha256(json.dumps(key, sort_keys=True).encode())
    return f"{python['tag']}-{digest[:24]}"


def publish(layout: Layout, staging: Path, record: GenerationRecord) -> Path:
    """Move a verified staging folder into ``generations/<id>`` (one rename); return its site folder.

    A generation of that id already there (another instance built the same set meanwhile) is success:
    this build is discarded. The staging lease names the generation until ``done`` (gc keeps it).
    """
    write_generation_record(staging / GENERATION_FILE, record)
    generation = record["generation"]
    final = layout.generation(generation)
    leases.update_held(layout.staging_lease(staging), generation=generation)
    leases.update_held(layout.build_lease, generation=generation)
    try:
        safety.make_private_dir(layout.generations)
        os.rename(staging, final)
    except OSError as exc:
        if not same_generation(final, record):
            raise PublishError(f"cannot publish {generation} into {layout.generations} ({exc.strerror})") from exc
        log.info("generation %s was published meanwhile by another sync (the same set): using it", generation)
        remove_tree(staging, layout.staging)
    return final / SITE_DIR


def same_generation(folder: Path, record: GenerationRecord) -> bool:
    """Whether ``folder`` is a complete published generation of the same pins as ``record``."""
    found = read_generation(folder)
    return found is not None and found.get("lock_sha256") == record.get("lock_sha256")


def published_intact(layout: Layout, generation: str) -> Path | None:
    """The site folder of ``generation`` if it is published, complete, and holds what was verified; named in
    the build claim from here on (gc on another instance keeps it while the manifest is pointed at it)."""
    record = read_generation(layout.generation(generation))
    site = layout.site(generation)
    if record is None or not records.intact(site, record.get("packages", [])):
        return None
    leases.update_held(layout.build_lease, generation=generation)
    return site


def done(layout: Layout, staging: Path) -> None:
    """The manifest points at what ``staging`` became: its lease is no longer needed."""
    leases.release_held(layout.staging_lease(staging))


def read_generation(path: Path) -> GenerationRecord | None:
    """A published generation's own record, or None if it is incomplete."""
    return read_generation_record(path / GENERATION_FILE)


def clean_staging(layout: Layout, *, why: str = "debris of an interrupted sync") -> None:
    """Remove what no live builder owns from staging: folders whose lease expired (their builder died, here
    or on another instance), this process's own, old-style folders without a lease, and the trash."""
    if not layout.staging.is_dir():
        return
    entries = {entry.name: entry for entry in layout.staging.iterdir()}
    for name, entry in sorted(entries.items()):
        if name.endswith(".tmp"):  # a lease's probe of the share's clock, there for a moment (swept below)
            continue
        if name.endswith(".lease"):
            if name[: -len(".lease")] not in entries and _removable(layout, entry):
                leases.release_held(entry)  # ours (a sync that failed after publishing): renewed no more
                _unlink(entry)  # a builder killed before its folder existed, or after it was published
            continue
        lease = layout.staging_lease(entry)
        if lease.name in entries and not _removable(layout, lease):
            continue  # another builder's, still at work
        if not name.startswith("trash-"):
            log.info("removing staging/%s (%s)", name, why)
        _remove_entry(entry)
        if os.path.lexists(entry):
            why_not = undeletable(entry) or "it is in use, or the share refused"
            log.warning("cannot remove staging/%s: %s; delete it as a user that may", name, why_not)
            continue
        leases.release_held(lease)
        _unlink(lease)  # an expired one (a dead builder's)
    _remove_stray_writes(layout)


def _unlink(path: Path) -> None:
    """Remove a file, through a share's moment of EBUSY (it may hold a file just read open a while)."""
    with contextlib.suppress(OSError):
        retrying(lambda: os.unlink(path), what=f"removing {path.name}", seconds=3.0)


def _removable(layout: Layout, lease: Path) -> bool:
    """A lease whose holder is gone (or not renewing), or this very process."""
    judged = leases.judge(lease, layout.lease_seconds)
    return not judged.exists or judged.expired or leases.held_here(judged)


def _remove_entry(entry: Path) -> None:
    if entry.is_symlink() or not entry.is_dir():  # a link is removed, never followed
        with contextlib.suppress(OSError):
            entry.unlink()
    else:
        shutil.rmtree(entry, ignore_errors=True)  # staging is never active: a half-deleted folder is harmless


def _remove_stray_writes(layout: Layout) -> None:
    """Atomic writes a killed process left half-done (and filelock 4's probe files); on a share another
    instance may be writing one right now, so only those older than a lease (a write takes milliseconds)."""
    strays = [
        stray
        for folder in (layout.root, layout.lock_cache, layout.staging)
        if folder.is_dir()
        for stray in folder.glob(".*.tmp")
    ]
    strays += layout.root.glob(".filelock-probe-*") if layout.root.is_dir() else []  # see locks._held
    if not strays:
        return
    now = leases.share_clock(layout.root)
    for stray in strays:
        with contextlib.suppress(OSError):
            if now - stray.stat().st_mtime > layout.lease_seconds:
                stray.unlink()


def undeletable(path: Path) -> str | None:
    """Why this user cannot delete ``path`` (a folder in it that it may not empty, and whose it is), or None.

    An unprivileged gc can rename a generation a privileged sync wrote into the trash, but not empty its folders.
    """
    parent = path.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        return _not_yours(str(parent))
    if path.is_symlink() or not path.is_dir():
        return None
    unlisted: list[OSError] = []
    for folder, dirs, files in os.walk(path, onerror=unlisted.append):  # os.walk follows no links
        if (dirs or files) and not os.access(folder, os.W_OK | os.X_OK):
            return _not_yours(folder)
    if unlisted:
        return _not_yours(str(unlisted[0].filename))
    return None


def _not_yours(folder: str) -> str:
    try:
        owner = f"uid {os.lstat(folder).st_uid}"
    except OSError:
        owner = "another user"
    return f"{folder} belongs to {owner}, and this process (uid {os.geteuid()}) may not empty it"


def newest_first(layout: Layout) -> list[tuple[str, GenerationRecord | None]]:
    """The folders in ``generations/`` with their records, newest built first (incomplete ones last)."""
    if not layout.generations.is_dir():
        return []
    found = [(entry.name, read_generation(entry)) for entry in layout.generations.iterdir() if entry.is_dir()]

    def built(item: tuple[str, GenerationRecord | None]) -> tuple[bool, str, str]:
        name, record = item
        if record is None:
            return (False, "", name)
        # Generations from before content ids were named by their creation time (and have no stamp).
        return (True, str(record.get("created_stamp") or name), name)

    return sorted(found, key=built, reverse=True)


def leased_generations(layout: Layout) -> frozenset[str]:
    """Generations a live lease names: about to be pointed at by a builder (here or on another instance)."""
    named: set[str] = set()
    folder = layout.staging
    candidates = [*folder.glob("*.lease")] if folder.is_dir() else []
    for lease in [layout.build_lease, *candidates]:
        judged = leases.judge(lease, layout.lease_seconds)
        if judged.exists and not judged.expired and judged.generation:
            named.add(judged.generation)
    return frozenset(named)


def in_order(layout: Layout, history: list[str]) -> list[tuple[str, GenerationRecord | None]]:
    """The generations, most recently made active first (``history``, the manifest's), then the others
    newest built first."""
    found = newest_first(layout)
    rank = {generation: position for position, generation in enumerate(history)}
    return sorted(found, key=lambda item: rank.get(item[0], len(rank)))  # stable: the rest stays in build order


def collect_garbage(
    layout: Layout,
    *,
    active: str | None,
    keep: int,
    in_use: frozenset[str] = frozenset(),
    history: list[str] | None = None,
    built_on: Callable[[], frozenset[str]] | None = None,
) -> list[str]:
    """Remove generations beyond the ``keep`` most recently active (the active one always stays); return their
    ids. ``history``: the manifest's, most recent first (without it, the newest built count).

    ``in_use``: generations running hosts still import from (they stay, beyond ``keep``); so do those a
    live lease names (a builder about to point the manifest at one).
    ``built_on``: the workspace generations organisations' generations link into, read again for each one
    removed, before its rename and after it (then it is put back): an organisation's build writes its
    ``builds-on`` before it links, and may publish while this removes one generation after another.
    """
    generations = in_order(layout, history or [])
    if not generations:
        return []
    in_use = in_use | leased_generations(layout)
    kept = [active] if active else []
    removed = []
    for generation_id, record in generations:
        if generation_id in kept:
            continue
        if generation_id in in_use:
            log.info(
                "keeping generation %s: a running host still imports from it, a sync publishes it, or an "
                "organisation's generation builds on it",
                generation_id,
            )
            continue
        if record is not None and len(kept) < keep:
            kept.append(generation_id)
            continue
        linked_into = (lambda gid=generation_id: gid in built_on()) if built_on is not None else None
        try:
            if linked_into is not None and linked_into():
                log.info("keeping generation %s: an organisation's generation builds on it", generation_id)
                continue
            if not remove_tree(layout.generation(generation_id), layout.staging, keep_if=linked_into):
                log.info("keeping generation %s: an organisation's generation builds on it", generation_id)
                continue
        except OSError as exc:  # a share refusing to rename a folder in use: try again next time
            log.warning("could not remove generation %s (%s); the next sync tries again", generation_id, exc)
            continue
        removed.append(generation_id)
    if removed:
        log.info("removed %d old generation%s", len(removed), "" if len(removed) == 1 else "s")
    return removed


def remove_tree(path: Path, trash_dir: Path, keep_if: Callable[[], bool] | None = None) -> bool:
    """Remove a folder so that it never looks half-present: rename it away, then delete; False if
    ``keep_if``, asked once it is renamed away, says it stays after all (it is renamed back).

    The rename is atomic, so a crash leaves the folder whole or in the trash
    (``trash_dir``, swept by the next sync), never half-deleted in place.
    """
    if not path.exists():
        return True
    safety.make_private_dir(trash_dir)
    doomed = trash_dir / f"trash-{path.name}-{os.urandom(4).hex()}"
    os.replace(path, doomed)
    if keep_if is not None and keep_if():
        os.replace(doomed, path)
        return False
    shutil.rmtree(doomed, ignore_errors=True)
    return True
