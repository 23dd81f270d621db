"""Publish a verified generation in one atomic step; clean staging; collect old generations.

A published generation is never modified. Publishing is one rename into
``generations/``; the caller then writes the manifest, which is what makes it
active: a crash between the two leaves an unreferenced generation that gc
removes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path

from bootstrap.errors import PublishError
from bootstrap.store import safety
from bootstrap.store.layout import GENERATION_FILE, SITE_DIR, Layout
from bootstrap.store.manifest import read_generation_record, write_generation_record

TYPE_CHECKING = False
if TYPE_CHECKING:  # the manifest's types exist for the type checker only
    from bootstrap.store.manifest import GenerationRecord

log = logging.getLogger("bootstrap")


def publish(layout: Layout, staging: Path, record: GenerationRecord) -> Path:
    """Move a verified staging folder into ``generations/`` (one rename); return its site folder."""
    write_generation_record(staging / GENERATION_FILE, record)
    final = layout.generation(staging.name)
    try:
        safety.make_private_dir(layout.generations)
        os.rename(staging, final)
    except OSError as exc:
        raise PublishError(f"cannot publish {staging.name} into {layout.generations} ({exc.strerror})") from exc
    return final / SITE_DIR


def read_generation(path: Path) -> GenerationRecord | None:
    """A published generation's own record, or None if it is incomplete."""
    return read_generation_record(path / GENERATION_FILE)


def clean_staging(layout: Layout, *, why: str = "debris of an interrupted sync") -> None:
    """Empty the staging folder (call with the build lock held: then nothing in it is in use)."""
    if not layout.staging.is_dir():
        return
    for entry in layout.staging.iterdir():
        if not entry.name.startswith("trash-"):
            log.info("removing staging/%s (%s)", entry.name, why)
        if entry.is_symlink() or not entry.is_dir():  # a link is removed, never followed
            with contextlib.suppress(OSError):
                entry.unlink()
        else:
            shutil.rmtree(entry, ignore_errors=True)  # staging is never active: a half-deleted folder is harmless
        if os.path.lexists(entry):
            why_not = undeletable(entry) or "it is in use, or the share refused"
            log.warning("cannot remove staging/%s: %s; delete it as a user that may", entry.name, why_not)
    for folder in (layout.root, layout.lock_cache):  # atomic writes a killed process left half-done
        for stray in folder.glob(".*.tmp") if folder.is_dir() else ():
            stray.unlink(missing_ok=True)


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


def collect_garbage(
    layout: Layout, *, active: str | None, keep: int, in_use: frozenset[str] = frozenset()
) -> list[str]:
    """Remove generations beyond the newest ``keep`` (the active one always stays); return their ids.

    ``in_use``: generations running hosts still import from (they stay, beyond ``keep``).
    """
    if not layout.generations.is_dir():
        return []
    ids = sorted((entry.name for entry in layout.generations.iterdir() if entry.is_dir()), reverse=True)
    kept = [active] if active else []
    removed = []
    for generation_id in ids:
        if generation_id in kept:
            continue
        if generation_id in in_use:
            log.info("keeping generation %s: a running host still imports from it", generation_id)
            continue
        complete = read_generation(layout.generation(generation_id)) is not None
        if complete and len(kept) < keep:
            kept.append(generation_id)
            continue
        try:
            remove_tree(layout.generation(generation_id), layout.staging)
        except OSError as exc:  # a share refusing to rename a folder in use: try again next time
            log.warning("could not remove generation %s (%s); the next sync tries again", generation_id, exc)
            continue
        removed.append(generation_id)
    if removed:
        log.info("removed %d old generation%s", len(removed), "" if len(removed) == 1 else "s")
    return removed


def remove_tree(path: Path, trash_dir: Path) -> None:
    """Remove a folder so that it never looks half-present: rename it away, then delete.

    The rename is atomic, so a crash leaves the folder whole or in the trash
    (``trash_dir``, swept by the next sync), never half-deleted in place.
    """
    if not path.exists():
        return
    safety.make_private_dir(trash_dir)
    doomed = trash_dir / f"trash-{path.name}-{os.urandom(4).hex()}"
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)
