"""``sync`` of everything: the workspace, then every organisation on top of it, each failing alone.

The workspace first (every organisation's set is built on its pins), then the
organisations in parallel (``BOOTSTRAP_ORG_PARALLELISM``, default the cores);
an organisation whose file is bad, or whose package cannot be had, fails alone:
its failure is recorded in its own manifest, its last good generation keeps
serving, and the others publish. An organisation whose folder left the repo has
its packages removed once ``BOOTSTRAP_ORG_GRACE_SECONDS`` have passed and no
running process uses them.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bootstrap.errors import BootstrapError, for_org, redact
from bootstrap.inputs import orgs
from bootstrap.pipeline import publish
from bootstrap.pipeline.sync import SyncResult, sync
from bootstrap.settings import Settings
from bootstrap.store import leases, registry
from bootstrap.store.fs import atomic_write_text
from bootstrap.store.layout import DEPARTED_MARKER, Layout
from bootstrap.store.paths import ORGS_DIR, valid_org_id
from bootstrap.tools import runner

log = logging.getLogger("bootstrap")


@dataclass(frozen=True)
class OrgOutcome:
    org: str
    result: SyncResult | None = None
    error: BootstrapError | None = None  # it failed: its last good generation keeps serving


@dataclass(frozen=True)
class Synced:
    """What ``sync_everything`` did: the workspace's outcome, each organisation's, the organisations removed."""

    workspace: SyncResult | None
    workspace_error: BootstrapError | None
    orgs: list[OrgOutcome] = field(default_factory=list)
    refused: tuple[tuple[str, str], ...] = ()  # folders that are no organisation: (name, why)
    removed: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        """One line per failure: the workspace's (first), each refused folder's, each organisation's."""
        lines = [redact(str(self.workspace_error))] if self.workspace_error else []
        lines += [f"org {name}: {why}" for name, why in self.refused]
        lines += [
            f"org {outcome.org}: {for_org(redact(str(outcome.error)), outcome.org)}"
            for outcome in self.orgs
            if outcome.error
        ]
        return lines


def sync_everything(settings: Settings) -> Synced:
    """Sync the workspace, then every organisation (in parallel); never raise for one of them."""
    try:
        workspace, workspace_error = sync(settings), None
    except BootstrapError as exc:  # the organisations build on its last good set
        workspace, workspace_error = None, exc
    found = orgs.discover(settings)
    outcomes = sync_orgs(settings, found.orgs)
    removed = remove_departed(settings, found.orgs)
    return Synced(workspace, workspace_error, outcomes, found.refused, removed)


def sync_orgs(settings: Settings, names: tuple[str, ...] | list[str]) -> list[OrgOutcome]:
    """Sync these organisations, several at once; each outcome in the order given."""
    if not names:
        return []
    workers = min(len(names), settings.org_parallelism or runner.cores())
    if workers > 1:
        log.info("syncing %d organisations, %d at a time", len(names), workers)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bootstrap-org") as pool:
        return list(pool.map(lambda name: sync_org(settings, name), names))


def sync_org(settings: Settings, org: str) -> OrgOutcome:
    """One organisation's sync, its log lines marked with its id; its failure returned, not raised."""
    marked = _ORG_OF_LOGS.set(org)
    try:
        return OrgOutcome(org, result=sync(settings.for_org(org)))
    except BootstrapError as exc:
        log.error("%s", redact(str(exc)))
        return OrgOutcome(org, error=exc)
    except OSError as exc:  # the machine: the others may still go on
        from bootstrap.errors import StorageError  # slow path: only on a failure

        log.error("%s", exc)
        return OrgOutcome(org, error=StorageError.from_os_error(exc))
    finally:
        _ORG_OF_LOGS.reset(marked)


def remove_departed(settings: Settings, present: tuple[str, ...] | list[str]) -> list[str]:
    """Remove the packages of organisations whose folder left the repo: once ``org_grace_seconds`` have passed
    since a sync first saw it gone, and when no running process uses them (never the workspace's own)."""
    root = settings.packages_dir / ORGS_DIR
    try:
        names = sorted(name for name in os.listdir(root) if valid_org_id(name))
    except OSError:
        return []
    if names and not settings.orgs_folder.is_dir():  # a typo in the setting, a repo not checked out yet
        log.warning(
            "the organisations' folder %s does not exist: the packages of %d organisation%s stay; check "
            "BOOTSTRAP_ORGS_DIR (or that the repo is checked out); to drop them, delete their folders in %s",
            settings.orgs_folder,
            len(names),
            "" if len(names) == 1 else "s",
            root,
        )
        return []
    removed = []
    for name in names:
        folder = root / name
        marker = folder / DEPARTED_MARKER
        if name in present:
            with contextlib.suppress(FileNotFoundError):
                marker.unlink()  # back in the repo
            continue
        if _departed_long_enough(marker, settings.org_grace_seconds) and _unused(Layout(folder)):
            try:
                publish.remove_tree(folder, settings.layout.staging)
            except OSError as exc:
                log.warning("could not remove organisation %s's packages (%s); the next sync tries again", name, exc)
                continue
            log.info("removed organisation %s's packages: its folder left %s", name, settings.orgs_folder)
            removed.append(name)
    return removed


def _departed_long_enough(marker: Path, grace: float) -> bool:
    """True once ``grace`` seconds have passed since the marker was written (written now if there is none)."""
    try:
        return time.time() - marker.stat().st_mtime >= grace
    except FileNotFoundError:
        try:
            atomic_write_text(marker, time.strftime("%Y-%m-%dT%H:%M:%SZ\n", time.gmtime()))
        except OSError as exc:
            log.debug("could not mark %s: %s", marker.parent, exc)
        log.info(
            "organisation %s has left the repo: its packages go in %ss unless it comes back", marker.parent.name, grace
        )
        return grace <= 0


def _unused(layout: Layout) -> bool:
    """No running process records a generation of it, and no sync holds its claim."""
    if registry.process_records(layout, include_self=True):
        return False
    judged = leases.judge(layout.build_lease, layout.lease_seconds)
    return not judged.exists or judged.expired


# The organisation whose sync logs here: a context value, so that the threads a sync starts (its speculative
# install, the bytecode pool's) mark their lines too (they run in a copy of their starter's context).
_ORG_OF_LOGS: contextvars.ContextVar[str | None] = contextvars.ContextVar("bootstrap_org_of_logs", default=None)


class OrgPrefix(logging.Filter):
    """Marks the log records of an organisation's sync (``org acme: ...``): several run at once."""

    def filter(self, record: logging.LogRecord) -> bool:
        org = _ORG_OF_LOGS.get()
        if org is not None and not getattr(record, "org_marked", False):
            record.msg, record.args = f"org {org}: {for_org(record.getMessage(), org)}", None
            record.org_marked = True
        return True


log.addFilter(OrgPrefix())
