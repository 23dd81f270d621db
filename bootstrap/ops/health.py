"""What ``check`` and ``status`` report: for a health probe, a program, or a person."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from bootstrap.errors import BootstrapError, VerificationError
from bootstrap.inputs import legacy, orgs
from bootstrap.pipeline.publish import newest_first, undeletable
from bootstrap.settings import Settings
from bootstrap.store import freshness, layers, leases, manifest, records, registry
from bootstrap.store.fs import counted, human_size, tree_size
from bootstrap.store.layout import Layout
from bootstrap.store.paths import HOST_PATH_VARIABLE

TYPE_CHECKING = False
if TYPE_CHECKING:  # the manifest's types exist for the type checker only
    from bootstrap.store.manifest import Manifest, PackageEntry, RolledBackFrom


def check(settings: Settings, *, own_files_only: bool = False) -> dict[str, Any]:
    """The health of the packages folder, in one of three states (``state``):

    - ``healthy``: the active generation serves the files as they are now, intact, and the last sync worked;
    - ``degraded``: the active generation is intact and serves, but not what the files ask for now: a sync is
      pending (an edited requirements file, a newly committed lock), or it was rolled back (``pending``
      says which); ``healthy`` is still true, so a health probe does not fail;
    - ``unhealthy``: something needs an operator (``problems``): never synced, the last sync failed, the
      requirements file is missing, a folder others can write, a damaged generation.

    ``own_files_only``: an organisation's files are looked at for its private distributions alone (the rest
    are links to the workspace's files, which its own check looks at): what ``check`` of every organisation,
    a probe run every few seconds, can afford for many of them.
    """
    layout = settings.layout
    current, damage = manifest.load(layout.manifest)
    site_dir = freshness.active_site(current, str(layout.root))  # this folder's, wherever others mount it
    problems: list[str] = []
    pending: list[str] = []
    if damage:
        problems.append(f"{damage}; the next sync rewrites it")
    else:
        problems += _missing_requirements_file(current, settings)
        reason = freshness.stale_reason(current, settings.sources, inputs_too=False)
        if reason:
            problems.append(reason)
        elif current is not None:
            pending += _pending(current, settings)
        if current is not None and current.get("status") == "failed":
            error: dict[str, Any] = dict(current.get("error") or {})
            problems.append(f"the last sync failed at {error.get('stage')} ({error.get('at')}): {error.get('message')}")
        if current is not None and site_dir and Path(site_dir).is_dir():
            problems += _damage(Path(site_dir), current.get("packages", []), _own(current) if own_files_only else None)
    notes = _debris(layout) + _packages_root_on_path(layout)
    restarts = _restart_pending(layout)
    for item in restarts:
        who = "this process" if item["pid"] is None else f"pid {item['pid']} on {item['host']}"
        loaded = ", ".join(_loaded(package) for package in item["packages"])
        notes.append(f"restart pending: {who} has {loaded} loaded; restart it to use the active generation")
    return {
        "healthy": not problems,
        "state": "unhealthy" if problems else "degraded" if pending else "healthy",
        "problems": problems,
        "pending": pending,
        "rolled_back_from": current.get("rolled_back_from") if current and not problems else None,
        "notes": notes,
        "generation": current.get("generation") if current else None,
        "site_dir": site_dir,
        "requirements_file": str(settings.requirements_file),
        "packages_dir": str(layout.root),
        "last_error": current.get("error") if current else None,
        "restart_pending": restarts,
    }


def _own(current: Manifest) -> frozenset[str] | None:
    """An organisation's private distributions (canonical names), from its manifest; None: not known."""
    recorded: dict[str, Any] = dict(current)
    private = (recorded.get("isolation") or {}).get("private")
    return frozenset(canonicalize_name(name) for name in private) if isinstance(private, dict) else None


