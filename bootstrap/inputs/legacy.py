"""The old habit: ``pip install --target <packages_dir>`` content, adopted as runtime additions.

A packages folder used the old way holds distributions at its top level (a
``*.dist-info`` beside ``manifest.json``, ``generations/``). A sync adopts each
such distribution once: it becomes a line ``name==version`` of the runtime
overlay, so the next generation serves it, and ``adopted.json`` in the state
folder records that it was seen, so that after ``bootstrap remove X`` X is not
adopted again. The legacy files themselves are only read, never changed or removed.

The overlay also moves here: bootstrap before the state folder kept it in the
packages folder (ephemeral in some deployments). The first sync copies it into
the state folder and leaves the old file where it is: an older bootstrap on
another instance sharing the packages folder still reads it there, and this
version never reads it again once the state folder has its own.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from importlib.metadata import PathDistribution
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from bootstrap.errors import RequirementsError, SettingsError
from bootstrap.inputs import overlay, requirements
from bootstrap.inputs.desired import policy_for
from bootstrap.inputs.requirements import Policy, RequirementLine
from bootstrap.settings import Settings
from bootstrap.store import manifest, safety
from bootstrap.store.fs import atomic_write_text, read_limited
from bootstrap.store.layout import Layout

log = logging.getLogger("bootstrap")

_MAX_RECORD_BYTES = 1 << 20
# What adopted.json says of each distribution (``name==version``): what became of it.
ADOPTED = "adopted"  # a line of the overlay now
UNAVAILABLE = "unavailable"  # the index does not have it (a local build): a warning, once
COMMITTED = "committed"  # the committed file names it: that decides its version
ALREADY_ADDED = "already added"  # the overlay names it already: that line stays


@dataclasses.dataclass(frozen=True)
class LegacyDist:
    name: str  # canonical
    version: str
    folder: str  # its *.dist-info, for messages

    @property
    def key(self) -> str:
        return f"{self.name}=={self.version}"


def prepare_state_dir(settings: Settings) -> None:
    """Create the state folder if need be (never world-writable), and make sure it can be written."""
    folder = settings.layout.state
    try:
        safety.make_private_dir(folder)
    except OSError as exc:
        raise SettingsError(
            f"cannot create the state folder {folder} ({exc.strerror}); set BOOTSTRAP_STATE_DIR to a writable folder"
        ) from None
    mode = folder.stat().st_mode
    if os.name == "posix" and mode & 0o002 and not settings.allow_world_writable:
        raise SettingsError(
            f"the state folder {folder} is world-writable (mode {mode & 0o7777:o}): any local user could add "
            f"packages to what is installed; run `chmod o-w {folder}`, or set BOOTSTRAP_STATE_DIR"
        )
    if not os.access(folder, os.W_OK):
        raise SettingsError(f"the state folder {folder} is not writable; set BOOTSTRAP_STATE_DIR")


def needs_migration(layout: Layout) -> bool:
    """An older bootstrap's overlay is in the packages folder, and the state folder has none yet."""
    return layout.legacy_runtime_requirements.is_file() and not layout.runtime_requirements.exists()


def migrate(layout: Layout) -> None:
    """Copy the overlay an older bootstrap kept in the packages folder into the state folder (once)."""
    if not needs_migration(layout):
        return
    text = read_limited(layout.legacy_runtime_requirements, 1 << 20).decode("utf-8", errors="replace")
    atomic_write_text(layout.runtime_requirements, text)
    log.info(
        "moved the runtime additions from %s to %s (the old file stays for older bootstrap versions; "
        "delete it once none runs)",
        layout.legacy_runtime_requirements,
        layout.runtime_requirements,
    )


def scan(layout: Layout) -> list[LegacyDist]:
    """The distributions at the packages folder's top level (``pip install --target`` left them), by name."""
    found = []
    try:
        entries = sorted(os.scandir(layout.root), key=lambda entry: entry.name)
    except OSError:  # not there, not a folder, not readable: the sync's own checks say so, in full
        return []
    for entry in entries:
        if not entry.name.endswith(".dist-info") or not entry.is_dir(follow_symlinks=False):
            continue
        dist = PathDistribution(Path(entry.path))
        name = dist.metadata["Name"] if dist.metadata else None
        version = dist.version if name else None
        if name and version and _valid(version):
            found.append(LegacyDist(canonicalize_name(name), version, entry.name))
        else:
            log.warning("%s has no readable name and version: not adopted", Path(entry.path))
    return found


