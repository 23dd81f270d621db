"""What a sync of an organisation's set adds to a plain one: its manifest's keys, and where it shares files from.

An organisation's packages folder (``<packages>/orgs/<org-id>``) is laid out like
the workspace's, and its sync is the same sync (``pipeline.sync``) with its own
settings (``Settings.for_org``). Its generations link every distribution they
share with the workspace's active generation, or with another organisation's,
from there: one file on disk per distribution version, however many sets hold it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from packaging.utils import canonicalize_name

from bootstrap.settings import Settings
from bootstrap.store import freshness, manifest
from bootstrap.store.paths import ORGS_DIR, valid_org_id

TYPE_CHECKING = False
if TYPE_CHECKING:  # the manifest's types exist for the type checker only
    from bootstrap.store.manifest import Isolation, Manifest, OrgManifest, PackageEntry, WorkspaceSet


def annotated(settings: Settings, current: Manifest, *, published: bool = True) -> Manifest:
    """An organisation's manifest: the workspace's keys plus ``org``, and (``published``: it names a generation
    built now) ``workspace`` (the set it was built on) and ``isolation`` (how it can share a host process)."""
    if settings.org is None or settings.workspace is None:
        return current
    built_on: WorkspaceSet | None = current.get("workspace")  # type: ignore[assignment]  # an OrgManifest's
    shares: Isolation | None = current.get("isolation")  # type: ignore[assignment]
    if published:
        workspace = manifest.read(settings.workspace.layout.manifest)
        built_on = {
            "generation": workspace.get("generation") if workspace else None,
            "lock_sha256": workspace.get("lock_sha256") if workspace else None,
        }
        shares = isolation(current.get("packages", []), workspace.get("packages", []) if workspace else [])
    org_manifest: OrgManifest = {**current, "org": settings.org, "workspace": built_on, "isolation": shares}
    return org_manifest


def isolation(packages: list[PackageEntry], workspace: list[PackageEntry]) -> Isolation:
    """How an organisation's set relates to the workspace's, which a host process serves: ``private`` (only the
    organisation has them: served inside its executions alone), ``differs`` (another version than the workspace's:
    only a process of its own can serve it). A hint, judged at build time; ``bootstrap.execute`` decides
    against what the running process has loaded."""
    served = {canonicalize_name(entry["name"]): entry["version"] for entry in workspace}
    private, differs = {}, {}
    for entry in packages:
        name = canonicalize_name(entry["name"])
        if name not in served:
            private[entry["name"]] = entry["version"]
        elif served[name] != entry["version"]:
            differs[entry["name"]] = {"org": entry["version"], "workspace": served[name]}
    reason = (
        f"{len(differs)} distribution(s) at another version than the workspace's: {', '.join(sorted(differs))}"
        if differs
        else None
    )
    return {"mode": "process" if differs else "in-process", "private": private, "differs": differs, "reason": reason}


def workspace_site(settings: Settings) -> Path | None:
    """The workspace's active site folder, if usable here (an organisation's generation builds on it)."""
    assert settings.workspace is not None
    return _usable_site(settings.workspace.packages_dir, allow_world_writable=settings.allow_world_writable)


def shared_sites(settings: Settings) -> list[Path]:
    """The workspace's active site folder and the other organisations' (usable here: for this interpreter,
    not open to every local user), to link unchanged distributions from."""
    assert settings.workspace is not None
    workspace = settings.workspace
    folders = [workspace.packages_dir]
    orgs_root = workspace.packages_dir / ORGS_DIR
    with contextlib.suppress(OSError):  # no organisation has been synced yet
        folders += [orgs_root / name for name in sorted(p.name for p in orgs_root.iterdir()) if valid_org_id(name)]
    sites = []
    for folder in folders:
        if folder == settings.packages_dir:
            continue
        site = _usable_site(folder, allow_world_writable=settings.allow_world_writable)
        if site is not None:
            sites.append(site)
    return sites


def _usable_site(packages_dir: Path, *, allow_world_writable: bool) -> Path | None:
    current = manifest.read(packages_dir / "manifest.json")
    if current is None or not manifest.built_for_this_interpreter(current.get("python")):
        return None
    site = freshness.active_site(current, str(packages_dir))
    if site is None or not Path(site).is_dir():
        return None
    if not allow_world_writable and freshness.open_to_others(site, str(packages_dir)) is not None:
        return None
    return Path(site)