def one_line(report: dict[str, Any]) -> str:
    """A check report in one line, for a person: its state, and why."""
    if report["state"] == "healthy":
        return f"healthy: generation {report['generation']} serves {report['requirements_file']}"
    if report["state"] == "degraded":  # a health probe passes: the active generation is intact and serves
        return "degraded: " + "; ".join(report["pending"])
    return "unhealthy: " + "; ".join(report["problems"])


def check_orgs(settings: Settings) -> dict[str, dict[str, Any]]:
    """``check`` of every organisation the repo has, by id (a folder that is none: an unhealthy entry saying why).

    Apart from the workspace's report: one organisation's failure leaves the others, and the host, serving."""
    found = orgs.discover(settings)
    reports = {org: check(settings.for_org(org), own_files_only=True) for org in found.orgs}
    for name, why in found.refused:
        reports[name] = {"healthy": False, "state": "unhealthy", "problems": [why], "pending": [], "notes": []}
    return reports


def _missing_requirements_file(current: Manifest | None, settings: Settings) -> list[str]:
    """A requirements file that is not there, when there was one (or nothing was ever synced): a sync then
    refuses to empty what serves, so it needs an operator. A host that never had one is fine without it."""
    path = settings.requirements_file
    if path.exists() or (current is not None and current.get("requirements_sha256") is None):
        return []
    return [
        f"the requirements file {path} does not exist: check BOOTSTRAP_REQUIREMENTS_FILE (or that the repo is "
        "checked out); the active generation keeps serving"
    ]


def _pending(current: Manifest, settings: Settings) -> list[str]:
    """Why an intact, serving generation is not what the files ask for now: changed inputs, or a rollback."""
    generation = current.get("generation")
    requirements_file = str(settings.requirements_file)
    pending = [
        f"sync pending: {path} changed since the last sync; generation {generation} serves until a sync"
        for path in freshness.changed_inputs(current, settings.sources)
        if path != requirements_file or Path(path).exists()  # a missing file is a problem of its own
    ]
    away_from = current.get("rolled_back_from")
    if away_from is not None and not pending:  # else the files ask for something else again: a sync is pending
        pending.append(
            f"rolled back to {generation}; the file asks for {_asked_for(away_from, current)}: hosts serve "
            f"{generation} until the file changes, `python -m bootstrap sync` builds what it asks for"
        )
    return pending


def _asked_for(away_from: RolledBackFrom, current: Manifest) -> str:
    """What the files ask for, against what the rolled-back generation serves: only the pins that differ."""
    serving = {f"{package['name']}=={package['version']}" for package in current.get("packages", [])}
    asked = set(away_from.get("pins") or [])
    differ = [f"{pin} (not served)" for pin in sorted(asked - serving)]
    differ += [f"no {pin}" for pin in sorted(serving - asked)]
    what = f"generation {away_from.get('generation')}"
    return f"{what} ({', '.join(differ)})" if differ else what


def _damage(site_dir: Path, packages: list[PackageEntry], only: frozenset[str] | None = None) -> list[str]:
    """How the active site folder differs from what was verified, from a listing of it and a stat of each
    file its RECORDs list (no hashing: ``verify`` reads every file); ``only``: these distributions' files."""
    gone = sorted(name for name in layers.linked_names(site_dir) if not os.path.isdir(site_dir / name))
    if gone:  # an organisation's generation whose workspace generation was removed (by hand: gc keeps it)
        return [
            f"workspace generation {layers.builds_on(site_dir.parent)} is gone, and {counted(len(gone), 'folder')} "
            f"of the active generation link into it ({', '.join(gone[:3])}); the next sync rebuilds it"
        ]
    try:
        # Only some: the set compared by the folders' names, and only those distributions read (and a .pth
        # looked for, and then every RECORD read, only when the site has one).
        has_pth = only is not None and any(name.endswith(".pth") for name in os.listdir(site_dir))
        dists = records.installed(site_dir, None if has_pth else only)
        named = records.named_in_folder(site_dir) if only is not None else dists
    except BootstrapError as exc:  # a dist-info lost its METADATA or RECORD
        return [f"{exc}; the next sync rebuilds it"]
    except OSError as exc:
        return [f"cannot read {site_dir}: {exc.strerror}"]
    problems = []
    differences = records.set_differences(named, packages)
    if differences:
        more = f"; and {len(differences) - 5} more" if len(differences) > 5 else ""
        problems.append(
            f"the active generation does not hold the packages the manifest lists ({'; '.join(differences[:5])}"
            f"{more}); the next sync rebuilds it"
        )
    missing = records.missing_files(site_dir, [dist for dist in dists if only is None or dist.name in only])
    if missing:
        problems.append(f"{len(missing)} file(s) of the active generation are missing, e.g. {missing[0]}")
    problems += [
        f"{name} in the active generation's site folder is listed in no RECORD: a .pth runs in every host that "
        "activates it, and bootstrap never verified it; the next sync builds a generation without it"
        for name in records.unlisted_pth(site_dir, dists)
    ]
    return problems


