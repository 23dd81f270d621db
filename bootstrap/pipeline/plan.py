"""The plan of a sync, and the manifest's package entries: pure functions of what was read and resolved.

No I/O here (pip-tools' ``sync.diff()`` is pure and ``sync.sync()`` does the
work; the same split): given the lock, the host's packages and what the active
generation holds, ``plan`` says what the host provides, what to install, which
host packages the generation overrides, and whether the active generation
already serves the lock. Unit-tested without pip.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from bootstrap.inputs.requirements import Desired
from bootstrap.pipeline.lockfile import Lock
from bootstrap.store import manifest
from bootstrap.store.records import Distribution

TYPE_CHECKING = False
if TYPE_CHECKING:  # the manifest's types exist for the type checker only
    from bootstrap.store.manifest import Inputs, PackageEntry, Provenance


@dataclass(frozen=True)
class Active:
    """What matters of the active generation: its site folder (None when this interpreter cannot use it),
    the hash of its pins, and whether it still holds what was verified (``records.intact``)."""

    site: Path | None
    lock_sha256: str | None
    intact: bool


@dataclass(frozen=True)
class Plan:
    lock: Lock  # every pin resolved
    provided: dict[str, str]  # pins the host already has at that very version: not installed
    to_install: Lock  # the lock less what the host provides
    # Host packages the generation holds in its own copy: those users may override (operator's choice) and
    # bootstrap's own tools (a user's click); the generation then goes first on sys.path.
    overrides: list[str]
    keep_active: bool  # the active generation holds exactly these pins: nothing to build


def plan(
    lock: Lock,
    host: dict[str, str],
    host_overrides: Iterable[str],
    active: Active | None,
    tools: Mapping[str, str] | None = None,
) -> Plan:
    """``host``: what the host has, {name: version}; ``tools``: those of them that are bootstrap's own
    (``inputs.host.scan``). A pin at the host's very version is provided by the host, not installed."""
    overridable = {canonicalize_name(name) for name in host_overrides}
    provided = {
        pin.name: pin.version
        for pin in lock.pins
        if pin.version is not None and host.get(pin.name) == pin.version and pin.name not in overridable
    }
    to_install = lock.without(set(provided))
    overrides = sorted(
        pin.name
        for pin in to_install.pins
        if pin.name in host and (pin.name in overridable or pin.name in (tools or {}))
    )
    keep = active is not None and active.site is not None and active.intact and active.lock_sha256 == lock.sha256
    return Plan(lock, provided, to_install, overrides, keep)


def provenance(requirements_file: str, lock: Lock, inputs: Inputs, relative_inputs: Inputs) -> Provenance:
    """The manifest's account of what a generation was built from (``relative_inputs``: ``inputs`` as every
    instance reads them, ``store.freshness.relative_inputs``)."""
    return {
        "requirements_file": requirements_file,
        "requirements_sha256": inputs.get(requirements_file),
        "lock_file": str(lock.committed_file) if lock.committed_file else None,
        "lock_sha256": lock.sha256,
        "lock_source": lock.source,
        "inputs": inputs,
        "relative_inputs": relative_inputs,
    }


def package_entries(dists: Iterable[Distribution], provided: dict[str, str], desired: Desired) -> list[PackageEntry]:
    """One entry per distribution of the generation and per host package the set relies on, by name."""
    entries = [
        manifest.package_entry(
            dist.display_name,
            dist.version,
            requested=dist.name in desired.requested,
            provided_by="generation",
            source=desired.source(dist.name),
        )
        for dist in dists
    ]
    entries += [
        manifest.package_entry(
            name, version, requested=name in desired.requested, provided_by="host", source=desired.source(name)
        )
        for name, version in provided.items()
    ]
    return sorted(entries, key=lambda entry: canonicalize_name(entry["name"]))


def refreshed_entries(packages: Iterable[PackageEntry], desired: Desired) -> list[PackageEntry]:
    """The same pins, but what the file (or the overlay) names may have changed."""
    return [
        {
            **package,
            "requested": canonicalize_name(package["name"]) in desired.requested,
            "source": desired.source(canonicalize_name(package["name"])),  # type: ignore[typeddict-item]
        }
        for package in packages
    ]
