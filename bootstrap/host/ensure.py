"""``bootstrap.ensure("tabulate")`` in a host: a package added at run time, importable at once and after restarts.

The host side of ``python -m bootstrap add --if-needed`` (``host.runtime``): a
bare name the active generation already serves, asked for, costs one small JSON
read and no process; anything else runs the child (``host.child``: the host
imports none of bootstrap's tools), then this process switches to what it published.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from bootstrap.errors import RequirementsError, SettingsError
from bootstrap.host import child, live
from bootstrap.store import freshness, manifest
from bootstrap.store.paths import ORG_ID_RULE, Sources, valid_org_id
from bootstrap.store.records import canonical_name

if TYPE_CHECKING:
    from bootstrap.settings import Settings
    from bootstrap.store.manifest import Manifest, PackageEntry

# A request that is a name alone: served by any version the active generation holds (PEP 508 names).
_BARE_NAME = re.compile(r"\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*")


def ensure(requirement: str, *, settings: Settings | None = None, org: str | None = None) -> PackageEntry:
    """Make ``requirement`` importable in this process now, and after restarts; return its manifest entry.

    Already served (the active generation holds a fitting version, asked for by the committed file
    or an earlier runtime addition): no sync. Otherwise it is recorded in the runtime overlay and
    synced; on failure a ``BootstrapError`` is raised and the previous set keeps serving.
    ``org``: the organisation's own overlay and set (its executions import it, ``bootstrap.execute``);
    this process's ``sys.path`` stays the workspace's. An org's settings (``settings.for_org(ID)``) are that org's.
    """
    if settings is not None and settings.workspace is not None:  # as bootstrap.execute takes them
        org, settings = org or settings.org, settings.workspace
    sources = _sources(settings, org)
    current = manifest.read(sources.manifest_file)
    bare = _BARE_NAME.fullmatch(requirement)
    entry = _served(current, bare.group(1), sources) if bare else None
    if entry is None:
        org_args = ["--org", org] if org is not None else []
        events = child.run(["add", "--if-needed", *org_args, requirement], settings)
        added = [event["entry"] for event in events if event.get("event") == "added" and event.get("entry")]
        current = manifest.read(sources.manifest_file)
        if not added:  # published, yet absent: a bug, not the caller's mistake; say so plainly
            raise RequirementsError(
                f"cannot add {requirement!r}", None, "the new generation does not hold it; run `check` and report this"
            )
        entry = added[-1]
    if org is None:
        live.switch(current, sources.packages_dir)
    return entry


def _sources(settings: Settings | None, org: str | None) -> Sources:
    """The workspace's sources, or the organisation's; an id that is none is a ``SettingsError``."""
    if org is not None and not valid_org_id(org):
        raise SettingsError(f"{str(org)[:80]!r} is not an org id: {ORG_ID_RULE}")
    if settings is not None:
        return settings.for_org(org).sources if org is not None else settings.sources
    workspace = Sources.from_env()
    return workspace.for_org(org) if org is not None else workspace


def _served(current: Manifest | None, name: str, sources: Sources) -> PackageEntry | None:
    """The active generation's entry for ``name`` if it serves the files as they are and it was asked for."""
    if current is None or current.get("status") != "ok" or freshness.stale_reason(current, sources) is not None:
        return None
    for package in current.get("packages", []):
        if canonical_name(str(package.get("name"))) == canonical_name(name) and package.get("source"):
            return package.copy()
    return None
