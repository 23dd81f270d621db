"""Packages added at run time: ``add`` and ``remove`` (``bootstrap.ensure()`` in a host runs ``add --if-needed``).

Workflows on these platforms install packages as they run (``pip install
--target /home/.packages X``); such a package vanished at the next sync or
broke the shared folder. Here a runtime install is declarative:
``ensure("tabulate")`` (or ``python -m bootstrap add tabulate``) writes the
requirement into ``runtime-requirements.txt`` in the state folder
(``BOOTSTRAP_STATE_DIR``, beside the packages folder, which may be emptied) and
syncs. Every sync reads that overlay beside the committed file
(``inputs.overlay``), so the package survives restarts and later syncs, and
the manifest names its source ("repo" or "runtime"). A runtime line that
conflicts with the committed file is an error naming both lines; the overlay
on disk changes only once a generation serving it is published, so a failed
or killed add changes nothing.

Edits of the overlay are serialised by their own lock (``.runtime.lock``),
held across the sync that follows.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from packaging.utils import canonicalize_name

from bootstrap.errors import BootstrapError, RequirementsError
from bootstrap.inputs import legacy, overlay, requirements
from bootstrap.inputs.desired import policy_for
from bootstrap.inputs.requirements import Policy, RequirementLine
from bootstrap.pipeline.sync import RuntimeChange, SyncResult, sync
from bootstrap.settings import Settings
from bootstrap.store import freshness, locks, manifest, safety
from bootstrap.store.layout import Layout

if TYPE_CHECKING:
    from bootstrap.store.manifest import Manifest, PackageEntry

log = logging.getLogger("bootstrap")


def add(settings: Settings, text: str) -> SyncResult:
    """Sync with ``text`` in the overlay (replacing the package's earlier line); the overlay on disk changes only
    once that is published, so a failure, or a process killed on the way, changes nothing."""
    wanted = overlay.parse_request(text)
    marker = wanted.requirement.marker
    if marker is not None and not marker.evaluate():
        raise RequirementsError(
            f"cannot add {text!r}", None, f"its marker ({marker}) excludes this interpreter: nothing to install"
        )
    layout = settings.layout
    safety.prepare_packages_dir(layout.root, allow_world_writable=settings.allow_world_writable)
    legacy.prepare_state_dir(settings)
    with locks.overlay_lock(layout, settings.lock_timeout):
        legacy.migrate(layout)  # an older bootstrap's overlay first: its lines are kept
        kept = [line for line in _current_lines(layout) if line.name != wanted.name]
        text_after = overlay.render([*kept, wanted])
        try:
            _check_against_committed(settings, layout, text_after, wanted)  # a conflict is refused before any work
            # Not in the active generation although asked for (a rollback, say): build even if the inputs look served.
            missing = package_entry(manifest.read(layout.manifest), wanted.name) is None
            log.info("adding %s to the runtime requirements", wanted.requirement)
            return sync(settings, RuntimeChange(text_after, rebuild=missing))
        except BootstrapError as exc:  # say which request failed
            # A line of the overlay as it would have been is on no disk: name the request, not that line.
            about_overlay = isinstance(exc, RequirementsError) and exc.path == layout.runtime_requirements
            why = exc.why if isinstance(exc, RequirementsError) and about_overlay else exc.message
            exc.message = f"cannot add {text!r} (nothing changed): {why}"
            exc.args = (exc.message,)
            raise


def remove(settings: Settings, name: str) -> SyncResult:
    """Sync without ``name`` in the overlay; an error if it was never added at run time."""
    layout = settings.layout
    canonical = canonicalize_name(name)
    safety.prepare_packages_dir(layout.root, allow_world_writable=settings.allow_world_writable)
    legacy.prepare_state_dir(settings)
    with locks.overlay_lock(layout, settings.lock_timeout):
        legacy.migrate(layout)  # an older bootstrap's overlay first: its lines are kept
        lines = _current_lines(layout)
        kept = [line for line in lines if line.name != canonical]
        if len(kept) == len(lines):
            raise RequirementsError(f"cannot remove {name!r}", None, _not_removable(settings, canonical))
        log.info("removing %s from the runtime requirements", name)
        return sync(settings, RuntimeChange(overlay.render(kept)))


def _not_removable(settings: Settings, name: str) -> str:
    """Why ``remove`` has nothing to take out: where the package comes from, as the active set says."""
    entry = package_entry(manifest.read(settings.layout.manifest), name)
    if entry is None:
        return "it was not added at run time, and the active generation does not hold it: nothing to remove"
    if entry.get("source") == "repo":
        where = settings.requirements_file
        return f"it was not added at run time: the committed file asks for it; remove it there ({where})"
    return (
        "it was not added at run time: it is a dependency of another package (`python -m bootstrap status` lists "
        "where each package comes from)"
    )


def served(settings: Settings, text: str) -> PackageEntry | None:
    """The active generation's entry for the request ``text`` if it already serves it (``add --if-needed``)."""
    return _served(manifest.read(settings.layout.manifest), overlay.parse_request(text), settings)


def package_entry(current: Manifest | None, name: str) -> PackageEntry | None:
    for package in current.get("packages", []) if current else []:
        if canonicalize_name(str(package.get("name"))) == name:
            return package.copy()
    return None


def _served(current: Manifest | None, wanted: RequirementLine, settings: Settings) -> PackageEntry | None:
    """The active generation's entry for ``wanted`` if it already serves it, asked for (not a mere dependency)."""
    if current is None or current.get("status") != "ok" or wanted.requirement.url:
        return None
    stale = freshness.stale_reason(current, settings.sources)
    entry = package_entry(current, wanted.name)
    if stale is not None or entry is None or not entry.get("source"):
        return None
    version = entry.get("version")
    if not isinstance(version, str) or not wanted.requirement.specifier.contains(version, prereleases=True):
        return None
    return entry


def _current_lines(layout: Layout) -> list[RequirementLine]:
    try:
        return overlay.read_overlay(layout.runtime_requirements, Policy(allow_direct_references=True))
    except RequirementsError as exc:  # a hand-edited overlay: say so rather than silently dropping lines
        raise RequirementsError(
            layout.runtime_requirements, exc.line, f"{exc.why}; fix the file or delete it to start again"
        ) from None


def _check_against_committed(settings: Settings, layout: Layout, text: str, wanted: RequirementLine) -> None:
    """The request, then the overlay as it would be, merged with the committed file: raises on a conflict,
    naming the committed line."""
    policy = policy_for(settings)
    try:
        desired = requirements.read(settings.requirements_file, policy)
    except RequirementsError:
        return  # the committed file's own problem: the sync reports it, in full
    for line in desired.requirements:
        if line.name == wanted.name and requirements.conflicting(line, wanted):
            raise RequirementsError(
                layout.runtime_requirements,  # `add` names the request instead
                None,
                f"{wanted.requirement} conflicts with {line.path}:{line.line}: {line.requirement} (the committed "
                f"file); ask for a version it allows, or change {line.path.name}",
            )
    overlay.merged(desired, overlay.parse_overlay(layout.runtime_requirements, text, policy), {}, settings.org)
