"""Organisations' sets: the workspace's set, and each organisation's own file on top of it.

The repo's requirements file is the workspace set, which every organisation has.
An organisation adds ``<orgs>/<org-id>/requirements.txt`` (``BOOTSTRAP_ORGS_DIR``,
default ``orgs`` beside the requirements file). Its set is the workspace's active
pins plus its own lines, resolved together: it may add packages and pin what the
workspace leaves out, never move a workspace pin (a line that contradicts one is
refused, naming both). Built on the workspace's *published* pins, not its file, so
an organisation never depends on a workspace edit that has not been built.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement

from bootstrap.errors import RequirementsError
from bootstrap.inputs import requirements
from bootstrap.inputs.requirements import Desired, Policy, RequirementLine
from bootstrap.settings import Settings
from bootstrap.store import freshness, manifest
from bootstrap.store.fs import file_sha256
from bootstrap.store.layout import LOCK_FILE
from bootstrap.store.paths import ORG_ID_RULE, valid_org_id

log = logging.getLogger("bootstrap")

ORG_FILE = "requirements.txt"  # in each organisation's folder


@dataclass(frozen=True)
class Found:
    """The organisations the repo has (sorted), and the folders refused as such (``(name, why)``)."""

    orgs: tuple[str, ...]
    refused: tuple[tuple[str, str], ...] = ()


def discover(settings: Settings) -> Found:
    """The folders of ``settings.orgs_folder`` that hold a ``requirements.txt``: one organisation each.

    A folder whose name is no org id is refused (by name, with the rule), not skipped silently: its
    organisation would otherwise simply get nothing. Folders without the file, and files, are not orgs.
    """
    folder = settings.orgs_folder
    try:
        names = sorted(os.listdir(folder))
    except FileNotFoundError:
        return Found(())
    except NotADirectoryError:
        return Found((), ((str(folder), "is not a folder: BOOTSTRAP_ORGS_DIR names the organisations' folder"),))
    orgs, refused = [], []
    for name in names:
        if not os.path.isfile(os.path.join(folder, name, ORG_FILE)):
            continue
        if valid_org_id(name):
            orgs.append(name)
        else:
            refused.append((name, f"{folder / name}: not an organisation: {ORG_ID_RULE}; rename the folder"))
    return Found(tuple(orgs), tuple(refused))


def layered(settings: Settings, policy: Policy) -> Desired:
    """An organisation's set: the workspace's active pins (requirement lines marked ``workspace``) and its own
    file's lines; a line that contradicts a workspace pin is a ``RequirementsError`` naming both."""
    assert settings.workspace is not None and settings.org is not None
    own = requirements.read(settings.requirements_file, policy)
    if not own.exists:
        raise RequirementsError(
            settings.requirements_file,
            None,
            f"does not exist, so there is no organisation {settings.org!r}: give it a folder with a requirements.txt "
            f"in {settings.orgs_folder}",
        )
    pins, asked = workspace_pins(settings.workspace)
    named = _workspace_lines(settings.workspace, policy)
    by_name = {pin.name: pin for pin in pins}
    for line in [*own.requirements, *own.constraints]:
        pin = by_name.get(line.name)
        if pin is not None and requirements.conflicting(pin, line):
            where = named.get(line.name)
            said = f"{where.path}:{where.line}: {where.requirement}" if where else f"{pin.path}: {pin.requirement}"
            raise RequirementsError(
                line.path,
                line.line,
                f"{line.requirement} conflicts with the workspace's {pin.requirement} ({said}); every organisation "
                "has the workspace's pins: drop or widen the line, or change the workspace's file",
            )
    added = [line for line in own.requirements if line.name not in by_name or line.requirement.extras]
    narrowing = [line for line in own.requirements if line.name in by_name and not line.requirement.extras]
    # The workspace pins read, as they were read: a workspace set published since makes this set stale.
    built_on = str(pins[0].path) if pins else freshness.workspace_lock(str(settings.workspace.packages_dir))
    inputs = {**own.inputs, built_on: file_sha256(built_on)}
    return dataclasses.replace(
        own,
        inputs=inputs,
        requirements=[*pins, *added],
        constraints=[*own.constraints, *narrowing],
        workspace_requested=asked,
    )


def workspace_pins(workspace: Settings) -> tuple[list[RequirementLine], frozenset[str]]:
    """The workspace's active set as requirement lines (``name==version``, marked ``workspace``), and the names
    its files ask for. A ``RequirementsError`` when it has none yet: organisations are built on top of it."""
    current = manifest.read(workspace.layout.manifest)
    generation = current.get("generation") if current is not None else None
    if current is None or not generation:
        raise RequirementsError(
            workspace.layout.manifest,
            None,
            "names no published workspace set yet: organisations are built on top of it; run "
            "`python -m bootstrap sync` (the workspace first) and see `status`",
        )
    lock = workspace.layout.generation(str(generation)) / LOCK_FILE
    entries = sorted(current.get("packages", []), key=lambda entry: str(entry["name"]).lower())
    lines = [
        RequirementLine(lock, number, Requirement(f"{entry['name']}=={entry['version']}"), workspace=True)
        for number, entry in enumerate(entries, 1)
    ]
    asked = frozenset(line.name for line, entry in zip(lines, entries, strict=True) if entry.get("requested"))
    return lines, asked


def _workspace_lines(workspace: Settings, policy: Policy) -> dict[str, RequirementLine]:
    """The workspace file's own lines by name, to name in a conflict (nothing if it cannot be read now: the
    workspace's sync reports that)."""
    try:
        desired = requirements.read(workspace.requirements_file, policy)
    except RequirementsError:
        return {}
    return {line.name: line for line in desired.requirements}


def org_of(path: Path, settings: Settings) -> str | None:
    """The organisation whose folder ``path`` is in, if any (for the watcher)."""
    try:
        relative = Path(os.path.abspath(path)).relative_to(settings.orgs_folder)
    except ValueError:
        return None
    name = relative.parts[0] if relative.parts else None
    return name if name is not None and valid_org_id(name) else None
