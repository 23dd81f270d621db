"""Reading pip's, pip-compile's and uv's output: which index was asked, what the error was.

Credentials in index URLs (``https://user:secret@host``) never leave this
module in clear: everything it returns is redacted.
"""

from __future__ import annotations

import os
import re

from bootstrap.errors import redact
from bootstrap.inputs.requirements import Desired


def indexes(output: str) -> str:
    """Where pip looked, from its own output (``Using indexes:``, ``Looking in indexes:``), redacted."""
    lines = output.splitlines()
    found: list[str] = []
    for number, line in enumerate(lines):
        stripped = line.strip()
        if stripped == "Using indexes:":  # pip-compile --verbose
            for following in lines[number + 1 :]:
                if not following.startswith("  ") or not following.strip():
                    break
                found.append(following.strip())
        elif stripped.startswith("Looking in indexes:"):  # pip install
            found.extend(part.strip() for part in stripped.split(":", 1)[1].split(","))
    places = []
    if found:
        places.append("index " + ", ".join(dict.fromkeys(redact(url) for url in found)))
    find_links = os.environ.get("PIP_FIND_LINKS")
    if find_links:
        places.append(f"find-links {redact(find_links)}")
    if not places:
        return "the configured package index"
    return " and ".join(places) + (" (no package index)" if not found and os.environ.get("PIP_NO_INDEX") else "")


def last_error(output: str) -> str:
    """pip's own last ``ERROR:`` line, or else the last unindented line (a traceback's summary)."""
    for line in reversed(output.splitlines()):
        stripped = line.strip()
        if stripped.startswith("ERROR:"):
            return redact(stripped[len("ERROR:") :].strip())
    for line in reversed(output.splitlines()):
        if line.strip() and not line.startswith(" "):
            return redact(line.strip())
    return "unknown error"


def uv_error(output: str) -> str:
    """uv's ``error:`` line and the ``Caused by:`` chain under it, as one line, redacted."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for number, line in enumerate(lines):
        if not line.lower().startswith("error:"):
            continue
        parts = [line[len("error:") :].strip()]
        for following in lines[number + 1 :]:
            lowered = following.lower()
            if lowered.startswith("error:"):
                break
            if lowered.startswith(("caused by:", "cause:")):
                parts.append(following.split(":", 1)[1].strip())
            elif not lowered.startswith("hint:"):
                parts[-1] = f"{parts[-1]} {following}"
        return redact(": ".join(parts))
    return last_error(output)


def uv_places() -> str:
    """Where uv was told to look (the same words as for pip), redacted."""
    places = []
    index = os.environ.get("UV_INDEX_URL") or os.environ.get("PIP_INDEX_URL")
    if os.environ.get("PIP_NO_INDEX", "").lower() not in ("1", "true", "yes", "on"):
        places.append(f"index {redact(index or 'https://pypi.org/simple')}")
    links = os.environ.get("UV_FIND_LINKS") or os.environ.get("PIP_FIND_LINKS")
    if links:
        places.append(f"find-links {redact(links)}")
    return " and ".join(places) or "the configured package index"


# Pieces of the one-line messages both backends give for the same failures.


def asked_at(desired: Desired, name: str) -> str:
    """``requirements.txt:3: `` where the file asks for ``name``, or nothing (a dependency)."""
    return next((f"{line.path.name}:{line.line}: " for line in desired.requirements if line.name == name), "")


def host_pin(desired: Desired, name: str) -> str | None:
    return next((line for line in desired.host_constraints.splitlines() if line.startswith(f"{name}==")), None)


def host_lacks(desired: Desired, name: str, origin: str, where: str, versions: str) -> str:
    """The index does not offer the host's own version of a package the set needs."""
    return (
        f"{origin}the requirements need {name}, which the host has ({host_pin(desired, name)}), but {where} does "
        f"not offer that version{versions}; the index must carry the host's version, or an operator can let users "
        f"override it with BOOTSTRAP_HOST_OVERRIDES={name}"
    )


def not_found(origin: str, spec: str, where: str, *, wheels_only: bool) -> str:
    wheels = (
        "; only wheels are installed: if it publishes only a source archive, an operator can allow building "
        "it with BOOTSTRAP_ALLOW_SOURCE_BUILDS=true"
        if wheels_only
        else ""
    )
    return (
        f"{origin}{redact(spec)} was not found on {where} (no versions at all); check the name, and that this "
        "index is the right one, is reachable and (a private index answers a wrong password with no versions) "
        f"accepts its credentials{wheels}"
    )


