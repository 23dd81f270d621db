"""Packages added at run time: the overlay kept in the packages folder.

Workflows on these platforms install packages as they run (``pip install
--target /home/.packages X``); such a package vanished at the next sync or
broke the shared folder. Here a runtime install is declarative:
``ensure("tabulate")`` (or ``python -m bootstrap add tabulate``) writes the
requirement into ``runtime-requirements.txt`` in the packages folder and
syncs. Every sync reads that overlay beside the committed file, so the
package survives restarts and later syncs, and the manifest names its source
("repo" or "runtime"). A runtime line that conflicts with the committed file
is an error naming both lines; a failed add is taken back out of the overlay,
so one bad request never blocks later syncs.

Edits of the overlay are serialised by their own lock (``.runtime.lock``),
held across the sync that follows, so a failed add can be undone without
undoing someone else's.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from bootstrap import manifest, requirements
from bootstrap.activation import stale_reason
from bootstrap.errors import BootstrapError, LockTimeoutError, RequirementsError
from bootstrap.layout import Layout
from bootstrap.requirements import Desired, Policy, RequirementLine
from bootstrap.settings import Settings, load_settings
from bootstrap.sync import RuntimeChange, SyncResult, policy_for, prepare_folder, sync

log = logging.getLogger("bootstrap")

_HEADER = (
    "# Packages added at run time (bootstrap.ensure() or `python -m bootstrap add`), kept across restarts\n"
    "# and syncs. Written by bootstrap: remove one with `python -m bootstrap remove NAME`, or move it into\n"
    "# the committed requirements file.\n"
)


def read_overlay(path: Path, policy: Policy) -> list[RequirementLine]:
    """The overlay's requirements (marked ``runtime``), validated like the committed file's; none if absent."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except UnicodeDecodeError:
        raise RequirementsError(path, None, "is not UTF-8 text; remove it to drop the runtime additions") from None
    return parse_overlay(path, text, policy)


def parse_overlay(path: Path, text: str, policy: Policy) -> list[RequirementLine]:
    """The overlay's text (``path`` names it in messages) as requirements marked ``runtime``."""
    lines = []
    for line_no, line in requirements.logical_lines(text):
        if line.startswith("-"):
            raise RequirementsError(path, line_no, "only requirements belong here (no options); fix or remove the line")
        parsed = requirements.parse_requirement(path, line_no, line, policy)
        lines.append(dataclasses.replace(parsed, runtime=True))
    return lines


def merge(desired: Desired, overlay: list[RequirementLine]) -> None:
    """Add the overlay to what the committed file asks for; a conflict is an error naming both lines.

    A package the committed file names too is narrowed by a constraint (one
    requirement line per package for pip), unless the runtime line adds extras.
    """
    committed: dict[str, list[RequirementLine]] = {}
    for line in desired.requirements:
        committed.setdefault(line.name, []).append(line)
    for extra in overlay:
        for line in committed.get(extra.name, []):
            if _conflict(line, extra):
                raise RequirementsError(
                    extra.path,
                    extra.line,
                    f"{extra.requirement} (added at run time) conflicts with {line.path}:{line.line}: "
                    f"{line.requirement}; remove it with `python -m bootstrap remove {extra.requirement.name}` "
                    f"or change {line.path.name}",
                )
        if extra.name not in committed or extra.requirement.extras:
            desired.requirements.append(extra)
        elif extra.requirement.specifier:
            desired.constraints.append(extra)


def _conflict(committed: RequirementLine, runtime: RequirementLine) -> bool:
    """True when no version can satisfy both lines (as far as exact pins and URLs tell; ranges go to pip)."""
    one, other = committed.requirement, runtime.requirement
    if one.marker is not None and other.marker is not None and str(one.marker) != str(other.marker):
        return False  # never both in force
    if one.url or other.url:
        return bool(one.url and other.url and one.url != other.url) or bool(
            (one.url and other.specifier) or (other.url and one.specifier)
        )
    for pinned, against in ((one, other), (other, one)):
        for spec in pinned.specifier:
            exact = spec.operator in ("==", "===") and not spec.version.endswith(".*")
            if exact and not against.specifier.contains(spec.version, prereleases=True):
                return True
    return False


def parse_request(text: str) -> RequirementLine:
    """One requirement as a workflow or operator asks for it (``NAME`` or ``NAME[extras] SPEC``)."""
    label = f"cannot add {text!r}"
    if not isinstance(text, str) or not text.strip():
        raise RequirementsError(label, None, "give a package name, e.g. `tabulate` or `tabulate>=0.9`")
    if any(char in text for char in "\r\n\0#"):
        raise RequirementsError(label, None, "give one requirement on one line, without comments")
    if text.strip().startswith("-"):
        raise RequirementsError(label, None, "only a requirement (NAME or NAME[SPEC]) can be added, not an option")
    # Never a URL or a path, whatever the committed file may give: a runtime request can come from a
    # workflow's input (an HTTP body), and BOOTSTRAP_ALLOW_DIRECT_REFERENCES is about the reviewed file.
    try:
        parsed = requirements.parse_requirement(Path("<request>"), 0, text.strip(), Policy())
    except RequirementsError as exc:
        raise RequirementsError(label, None, exc.why) from None
    if parsed.hashes:
        raise RequirementsError(label, None, "--hash is for committed locks, not for a runtime addition")
    return dataclasses.replace(parsed, runtime=True)


