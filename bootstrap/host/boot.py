"""The blocking start-up: the fast path when nothing changed, else a sync and then activation.

When nothing changed, start-up reads one small JSON file, hashes the files
the generation was built from, edits ``sys.path`` and starts no process.
Nothing heavy is imported here, ever: when a sync is needed
(``_sync_then_activate``) it runs as a child process (``host.child``), so this
process never loads pydantic, packaging or the sync machinery.
"""

from __future__ import annotations

from bootstrap.host.activation import activate_manifest, put_on_path
from bootstrap.store import freshness
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
    if manifest is not None and freshness.is_fresh(manifest, sources):
        # The manifest just read, its generation already judged usable (placed, built for this interpreter,
        # not writable by others) by the freshness check: the fast path reads and checks it once.
        site_dir = site_path(sources.packages_dir, str(manifest["generation"]))  # this folder's, wherever it is
        put_on_path(site_dir, first=bool(manifest.get("overrides")))
        return manifest
    return _sync_then_activate(settings, sources, raise_errors=raise_errors)


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
