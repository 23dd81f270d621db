"""The runtime overlay: packages added at run time, read and merged beside the committed file.

``runtime-requirements.txt`` in the state folder holds what workflows added
(``bootstrap.ensure``, ``python -m bootstrap add``). It is read under the same
policy as the committed file; a line that conflicts with the committed file is
an error naming both lines. A runtime *request* is stricter still: one
requirement by name, never a URL or a path, whatever the committed file may
say (it can come from a workflow's input, an HTTP body).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bootstrap.errors import RequirementsError
from bootstrap.inputs import requirements
from bootstrap.inputs.requirements import Desired, Policy, RequirementLine
from bootstrap.store.fs import MAX_REQUIREMENTS_BYTES, read_limited

_HEADER = (
    "# Packages added at run time (bootstrap.ensure() or `python -m bootstrap add`), kept across restarts\n"
    "# and syncs. Written by bootstrap: remove one with `python -m bootstrap remove NAME`, or move it into\n"
    "# the committed requirements file.\n"
)


def read_overlay(path: Path, policy: Policy) -> list[RequirementLine]:
    """The overlay's requirements (marked ``runtime``), validated like the committed file's; none if absent."""
    try:
        text = read_limited(path, MAX_REQUIREMENTS_BYTES).decode("utf-8")
    except FileNotFoundError:
        return []
    except UnicodeDecodeError:
        raise RequirementsError(path, None, "is not UTF-8 text; remove it to drop the runtime additions") from None
    except ValueError as exc:  # a FIFO, a device, a file too large: never waited on, never read whole
        raise RequirementsError(path, None, f"{exc}; remove it to drop the runtime additions") from None
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


def render(lines: list[RequirementLine]) -> str:
    """The overlay's text for these lines, one per package, sorted."""
    return _HEADER + "".join(f"{line.requirement}\n" for line in sorted(lines, key=lambda line: line.name))


def merged(
    desired: Desired, overlay: list[RequirementLine], inputs: dict[str, str | None], org: str | None = None
) -> Desired:
    """What the committed file asks for plus the overlay; a conflict is an error naming both lines.

    A package the committed file names too is narrowed by a constraint (one requirement line per
    package for pip), unless the runtime line adds extras. ``inputs``: the overlay file and its hash;
    ``org``: the organisation whose overlay it is (the command the message gives names it).
    """
    committed: dict[str, list[RequirementLine]] = {}
    for line in desired.requirements:
        committed.setdefault(line.name, []).append(line)
    added, narrowing = [], []
    for extra in overlay:
        for line in committed.get(extra.name, []):
            if requirements.conflicting(line, extra):
                remove = f"python -m bootstrap remove{f' --org {org}' if org else ''} {extra.requirement.name}"
                # An organisation's set: a workspace pin's line is a generation's lock, nothing to edit.
                other = (
                    f"the workspace's {line.requirement}"
                    if line.workspace
                    else f"{line.path}:{line.line}: {line.requirement}"
                )
                change = "the workspace's requirements file" if line.workspace else line.path.name
                raise RequirementsError(
                    extra.path,
                    extra.line,
                    f"{extra.requirement} (added at run time) conflicts with {other}; remove it with `{remove}` "
                    f"or change {change}",
                )
        if extra.name not in committed or extra.requirement.extras:
            added.append(extra)
        elif extra.requirement.specifier:
            narrowing.append(extra)
    return dataclasses.replace(
        desired,
        requirements=[*desired.requirements, *added],
        constraints=[*desired.constraints, *narrowing],
        inputs={**desired.inputs, **inputs},
    )


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
    # workflow's input (an HTTP body), and BOOTSTRAP_ALLOW_DIRECT_REFERENCES is about the reviewed file
    # (so the message never suggests it).
    if requirements.is_direct_reference(text.strip()):
        raise RequirementsError(
            label,
            None,
            "direct references (a URL, an archive, a path) are never added at run time, whatever the committed "
            "file may use: add the package by name, e.g. `tabulate` or `tabulate==0.9.0`, from the operator's "
            "index, or commit `name @ URL` in the requirements file",
        )
    try:
        parsed = requirements.parse_requirement(Path("<request>"), 0, text.strip(), Policy())
    except RequirementsError as exc:
        raise RequirementsError(label, None, exc.why) from None
    if parsed.hashes:
        raise RequirementsError(label, None, "--hash is for committed locks, not for a runtime addition")
    return dataclasses.replace(parsed, runtime=True)