def read_record(layout: Layout) -> dict[str, dict[str, str]]:
    """``adopted.json``: ``name==version`` -> what became of it; empty if absent or unreadable."""
    try:
        data = json.loads(read_limited(layout.adopted, _MAX_RECORD_BYTES))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    except (OSError, ValueError) as exc:
        log.warning("%s cannot be read (%s): legacy distributions may be adopted again", layout.adopted, exc)
        return {}
    found = data.get("distributions") if isinstance(data, dict) else None
    return {str(k): dict(v) for k, v in found.items() if isinstance(v, dict)} if isinstance(found, dict) else {}


def pending(layout: Layout) -> list[LegacyDist]:
    """The legacy distributions not adopted yet (nor found unavailable, nor left to the committed file)."""
    found = scan(layout)
    record = read_record(layout) if found else {}
    return [dist for dist in found if dist.key not in record]


@dataclasses.dataclass
class Adoption:
    """The legacy distributions of one sync: the pins to add, and what became of the others."""

    pins: list[LegacyDist]
    outcomes: dict[str, tuple[LegacyDist, str]]  # key -> (dist, outcome) for those not (or no longer) pinned
    current: list[RequirementLine]  # the overlay as it is on disk

    def overlay_text(self) -> str:
        lines = [*self.current, *(_pin_line(dist) for dist in self.pins)]
        return overlay.render(lines)

    def named_in(self, message: str) -> list[LegacyDist]:
        """The pins a failure's message names (whatever spelling of their names it uses)."""
        return [dist for dist in self.pins if _names(message, dist.name)]

    def drop(self, dists: list[LegacyDist], outcome: str) -> None:
        for dist in dists:
            self.pins.remove(dist)
            self.outcomes[dist.key] = (dist, outcome)


def plan_adoption(settings: Settings, found: list[LegacyDist]) -> Adoption:
    """What to do with ``found``: pin each, unless the committed file or the overlay already names it."""
    layout = settings.layout
    current = overlay.read_overlay(layout.runtime_requirements, Policy(allow_direct_references=True))
    in_overlay = {line.name for line in current}
    try:
        committed = {
            line.name for line in requirements.read(settings.requirements_file, policy_for(settings)).requirements
        }
    except RequirementsError:
        committed = set()  # the sync reports the committed file's own problem, in full
    adoption = Adoption(pins=[], outcomes={}, current=current)
    for dist in found:
        if dist.name in committed:
            adoption.outcomes[dist.key] = (dist, COMMITTED)
        elif dist.name in in_overlay:
            adoption.outcomes[dist.key] = (dist, ALREADY_ADDED)
        elif dist.name not in {pin.name for pin in adoption.pins}:
            adoption.pins.append(dist)
    return adoption


def record(layout: Layout, adoption: Adoption, *, adopted: bool) -> None:
    """Add what became of this sync's legacy distributions to ``adopted.json`` (atomically); the pins only if
    ``adopted`` (published in the overlay), else the next sync tries them again."""
    entries = read_record(layout)
    at = manifest.now_iso()
    for dist in adoption.pins if adopted else []:
        entries[dist.key] = {"name": dist.name, "version": dist.version, "outcome": ADOPTED, "at": at}
    for key, (dist, outcome) in adoption.outcomes.items():
        entries[key] = {"name": dist.name, "version": dist.version, "outcome": outcome, "at": at}
    atomic_write_text(layout.adopted, json.dumps({"distributions": entries}, indent=2, sort_keys=True) + "\n")


def adopted_names(layout: Layout) -> dict[str, str]:
    """Canonical name -> outcome, for ``status``."""
    return {str(entry.get("name")): str(entry.get("outcome")) for entry in read_record(layout).values()}


def _valid(version: str) -> bool:
    try:
        Version(version)
    except InvalidVersion:
        return False
    return True


def _pin_line(dist: LegacyDist) -> RequirementLine:
    return RequirementLine(Path("<legacy>"), 0, Requirement(dist.key), runtime=True)


def _names(message: str, name: str) -> bool:
    spelled = "[-_.]".join(re.escape(part) for part in re.split(r"[-_.]+", name))
    return (
        re.search(rf"(?<![A-Za-z0-9._-]){spelled}(?![A-Za-z0-9_-]|\.[A-Za-z0-9])", message, re.IGNORECASE) is not None
    )
