"""The public start-up, ``startup()``: serve the active generation, syncing first if need be.

The plain call blocks (``host.boot``: the fast path when nothing changed);
``watch=True`` and ``block=False`` hand off to the live machinery
(``host.live``), which keeps threads.
"""

from __future__ import annotations

from bootstrap.host.activation import take_packages_root_off_path
from bootstrap.host.boot import boot
from bootstrap.store.paths import packages_dir as env_packages_dir

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and pathlib stay off the fast path
    from bootstrap.settings import Settings
    from bootstrap.store.manifest import Manifest


def startup(
    settings: Settings | None = None, *, raise_errors: bool = False, watch: bool = False, block: bool = True
) -> Manifest | None:
    """Sync if needed, then activate; return the manifest.

    The fast path (nothing changed) starts no process and imports nothing
    heavy. When a sync is needed and fails, the failure is logged and recorded
    in the manifest, and the last good generation is activated anyway, so the
    host keeps serving; pass ``raise_errors=True`` to get the error instead.

    A packages folder whose own root is on ``sys.path`` (a host's old ``sys.path.insert(0,
    "/home/.packages")``) is taken off it first, with one log line saying to delete that line.

    ``watch=True`` keeps a watcher thread that syncs whenever the requirements
    file changes and moves this process to every new generation.
    ``block=False`` activates the last good generation and returns at once; a
    needed sync runs in a background thread (``bootstrap.wait_until_synced()``).
    Neither imports pydantic, packaging or watchdog in the calling thread when
    nothing changed (unless ``raise_errors``: then the settings are read, and
    the watcher started, in the calling thread, so that their errors can be raised).
    """
    # Before anything is imported from the generation: an old `sys.path.insert(0, packages_dir)` would shadow it.
    take_packages_root_off_path(str(settings.packages_dir) if settings is not None else env_packages_dir())
    if watch or not block:
        from bootstrap.host import live  # slow path: threads (stdlib only in this thread)

        return live.start(settings, raise_errors=raise_errors, watch=watch, block=block)
    return boot(settings, raise_errors=raise_errors)
