"""bootstrap: a declarative package bootstrapper for Python workflow hosts.

``startup()`` syncs the packages folder with the committed requirements file if
needed and puts the active generation on ``sys.path`` (``watch=True`` keeps
following the file; ``block=False`` serves the last good generation at once).
``activate()`` only does the latter; ``read_manifest()`` returns what the
active generation holds; ``ensure("tabulate")`` adds a package at run time,
for good; ``execute("name", input_data, org=...)`` runs a workflow for the
workspace or an organisation. Importing this package is cheap: the sync
machinery loads only when a sync is needed.

The package's folders are the pipeline's layers, each importing only those
below it: ``store`` (the folder on disk; the fast path) < ``settings`` <
``inputs`` < ``tools`` < ``pipeline`` < ``ops`` < ``host`` < ``cli``.
"""

from __future__ import annotations

from bootstrap.host.activation import activate, read_manifest
from bootstrap.host.startup import startup
from bootstrap.store.paths import packages_dir

__all__ = [
    "activate",
    "ensure",
    "execute",
    "packages_dir",
    "read_manifest",
    "restart_pending",
    "startup",
    "stop",
    "wait_until_synced",
]
__version__ = "0.1.0"

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays off the start-up fast path
    from typing import Any

    from bootstrap.host.execute import Execution
    from bootstrap.settings import Settings
    from bootstrap.store.manifest import PackageEntry


def ensure(requirement: str, **options: Any) -> PackageEntry:
    """Make ``requirement`` (``"tabulate"``, ``"tabulate>=0.9"``) importable now and after restarts.

    Recorded in the runtime overlay of the packages folder, synced and activated
    in this process; returns the package's manifest entry. ``org="acme"``: in that
    organisation's own set instead (its executions import it; ``bootstrap.execute``). Raises
    ``bootstrap.errors.BootstrapError`` if it cannot be had (the last good set keeps serving).
    """
    from bootstrap.host.ensure import ensure as _ensure  # slow path: threads, a child process

    return _ensure(requirement, **options)


def execute(name: str, input_data: Any, *, org: str | None = None, settings: Settings | None = None) -> Execution:
    """Run workflow ``name`` (``<name>.py`` with ``run(input_data)`` in the repo folder, else its ``workflows``
    subfolder) for the workspace (``org=None``) or an org, and return ``{"workflow", "org", "isolation",
    "generation", "result"}``. An org runs in this process when its set agrees with it, else in a worker
    process for its generation (``"isolation"`` says which). Raises ``bootstrap.errors.WorkflowError``.
    """
    from bootstrap.host.execute import execute as _execute  # slow path: the finder, the worker pool

    return _execute(name, input_data, org=org, settings=settings)


def wait_until_synced(timeout: float | None = None) -> bool:
    """After ``startup(block=False)`` or ``startup(watch=True)``: wait for the first sync; True once done."""
    from bootstrap.host.live import wait_until_synced as _wait  # slow path: threads

    return _wait(timeout)


def restart_pending() -> list[dict[str, Any]]:
    """Distributions this process loaded whose active version has changed since: restart to use the new ones."""
    from bootstrap.host.live import restart_pending as _pending  # slow path: threads

    return _pending()


def stop(timeout: float | None = None) -> None:
    """Stop the watcher thread of ``startup(watch=True)`` (a sync in progress finishes first)."""
    from bootstrap.host.live import stop as _stop  # slow path: threads

    _stop(timeout)
