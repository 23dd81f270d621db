"""The host comes first: what the host interpreter already has constrains every resolution.

Read from the host's own metadata (``importlib.metadata`` over its ``sys.path``,
bootstrap's generations left out). Each host distribution becomes a constraint
for pip-compile, so a requirement the host satisfies resolves to the host's
version and is not installed again; a user pin that contradicts the host is
refused before anything is resolved, unless the operator lets users override
that package (``BOOTSTRAP_HOST_OVERRIDES``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from packaging.utils import canonicalize_name

from bootstrap.errors import RequirementsError, ResolutionError
from bootstrap.inputs.requirements import Desired
from bootstrap.store.fs import resolves_inside


def host_distributions(packages_dir: Path) -> dict[str, str]:
    """{canonical name: version} of what the running interpreter can import, first on sys.path wins."""
    from importlib.metadata import distributions

    paths = [entry for entry in sys.path if entry and not resolves_inside(entry, packages_dir)]
    found: dict[str, str] = {}
    for dist in distributions(path=paths):
        name = dist.metadata["Name"] if dist.metadata else None
        if name:
            found.setdefault(canonicalize_name(name), dist.version)
    return found


def constraints_text(host: dict[str, str], overrides: frozenset[str]) -> str:
    """The host's packages as pip constraints (``name==version``), but the ones users may override."""
    allowed = {canonicalize_name(name) for name in overrides}
    return "".join(f"{name}=={version}\n" for name, version in sorted(host.items()) if name not in allowed)


def check_requirements(desired: Desired, host: dict[str, str], overrides: frozenset[str]) -> None:
    """Refuse, before anything is resolved, requirements that contradict the host's own versions.

    All of them in one line (the first names its line, the others are counted and named in the
    setting): a pip-compile output pinning five host packages is not five round trips.
    """
    allowed = {canonicalize_name(name) for name in overrides}
    contradicting = []
    for line in desired.requirements:
        requirement = line.requirement
        version = host.get(line.name)
        if version is None or line.name in allowed:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        if requirement.url or not requirement.specifier.contains(version, prereleases=True):
            contradicting.append((line, version))
    if not contradicting:
        return
    (first, version), rest = contradicting[0], contradicting[1:]
    more = (
        " (and " + ", ".join(f"{line.path.name}:{line.line}: {line.requirement}" for line, _ in rest) + " too)"
        if rest
        else ""
    )
    names = ",".join(dict.fromkeys(line.name for line, _ in contradicting))
    raise RequirementsError(
        first.path,
        first.line,
        f"{first.requirement} contradicts the host's {first.requirement.name} {version}{more}: the host's packages "
        f"come first; require a version the host satisfies, or an operator can let users override it with "
        f"BOOTSTRAP_HOST_OVERRIDES={names}",
    )


def check_pins(
    pins: list[tuple[str, str | None]], host: dict[str, str], overrides: frozenset[str], origin: str
) -> None:
    """A lock (committed, say) must not pin a host package to another version either."""
    allowed = {canonicalize_name(name) for name in overrides}
    for name, version in pins:
        host_version = host.get(name)
        if host_version is None or name in allowed or version == host_version:
            continue
        raise ResolutionError(
            f"{origin} pins {name} {version or '(a URL)'}, but the host has {name} {host_version} and the host's "
            f"packages come first; write the lock again on this host, or allow BOOTSTRAP_HOST_OVERRIDES={name}"
        )
