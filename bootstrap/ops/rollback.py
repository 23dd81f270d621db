"""Roll back: publish an earlier generation again (they are kept for this).

A generation is never modified, so rolling back is only a new manifest that
points at an older folder. It holds until the requirements file (or its
lock, an included file, the runtime overlay) changes, or an explicit ``sync``
builds what the file asks for again: the rolled-back manifest records those
inputs as they are now, so start-up keeps serving it instead of rebuilding
what was just rolled back, and ``rolled_back_from`` what it moved away from
(``check`` says so: degraded, not unhealthy).
"""

from __future__ import annotations

import logging

from bootstrap.errors import BootstrapError, RollbackError
from bootstrap.inputs import requirements
from bootstrap.inputs.desired import policy_for
from bootstrap.pipeline.publish import newest_first, read_generation
from bootstrap.settings import Settings
from bootstrap.store import freshness, locks, manifest, records
from bootstrap.store.layout import Layout

TYPE_CHECKING = False
if TYPE_CHECKING:  # the manifest's types exist for the type checker only
    from bootstrap.store.manifest import Inputs, Manifest

log = logging.getLogger("bootstrap")


def candidates(layout: Layout, active: str | None) -> list[str]:
    """Complete generations other than the active one, usable by this interpreter, newest first."""
    found = []
    for generation, record in newest_first(layout):
        if generation == active or record is None:
            continue
        if manifest.built_for_this_interpreter(record.get("python")):
            found.append(generation)
    return found


def rollback(settings: Settings, to: str | None = None) -> Manifest:
    """Make ``to`` (default: the newest generation before the active one) active again; return the manifest."""
    layout = settings.layout
    with locks.build_lock(layout, settings.lock_timeout):
        current = manifest.read(layout.manifest)
        active = current.get("generation") if current else None
        usable = candidates(layout, active)
        if to is None:
            older = _before(layout, usable, active, manifest.history_of(current))
            if not older:
                raise RollbackError(
                    f"no earlier generation to roll back to in {layout.generations} "
                    f"(BOOTSTRAP_GENERATIONS_KEPT={settings.generations_kept} keeps that many)"
                )
            to = older[0]
        elif to not in usable:
            raise RollbackError(f"{to} is not a complete generation for this interpreter; `status` lists them")
        site_dir = layout.site(to)
        missing = records.missing_files(site_dir, records.installed(site_dir))
        if missing:
            raise RollbackError(f"generation {to} is damaged ({missing[0]} is missing); pick another")
        record = read_generation(layout.generation(to))
        assert record is not None  # a candidate
        inputs = _inputs_now(settings)
        relative = freshness.relative_inputs(inputs, settings.sources)
        rolled_back = manifest.rolled_back(
            to, record, site_dir, str(settings.requirements_file), inputs, current, relative_inputs=relative
        )
        manifest.write(layout.manifest, rolled_back)
        log.info(
            "rolled back from %s to %s; hosts serve it until the requirements file changes or `sync` runs",
            active,
            to,
            extra={"outcome": True},  # pipeline.sync.OUTCOME: the command line prints it once
        )
        return rolled_back


def _before(layout: Layout, usable: list[str], active: str | None, history: list[str]) -> list[str]:
    """Of ``usable``, those that served before the active generation, most recent first: the manifest's
    ``history`` after the active one (syncs made them active; a rollback moves along it, never adds to
    it), else (an older manifest) those built before it."""
    if active in history:
        return [generation for generation in history[history.index(active) + 1 :] if generation in usable]
    stamps = {name: str(record.get("created_stamp") or name) for name, record in newest_first(layout) if record}
    if active is None or active not in stamps:
        return usable
    return [generation for generation in usable if stamps.get(generation, generation) < stamps[active]]


def _inputs_now(settings: Settings) -> Inputs:
    """Every file the requirements file reads now (its includes too), the lock and the overlay, hashed."""
    try:
        read = requirements.read(settings.requirements_file, policy_for(settings)).inputs
    except BootstrapError:  # a broken file is often why one rolls back: its includes are then unknown
        read = {}
    return freshness.inputs_of(settings.sources, read)
