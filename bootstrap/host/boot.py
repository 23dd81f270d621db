"""The blocking start-up: the fast path when nothing changed, else a sync and then activation.

When nothing changed, start-up reads one small JSON file, hashes the files
the generation was built from, edits ``sys.path`` and starts no process.
Nothing heavy is imported here, ever: when a sync is needed
(``_sync_then_activate``) it runs as a child process (``host.child``), so this
process never loads pydantic, packaging or the sync machinery.
"""

from __future__ import annotations

import os

from bootstrap.host.activation import activate_manifest, put_on_path
from bootstrap.store import freshness, paths
from bootstrap.store import manifest as manifest_mod
from bootstrap.store.paths import Sources, site_path

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and pathlib stay off the fast path
    from bootstrap.settings import Settings
    from bootstrap.store.manifest import Manifest


def sources_of(settings: Settings | None) -> Sources:
    """The files freshness is judged by: from the settings, or straight from the environment (fast path)."""
    return Sources.from_env() if settings is None else settings.sources


def boot(settings: Settings | None, *, raise_errors: bool) -> Manifest | None:
    """Activate the active generation if it serves the files as they are now; else sync first."""
    sources = sources_of(settings)
    manifest = manifest_mod.read(sources.manifest_file)
    orgs_folder = str(settings.orgs_folder) if settings is not None else paths.orgs_folder(sources.requirements_file)
    if manifest is not None and freshness.is_fresh(manifest, sources) and not _an_org_is_stale(sources, orgs_folder):
        # The manifest just read, its generation already judged usable (placed, built for this interpreter,
        # not writable by others) by the freshness check: the fast path reads and checks it once.
        site_dir = site_path(sources.packages_dir, str(manifest["generation"]))  # this folder's, wherever it is
        put_on_path(site_dir, first=bool(manifest.get("overrides")))
        return manifest
    return _sync_then_activate(settings, sources, raise_errors=raise_errors)


def _an_org_is_stale(sources: Sources, orgs_folder: str) -> bool:
    """An organisation's set does not serve its files as they are now (nor has its sync failed on them as they
    are): the start-up sync then syncs it. One ``stat`` when there are no organisations."""
    try:
        names = os.listdir(orgs_folder)
    except OSError:  # none (the usual case)
        return False
    for name in names:
        if not paths.valid_org_id(name) or not os.path.isfile(os.path.join(orgs_folder, name, "requirements.txt")):
            continue
        org = sources.for_org(name, orgs_folder)
        current = manifest_mod.read(org.manifest_file)
        if freshness.is_fresh(current, org):
            continue
        error = current.get("error") if current is not None else None
        if not (isinstance(error, dict) and freshness.same_inputs(error, org)):  # failed on these very files: no retry
            return True
    return False


def _sync_then_activate(settings: Settings | None, sources: Sources, *, raise_errors: bool) -> Manifest | None:
    """The slow path: sync in a child process, then activate whatever serves."""
    import logging

    from bootstrap.errors import BootstrapError, redact  # slow path
    from bootstrap.host import child  # slow path: subprocess

    log = logging.getLogger("bootstrap")
    try:
        child.run(["sync"], settings)
    except BootstrapError as exc:
        if raise_errors:
            raise
        log.error("sync failed, serving the last good generation: %s", redact(str(exc)))
    except Exception:  # a bug, or the machine failing: the host must still start on what it has
        if raise_errors:
            raise
        log.exception("sync failed unexpectedly, serving the last good generation")
    manifest = manifest_mod.read(sources.manifest_file)
    activate_manifest(manifest, sources.packages_dir, allow_world_writable=sources.allow_world_writable)
    return manifest