def _debris(layout: Layout) -> list[str]:
    """Not unhealthy (the active generation is fine), but worth naming: what is left in staging, and whether the
    next sync can remove it (a generation gc renamed into the trash but could not empty, say: then who can)."""
    notes = []
    for entry in sorted(layout.staging.iterdir()) if layout.staging.is_dir() else []:
        if entry.name.endswith((".lease", ".tmp")) or _building(layout, entry):
            continue  # a builder's claim, or its build in progress (here or on another instance): not debris
        stuck = undeletable(entry)
        if stuck:
            notes.append(f"staging/{entry.name} cannot be removed by bootstrap ({stuck}); delete it as its owner")
        elif entry.name.startswith("trash-"):
            notes.append(f"staging/{entry.name} is an old generation not yet deleted; the next sync deletes it")
        else:
            notes.append(f"staging/{entry.name} is left from an interrupted sync; the next sync removes it")
    return notes


def _building(layout: Layout, staging: Path) -> bool:
    judged = leases.judge(layout.staging_lease(staging), layout.lease_seconds)
    return judged.exists and not judged.expired


def sync_under_way(layout: Layout) -> str | None:
    """Who holds the build claim now (a sync here or on another instance), or None."""
    judged = leases.judge(layout.build_lease, layout.lease_seconds)
    if not judged.exists:
        return None
    return f"{judged.holder} (expired: the next sync takes it over)" if judged.expired else judged.holder


def _packages_root_on_path(layout: Layout) -> list[str]:
    """The host's ``sys.path`` (given to a child run for it) holding the packages folder's own root: legacy
    files there shadow the generation until the host drops its old line (``startup()`` takes it off)."""
    given = os.environ.get(HOST_PATH_VARIABLE)
    entries = given.split(os.pathsep) if given else sys.path
    if not any(entry and os.path.abspath(entry) == str(layout.root) for entry in entries):
        return []
    return [
        f"{layout.root} is on the host's sys.path: its old pip install --target files shadow the active "
        f"generation; delete `sys.path.insert(0, {str(layout.root)!r})` from function_app.py"
    ]


def _restart_pending(layout: Layout) -> list[dict[str, Any]]:
    """Processes (this one first, as ``pid`` None) running modules of a distribution whose active version has
    changed, from the registry of running hosts (a host that switched in-process has its record there)."""
    here, others = [], []
    for record in registry.process_records(layout, include_self=True):
        if not record.get("packages"):
            continue
        if registry.is_this_process(record):
            here.append({"pid": None, "host": None, "packages": record["packages"]})
        else:
            others.append({"pid": record.get("pid"), "host": record.get("host"), "packages": record["packages"]})
    return here + others


def _loaded(package: dict[str, Any]) -> str:
    active = package.get("active")
    now = f"the active generation has {active}" if active else "the active generation no longer has it"
    return f"{package.get('name')} {package.get('loaded')} ({now})"


