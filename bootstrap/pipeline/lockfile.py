"""Locks: exact pins, the text pip installs them from, and the committed lock's own header.

A lock is what pip-compile writes (``name==version``, optional ``--hash``
lines). A committed lock carries bootstrap's header, the hash of the input it
was written from, so a sync can tell whether it still matches the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from bootstrap.errors import ResolutionError, redact
from bootstrap.inputs.requirements import HASH_VALUE, Desired, decode, logical_lines
from bootstrap.store.fs import MAX_LOCK_BYTES, read_limited, resolves_inside, text_sha256

_HEADER_KEY = "# bootstrap: input-sha256="

#: Where a lock came from: the committed file, the resolution cache, a fresh resolution, or nothing to resolve.
LOCK_SOURCES = ("committed", "cache", "resolved", "empty", "remote-cache")

TYPE_CHECKING = False
if TYPE_CHECKING:
    from bootstrap.store.manifest import LockSource


@dataclass(frozen=True)
class Pin:
    name: str
    version: str | None  # None for a direct reference (``name @ URL``), pinned by its URL
    hashes: tuple[str, ...] = ()
    url: str | None = None
    arbitrary: bool = False  # pinned with ``===`` (the version compared as a string), kept so for pip

    def spec(self) -> str:
        """The pin as a requirement, without its hashes: ``name==1.0``, ``name===1.0``, ``name @ URL``."""
        if self.url:
            return f"{self.name} @ {self.url}"
        return f"{self.name}{'===' if self.arbitrary else '=='}{self.version}"

    def line(self) -> str:
        """The pin as a lock line, for pip: its spec and every hash."""
        return " ".join([self.spec(), *(f"--hash={h}" for h in self.hashes)])


@dataclass(frozen=True)
class Lock:
    """Exact pins, the text pip installs them from, and where they came from."""

    pins: tuple[Pin, ...]
    text: str
    source: LockSource  # one of LOCK_SOURCES
    committed_file: Path | None = None

    @property
    def pins_text(self) -> str:
        """The pins alone, one per line: what pip installs, whatever else the lock file said."""
        return "".join(pin.line() + "\n" for pin in sorted(self.pins, key=lambda p: p.name))

    @property
    def sha256(self) -> str:
        """Identifies the pins themselves: the same set has the same hash whatever its comments."""
        return text_sha256(self.pins_text)

    def without(self, names: frozenset[str] | set[str]) -> Lock:
        """The same lock less the pins of ``names`` (what the host already provides, say)."""
        return Lock(
            tuple(pin for pin in self.pins if pin.name not in names), self.text, self.source, self.committed_file
        )


def parse_lock(text: str, origin: str, urls_allowed_for: frozenset[str] = frozenset()) -> tuple[Pin, ...]:
    """Pins from a lock written by pip-compile (``name==version``, optional ``--hash`` lines).

    ``name @ URL`` is accepted only for the names the (policy-checked) requirements file
    itself gives as direct references: a lock can never bring in a URL of its own.
    A name pinned twice (for this interpreter) is refused, unless both lines say exactly the same.
    """
    pins: dict[str, tuple[int, Pin]] = {}  # name -> (its line, its pin)
    for number, line in logical_lines(text):
        if line.startswith("-"):
            raise ResolutionError(
                f"{origin}:{number}: options are not allowed in a lock ({line.split()[0]}): where packages come "
                "from is pip's configuration; write the lock again with `python -m bootstrap lock`"
            )
        spec, *options = line.split(" --hash")
        hashes = tuple(option.lstrip("=").strip() for option in options)
        for value in hashes:  # written back for pip: a "hash" with a space in it would be another option
            if not HASH_VALUE.match(value):
                raise ResolutionError(f"{origin}:{number}: {redact(value)!r} is not a hash (algorithm:hexdigest)")
        try:
            requirement = Requirement(spec.strip())
        except InvalidRequirement as exc:
            raise ResolutionError(f"{origin}:{number}: not a valid pin ({exc}); regenerate the lock") from None
        if requirement.url:
            name = canonicalize_name(requirement.name)
            if name not in urls_allowed_for:
                raise ResolutionError(
                    f"{origin}:{number}: {name} is pinned to a URL that the requirements file does not name; "
                    "write the lock again with `python -m bootstrap lock`"
                )
            _add(pins, Pin(name, None, hashes, requirement.url), origin, number)
            continue
        specifiers = list(requirement.specifier)
        exact = len(specifiers) == 1 and (
            specifiers[0].operator == "===" or (specifiers[0].operator == "==" and "*" not in specifiers[0].version)
        )
        if not exact:
            raise ResolutionError(f"{origin}:{number}: {spec.strip()} is not an exact pin (name==version)")
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        arbitrary = specifiers[0].operator == "==="
        pin = Pin(canonicalize_name(requirement.name), specifiers[0].version, hashes, arbitrary=arbitrary)
        _add(pins, pin, origin, number)
    return tuple(pin for _, pin in pins.values())


def _add(pins: dict[str, tuple[int, Pin]], pin: Pin, origin: str, number: int) -> None:
    """Add ``pin`` (from line ``number``); a second pin of its name must be the same pin, said again.

    Two different pins of one name (a merge that kept both sides, say) leave pip to report
    ``ResolutionImpossible`` with no line; the same pin twice installs the same, so it is one pin.
    """
    if pin.name not in pins:
        pins[pin.name] = (number, pin)
        return
    first, earlier = pins[pin.name]
    if earlier == pin:
        return
    if earlier.spec() == pin.spec():
        what = f"twice with other hashes (lines {first} and {number}: {redact(pin.spec())})"
    else:
        what = f"twice (line {first}: {redact(earlier.spec())}; line {number}: {redact(pin.spec())})"
    raise ResolutionError(
        f"{origin}:{number}: pins {pin.name} {what}; keep the right one, or write the lock again with "
        "`python -m bootstrap lock`"
    )


def lock_header(desired: Desired) -> str:
    name = desired.requirements_file.name
    return (
        f"# Written by `python -m bootstrap lock` from {name}: commit it beside {name}.\n"
        f"# `sync` installs exactly these pins while {name} is unchanged; run `lock` again after editing it.\n"
        f"{_HEADER_KEY}{desired.committed_sha256}\n"
    )


def header_sha(text: str) -> str | None:
    """The input hash a committed lock's header records, or None if bootstrap did not write it."""
    for line in text.splitlines()[:10]:
        if line.startswith(_HEADER_KEY):
            return line[len(_HEADER_KEY) :].strip()
    return None


def read_committed(path: Path) -> str:
    """A committed lock's text; a link out of its folder or a file that is not UTF-8 is refused."""
    if not resolves_inside(path, path.parent):
        raise ResolutionError(
            f"{path} is a link to {os.path.realpath(path)}, outside its folder; commit the lock itself"
        )
    try:
        raw = read_limited(path, MAX_LOCK_BYTES)  # a FIFO or /dev/zero is refused, never waited on
    except ValueError as exc:
        raise ResolutionError(f"{path} {exc}") from None
    except OSError as exc:  # a dangling link, no permission
        raise ResolutionError(f"{path} cannot be read ({exc.strerror}); commit the lock itself") from None
    try:
        return decode(raw)  # as pip reads it: a BOM (UTF-8, -16, -32) or a coding comment
    except ValueError as exc:
        raise ResolutionError(f"{path} {exc}; write it again with `python -m bootstrap lock`") from None