def add(settings: Settings, text: str) -> SyncResult:
    """Sync with ``text`` in the overlay (replacing the package's earlier line); the overlay on disk changes only
    once that is published, so a failure, or a process killed on the way, changes nothing."""
    wanted = parse_request(text)
    marker = wanted.requirement.marker
    if marker is not None and not marker.evaluate():
        raise RequirementsError(
            f"cannot add {text!r}", None, f"its marker ({marker}) excludes this interpreter: nothing to install"
        )
    layout = Layout(settings.packages_dir)
    prepare_folder(layout, settings)
    with _overlay_lock(layout, settings.lock_timeout):
        kept = [line for line in _current_lines(layout) if line.name != wanted.name]
        overlay = _render([*kept, wanted])
        _check_against_committed(settings, layout, overlay)  # a conflict is refused before any work
        # Not in the active generation although asked for (a rollback, say): build even if the inputs look served.
        missing = package_entry(manifest.read(layout.manifest), wanted.name) is None
        log.info("adding %s to the runtime requirements", wanted.requirement)
        try:
            return sync(settings, RuntimeChange(overlay, rebuild=missing))
        except BootstrapError as exc:  # say which request failed, not only which overlay line
            exc.message = f"cannot add {text!r} (nothing changed): {exc.message}"
            exc.args = (exc.message,)
            raise


def remove(settings: Settings, name: str) -> SyncResult:
    """Sync without ``name`` in the overlay; an error if it was never added at run time."""
    layout = Layout(settings.packages_dir)
    canonical = canonicalize_name(name)
    prepare_folder(layout, settings)
    with _overlay_lock(layout, settings.lock_timeout):
        lines = _current_lines(layout)
        kept = [line for line in lines if line.name != canonical]
        if len(kept) == len(lines):
            raise RequirementsError(
                f"cannot remove {name!r}",
                None,
                "it was not added at run time (`python -m bootstrap status` lists where each package comes from); "
                f"a package of the committed file is removed there, from {settings.requirements_file}",
            )
        log.info("removing %s from the runtime requirements", name)
        return sync(settings, RuntimeChange(_render(kept)))


def ensure(requirement: str, *, settings: Settings | None = None) -> dict[str, Any]:
    """Make ``requirement`` importable in this process now, and after restarts; return its manifest entry.

    Already served (the active generation holds a fitting version, asked for by
    the committed file or an earlier runtime addition): no sync, no process.
    Otherwise it is recorded in the runtime overlay and synced; on failure a
    ``BootstrapError`` is raised and the previous set keeps serving.
    """
    from bootstrap import live

    settings = settings if settings is not None else load_settings()
    wanted = parse_request(requirement)
    layout = Layout(settings.packages_dir)
    current = manifest.read(layout.manifest)
    entry = _served(current, wanted, settings, layout)
    if entry is None:
        current = add(settings, requirement).manifest
        entry = package_entry(current, wanted.name)
        if entry is None:  # published, yet absent: a bug, not the caller's mistake; say so plainly
            raise RequirementsError(
                f"cannot add {requirement!r}", None, "the new generation does not hold it; run `check` and report this"
            )
    live.switch(current)
    return entry


def package_entry(current: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    for package in (current or {}).get("packages", []):
        if canonicalize_name(str(package.get("name"))) == name:
            return dict(package)
    return None


def _served(
    current: dict[str, Any] | None, wanted: RequirementLine, settings: Settings, layout: Layout
) -> dict[str, Any] | None:
    """The active generation's entry for ``wanted`` if it already serves it, asked for (not a mere dependency)."""
    if current is None or current.get("status") != "ok" or wanted.requirement.url:
        return None
    stale = stale_reason(current, settings.requirements_file, settings.committed_lock_file, layout.runtime_requirements)
    entry = package_entry(current, wanted.name)
    if stale is not None or entry is None or not entry.get("source"):
        return None
    version = entry.get("version")
    if not isinstance(version, str) or not wanted.requirement.specifier.contains(version, prereleases=True):
        return None
    return entry


def _current_lines(layout: Layout) -> list[RequirementLine]:
    try:
        return read_overlay(layout.runtime_requirements, Policy(allow_direct_references=True))
    except RequirementsError as exc:  # a hand-edited overlay: say so rather than silently dropping lines
        raise RequirementsError(
            layout.runtime_requirements, exc.line, f"{exc.why}; fix the file or delete it to start again"
        ) from None


def _render(lines: list[RequirementLine]) -> str:
    return _HEADER + "".join(f"{line.requirement}\n" for line in sorted(lines, key=lambda line: line.name))


def _check_against_committed(settings: Settings, layout: Layout, text: str) -> None:
    """The overlay as it would be, merged with the committed file: raises on a conflict, naming both lines."""
    policy = policy_for(settings)
    try:
        desired = requirements.read(settings.requirements_file, policy)
    except RequirementsError:
        return  # the committed file's own problem: the sync reports it, in full
    merge(desired, parse_overlay(layout.runtime_requirements, text, policy))


@contextmanager
def _overlay_lock(layout: Layout, timeout: float) -> Iterator[None]:
    from filelock import FileLock, Timeout

    lock = FileLock(str(layout.runtime_lock))
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise LockTimeoutError(
            f"another process has been changing the runtime requirements in {layout.root} for over "
            f"{timeout:.0f}s; wait, or raise BOOTSTRAP_LOCK_TIMEOUT"
        ) from None
    try:
        yield
    finally:
        lock.release()