def verify_active(settings: Settings) -> dict[str, Any]:
    """Every file of the active generation against the hash in its RECORD: what changed, what is gone, and
    what is there that no RECORD lists; its distributions against the manifest's packages."""
    current = manifest.read(settings.layout.manifest)
    active = freshness.active_site(current, str(settings.layout.root))
    site_dir = Path(active) if active is not None else None
    if site_dir is None or not site_dir.is_dir():
        raise VerificationError(f"there is no active generation to verify in {settings.packages_dir}; run sync")
    dists = records.installed(site_dir)
    problems = records.set_differences(dists, current.get("packages", []) if current else [])
    problems += records.changed_files(site_dir, dists)
    unlisted = records.unlisted_files(site_dir, dists, linked=layers.linked_names(site_dir))
    problems += [f"unlisted: {path}" for path in unlisted]
    files = sum(len(dist.files) for dist in dists)
    return {
        "ok": not problems,
        "generation": current.get("generation") if current else None,
        "files": files,
        "problems": problems,
    }


def status(settings: Settings) -> dict[str, Any]:
    """Everything an operator wants to see: active generation, packages, errors, disk, strangers."""
    layout = settings.layout
    current = manifest.read(layout.manifest)
    active = current.get("generation") if current else None
    generations = []
    for name, found in newest_first(layout):
        record: dict[str, Any] = dict(found or {})
        generations.append(
            {
                "generation": name,
                "active": name == active,
                "complete": bool(record),
                "created_at": record.get("created_at"),
                "packages": len(record.get("packages", [])),
                "bytes": tree_size(layout.generation(name)),
            }
        )
    unmanaged = (
        sorted(entry.name for entry in layout.root.iterdir() if not layout.is_managed(entry.name))
        if layout.root.is_dir()
        else []
    )
    staging = sorted(
        entry.name
        for entry in (layout.staging.iterdir() if layout.staging.is_dir() else [])
        if not entry.name.endswith((".lease", ".tmp")) and not _building(layout, entry)
    )
    return {
        "packages_dir": str(layout.root),
        "state_dir": str(layout.state),
        "adopted": legacy.adopted_names(layout),
        "manifest": current,
        "check": check(settings),
        "generations": generations,
        "bytes": tree_size(layout.root) if layout.root.is_dir() else 0,
        "unmanaged": unmanaged,
        "staging": staging,
        "syncing": sync_under_way(layout),
        "org": settings.org,
        # "built", or "remote-cache": the active generation was unpacked from the remote cache (BOOTSTRAP_REMOTE_CACHE)
        "origin": current.get("origin") if current else None,
        "orgs": _orgs_summary(settings) if settings.org is None else [],
    }


def _orgs_summary(settings: Settings) -> list[dict[str, Any]]:
    """Each organisation's active generation, health and isolation, for the workspace's ``status``."""
    summary = []
    for org in orgs.discover(settings).orgs:
        org_settings = settings.for_org(org)
        current = manifest.read(org_settings.layout.manifest)
        recorded: dict[str, Any] = dict(current or {})
        isolation: dict[str, Any] = dict(recorded.get("isolation") or {})
        summary.append(
            {
                "org": org,
                "generation": current.get("generation") if current else None,
                "packages": len(current.get("packages", [])) if current else 0,
                "private": sorted(isolation.get("private") or {}),
                "isolation": isolation.get("mode"),
                "state": check(org_settings, own_files_only=True)["state"],
            }
        )
    return summary


