"""The host comes first: what the host interpreter already has constrains every resolution.

Read from the host's own metadata (``importlib.metadata`` over its ``sys.path``,
bootstrap's generations left out). Each host distribution becomes a constraint
for pip-compile, so a requirement the host satisfies resolves to the host's
version and is not installed again; a user pin that contradicts the host is
refused before anything is resolved, unless the operator lets users override
that package (``BOOTSTRAP_HOST_OVERRIDES``).

"The host" is the host *application*: what the host needs besides bootstrap. The
distributions only bootstrap needs (its dependency closure, read from the metadata,
less whatever another host distribution requires: pip-tools' ``click``, pydantic's
stack, ``watchdog``, ``filelock``) are bootstrap's own tools, not protected: users may
pin other versions. The generation then holds its own copy and goes first on
``sys.path``, and the host never imports those tools itself (its syncs run in child
processes, ``host.child``), so workflows import the user's version.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Set
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name

from bootstrap.errors import RequirementsError, ResolutionError
from bootstrap.inputs.requirements import Desired, parse_requires_dist
from bootstrap.store.fs import resolves_inside
from bootstrap.store.paths import HOST_PATH_VARIABLE
from bootstrap.store.records import metadata_headers

# bootstrap's distribution, and the extras of it that are tools too (an operator's choice of backend).
OWN_DISTRIBUTION = "bootstrap-packages"
_VENV_SEEDED = frozenset({"pip", "setuptools", "wheel"})
_OWN_EXTRAS = ("uv",)


@dataclass(frozen=True)
class HostScan:
    """What the host interpreter can import, split in two: {canonical name: version} each."""

    packages: dict[str, str]  # the host application's: protected, constraints for every resolution
    tools: dict[str, str]  # bootstrap's own dependencies that nothing else of the host needs: users may pin them


def scan(packages_dir: Path) -> HostScan:
    """Read the host's metadata over its ``sys.path`` (first on the path wins), bootstrap's generations left out."""
    from importlib.metadata import distributions

    given = os.environ.get(HOST_PATH_VARIABLE)
    searched = given.split(os.pathsep) if given else sys.path
    paths = [entry for entry in searched if entry and not resolves_inside(entry, packages_dir)]
    versions: dict[str, str] = {}
    requires: dict[str, list[str]] = {}
    requested: set[str] = set()
    for dist in distributions(path=paths):
        # As importlib.metadata reads it: a dist-info's METADATA, an egg-info's PKG-INFO, or an egg-info that is
        # a file itself (distutils' installs, some distributions' system packages).
        text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or dist.read_text("")
        headers = metadata_headers(text) if text else None
        name, version = (headers.get("Name"), headers.get("Version")) if headers else (None, None)
        # Without a name or a version it constrains nothing (pip would call it broken): as if not there.
        if headers and name and version and canonicalize_name(name) not in versions:
            versions[canonicalize_name(name)] = str(version)
            listed = [str(line) for line in headers.get_all("Requires-Dist") or ()]
            # An egg-info's requirements are in its requires.txt, which importlib.metadata reads.
            egg_requires = not listed and dist.read_text("requires.txt") is not None
            requires[canonicalize_name(name)] = list(dist.requires or []) if egg_requires else listed
            # Installed by name (`pip install -r`), not as a dependency; but pip and setuptools are always so
            # marked by `python -m venv` (ensurepip), whatever the host needs.
            if dist.read_text("REQUESTED") is not None and canonicalize_name(name) not in _VENV_SEEDED:
                requested.add(canonicalize_name(name))
    own = own_tools(requires, requested=requested)
    return HostScan(
        packages={name: version for name, version in versions.items() if name not in own},
        tools={name: versions[name] for name in sorted(own)},
    )


def own_tools(
    requires: Mapping[str, list[str]], own: str = OWN_DISTRIBUTION, requested: Set[str] = frozenset()
) -> set[str]:
    """The distributions only ``own`` needs: its closure, less the closure of everything else installed.

    ``requires`` maps each installed distribution (canonical name) to its ``Requires-Dist`` lines;
    ``requested`` names those installed by name (pip's ``REQUESTED`` file: a host's own requirements
    file asked for them), which stay the host's even when bootstrap needs them too. The others are
    followed without their extras: the metadata does not record which extras were installed, and
    following every extra would protect everything (werkzeug's ``watchdog`` extra, setuptools'
    ``testing``). A package the host application needs only through an extra (``uvicorn[standard]``'s
    python-dotenv) is therefore bootstrap's unless named: list the host's own requirements when
    installing them (``pip install -r``), which marks them REQUESTED. With no ``own`` among them
    (bootstrap run from a source folder), nothing is bootstrap's alone.
    """
    if own not in requires:
        return set()
    ours = _closure(requires, {own: set(_OWN_EXTRAS)}) - {own}
    roots = {name for name in requires if name != own and (name not in ours or name in requested)}
    others = _closure(requires, {name: set() for name in roots})
    return ours - others


def _closure(requires: Mapping[str, list[str]], roots: dict[str, set[str]]) -> set[str]:
    """Every installed distribution ``roots`` need, the roots included (with the extras asked of each)."""
    seen: set[tuple[str, str]] = set()
    todo = [(name, extra) for name, extras in roots.items() if name in requires for extra in ("", *extras)]
    while todo:
        name, extra = todo.pop()
        if (name, extra) in seen:
            continue
        seen.add((name, extra))
        for line in requires.get(name, []):
            requirement = parse_requires_dist(line)
            if requirement is None:  # a distribution's metadata is not ours to judge
                continue
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
                continue
            needed = canonicalize_name(requirement.name)
            if needed in requires:
                todo += [(needed, wanted) for wanted in ("", *sorted(requirement.extras))]
    return {name for name, _ in seen}


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