def newest(versions: str, keep: int = 5, *, newest_first: bool = False) -> str:
    """A list of versions cut to the newest few (a popular package has hundreds): pip-compile's ``from
    versions:`` lists the oldest first, ``pip index versions`` the newest."""
    listed = [version.strip() for version in versions.split(",") if version.strip()]
    if len(listed) <= keep:
        return ", ".join(listed)
    kept = listed[:keep] if newest_first else listed[-keep:]
    return f"{', '.join(kept)} and {len(listed) - keep} older"


def needs_python(origin: str, name: str, needed: str, running: str) -> str:
    """The versions of ``name`` the requirements allow are not for this interpreter."""
    return (
        f"{origin}the versions of {name} the requirements allow need Python {needed}, and this interpreter is "
        f"{running}: allow a version of {name} that supports Python {running}"
    )


def source_only(origin: str, name: str, where: str, versions: str) -> str:
    return (
        f"{origin}{name} is published only as source archives on {where} (versions {versions}; no wheel for this "
        "interpreter), and only wheels are installed: an operator can allow building it (which runs its build "
        "code) with BOOTSTRAP_ALLOW_SOURCE_BUILDS=true"
    )


def no_wheel(origin: str, spec: str, where: str, with_wheels: str) -> str:
    return (
        f"{origin}{spec} has no wheel for this interpreter on {where} (a source archive only, or wheels for other "
        f"Pythons or platforms), and only wheels are installed: pin a version that has one ({with_wheels}), or an "
        "operator can allow building it (which runs its build code) with BOOTSTRAP_ALLOW_SOURCE_BUILDS=true"
    )


def index_failed(origin: str, name: str, where: str, status: str) -> str:
    return (
        f"{origin}{where} answered HTTP {status} when asked for {name}: an error on the index's side, not a missing "
        "package; try again, or tell whoever runs the index"
    )


def host_conflict(desired: Desired, conflict: str) -> str | None:
    """A resolver conflict one side of which is the host's own version (its constraint, not a user's line).

    Named at the line that asks for the package needing another version, where the file does.
    """
    for pin in desired.host_constraints.splitlines():
        name, _, version = pin.partition("==")
        host_pin = rf"(?<![\w.-]){re.escape(name)}==" + re.escape(version) + r"(?![\w.])"
        if not version or not re.search(host_pin, conflict, re.I):
            continue
        told = conflict.replace("The user requested (constraint) ", "the host has ")  # pip's words for it
        needing = re.search(r"(?:^|; |Because (?:all versions of )?)([A-Za-z0-9._-]+)\S* (?:\S+ )?depends? on", told)
        origin = asked_at(desired, _canonical(needing.group(1))) if needing else ""
        return (
            f"{origin}the requirements need a version of {name} other than the host's {version} ({redact(told)}): "
            f"the host's packages come first; require versions that work with {name} {version}, or an operator "
            f"can let users override it with BOOTSTRAP_HOST_OVERRIDES={name}"
        )
    return None


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


_PIP_HASH_MISMATCH = re.compile(
    r"DO NOT MATCH THE HASHES[^\n]*\n(?:[^\n]*\n)*?[ \t]+([^\s:]+)(?: from (\S+))?[^\n]*:[ \t]*\n\s+Expected"
)
_UV_HASH_MISMATCH = re.compile(r"[Hh]ash mismatch for `([^`]+)`")


def hash_mismatch(output: str, desired: Desired | None = None) -> str | None:
    """A file the index served does not have the hash the lock pins (pip's or uv's report), as one line."""
    found = _PIP_HASH_MISMATCH.search(output) or _UV_HASH_MISMATCH.search(output)
    if found is None:
        return None
    pinned = found.group(1)
    name = _canonical(re.split(r"[=<>!~@ ]", pinned, maxsplit=1)[0])
    origin = asked_at(desired, name) if desired is not None else ""
    served = (
        f" ({redact(os.path.basename(found.group(2)))})"
        if found.lastindex and found.lastindex >= 2 and found.group(2)
        else ""
    )
    return (
        f"{origin}the file served for {redact(pinned)}{served} does not have the hash its pin gives: if the pin was "
        "updated, write the hashes again with `python -m bootstrap lock --hashes`; otherwise someone may have "
        "tampered with it, and it is not installed"
    )