def format_status(report: dict[str, Any]) -> str:
    current = report["manifest"] or {}
    health = report["check"]
    lines = [f"org              {report['org']}"] if report.get("org") else []
    lines.append(f"packages folder  {report['packages_dir']} ({human_size(report['bytes'])} in all)")
    lines.append(f"requirements     {health['requirements_file']}")
    lines.append(f"state folder     {report['state_dir']} (the packages added at run time, kept across restarts)")
    if current.get("generation"):
        python = current.get("python") or {}
        lines.append(
            f"active           {current['generation']} ({counted(len(current.get('packages', [])), 'package')}, "
            f"Python {python.get('version')} {python.get('platform')}, lock from {current.get('lock_source')}"
            + (", from the remote cache)" if current.get("origin") == "remote-cache" else ")")
        )
        lines.append(f"site dir         {health.get('site_dir')}")
    else:
        lines.append("active           none (never synced successfully)")
    state = {"healthy": "healthy", "degraded": "degraded (healthy for a probe)"}.get(health.get("state"), "NOT healthy")
    lines.append(f"health           {state}")
    lines.extend(f"  - {problem}" for problem in health["problems"])
    lines.extend(f"  - {reason}" for reason in health.get("pending", []))
    lines.extend(f"  note: {note}" for note in health.get("notes", []))
    error = current.get("error")
    if error:
        lines.append(f"last error       {error.get('at')} at {error.get('stage')}: {error.get('message')}")
    packages = current.get("packages") or []
    if packages:
        lines.append("packages")
        width = max(len(p["name"]) for p in packages)
        adopted = report.get("adopted", {})
        version_width = max(len(p["version"]) for p in packages)  # a long version never pushes its row out
        lines.extend(
            f"  {p['name']:<{width}}  {p['version']:<{version_width}}  {_why_there(p, adopted)}" for p in packages
        )
    unavailable = sorted(name for name, outcome in report.get("adopted", {}).items() if outcome == legacy.UNAVAILABLE)
    if unavailable:
        lines.append("legacy packages not adopted (not to be had from the index as pinned, or in conflict; not served)")
        lines.extend(f"  {name}" for name in unavailable)
    if report["generations"]:
        lines.append("generations")
        for gen in report["generations"]:
            flag = "active" if gen["active"] else ("" if gen["complete"] else "incomplete")
            size, count = human_size(gen["bytes"]), counted(gen["packages"], "package")
            lines.append(f"  {gen['generation']}  {size:>10}  {count:>12}  {flag}".rstrip())
    if report.get("syncing"):
        lines.append(f"syncing now      {report['syncing']}")
    if report["staging"]:
        lines.append("staging (debris of an interrupted sync; the next sync removes it)")
        lines.extend(f"  {name}" for name in report["staging"])
    lines += _orgs_lines(report.get("orgs") or [])
    if report["unmanaged"]:
        lines.append("not created by bootstrap (never deleted; move them into requirements.txt)")
        lines.extend(f"  {name}" for name in report["unmanaged"])
    return "\n".join(lines)


def _orgs_lines(summary: list[dict[str, Any]]) -> list[str]:
    if not summary:
        return []
    lines = ["organisations (each: the workspace's set and its own; `status --org ID` for one)"]
    width = max(len(item["org"]) for item in summary)
    for item in summary:
        own = ", ".join(item["private"]) or "nothing of its own"
        lines.append(
            f"  {item['org']:<{width}}  {item['state']:<9}  {item['generation'] or 'never synced'}  "
            f"{item['isolation'] or '-'}: {own}"
        )
    return lines


def _why_there(package: dict[str, Any], adopted: dict[str, str]) -> str:
    """How a package came to be in the set, for a person: the file asked, a workflow added it (or its old
    ``pip install --target`` left it, and it was adopted), or pulled in."""
    if (
        package.get("source") == "runtime"
        and adopted.get(canonicalize_name(str(package.get("name")))) == legacy.ADOPTED
    ):
        why = "added at run time (adopted from the packages folder's legacy files)"
    elif package.get("source") == "runtime":
        why = "added at run time"
    elif package.get("source") == "workspace":
        why = "the workspace's (requested there)"
    else:
        why = "requested" if package.get("requested") else "dependency"
    return why + (" (the host's)" if package.get("provided_by") == "host" else "")
