"""Put the active generation on ``sys.path``; the start-up fast path.

When nothing changed, start-up reads one small JSON file, hashes the files
the generation was built from, edits ``sys.path`` and starts no process.
Nothing heavy is imported here: pydantic, pip-tools and the sync machinery
wait for the slow path (``startup`` imports them only when a sync is needed).
"""

from __future__ import annotations

import os
import sys

from bootstrap import manifest as manifest_mod
from bootstrap._fs import file_sha256
from bootstrap._paths import (
    DEFAULT_PACKAGES_DIR,
    DEFAULT_REQUIREMENTS_FILE,
    MANIFEST_NAME,
    RUNTIME_REQUIREMENTS_NAME,
    default_lock_file,
    env_path,
)

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and pathlib stay off the fast path
    import logging
    from typing import Any

    from bootstrap.settings import Settings

# The generation folder this process put on sys.path (None until activate()).
_active_site_dir: str | None = None
_active_first = False  # whether it went before the host's site-packages


def _logger() -> logging.Logger:
    import logging

    return logging.getLogger("bootstrap")


def _packages_dir(packages_dir: str | os.PathLike[str] | None) -> str:
    if packages_dir is None:
        return env_path("packages_dir", DEFAULT_PACKAGES_DIR)
    return os.path.abspath(packages_dir)


def read_manifest(packages_dir: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """The manifest of ``packages_dir`` (default: ``BOOTSTRAP_PACKAGES_DIR``), or None if absent or damaged."""
    return manifest_mod.read(os.path.join(_packages_dir(packages_dir), MANIFEST_NAME))


def stale_reason(
    manifest: dict[str, Any] | None,
    requirements_file: str | os.PathLike[str],
    lock_file: str | os.PathLike[str] | None = None,
    runtime_file: str | os.PathLike[str] | None = None,
) -> str | None:
    """Why the active generation does not serve ``requirements_file`` (and ``lock_file``) as they are now.

    None when it does. ``lock_file`` defaults to ``requirements.lock`` beside the requirements file;
    ``runtime_file`` is the overlay of packages added at run time (in the packages folder): it must be recorded.
    """
    if manifest is None or not manifest.get("site_dir"):
        return "never synced"
    requirements_file = os.fspath(requirements_file)
    if manifest.get("requirements_file") != requirements_file:
        return f"the requirements file is now {requirements_file} (built from {manifest.get('requirements_file')})"
    inputs = manifest.get("inputs")
    if not isinstance(inputs, dict) or not inputs:
        return "the manifest does not record what it was built from"
    lock_file = os.fspath(lock_file) if lock_file is not None else default_lock_file(requirements_file)
    if lock_file not in inputs:
        return f"the lock file is now {lock_file}"
    if runtime_file is not None and os.fspath(runtime_file) not in inputs:
        return "the manifest does not record the packages added at run time"
    for path, sha256 in inputs.items():
        if file_sha256(path) != sha256:
            return f"{path} changed since the last sync"
    if not manifest_mod.built_for_this_interpreter(manifest.get("python")):
        python = manifest.get("python") or {}
        return (
            f"the active generation was built for Python {python.get('version')} ({python.get('tag')}, "
            f"{python.get('platform')}), not this interpreter"
        )
    if not os.path.isdir(manifest["site_dir"]):
        return f"the active generation's folder {manifest['site_dir']} is missing"
    return None


def activate(packages_dir: str | os.PathLike[str] | None = None) -> str | None:
    """Put the active generation's folder on ``sys.path``; return it (None if there is none).

    Idempotent. The generation goes *after* the host's own site-packages (the
    host comes first), through ``site.addsitedir`` so ``.pth`` files work. A
    generation built for another interpreter is never activated. If this
    process had activated an older generation, its entry is replaced. A
    generation that overrides host packages (an operator's choice) goes first.
    """
    return _activate(read_manifest(packages_dir))


def _activate(manifest: dict[str, Any] | None) -> str | None:
    site_dir = usable_site(manifest)
    if manifest is None or site_dir is None:
        return None
    _put_on_path(site_dir, first=bool(manifest.get("overrides")))
    return site_dir


def usable_site(manifest: dict[str, Any] | None) -> str | None:
    """The manifest's generation folder if this interpreter can use it (else None, with a warning why)."""
    site_dir = manifest.get("site_dir") if manifest else None
    if not manifest or not site_dir:
        return None
    if not manifest_mod.built_for_this_interpreter(manifest.get("python")):
        _logger().warning("not activating %s: it was built for another Python interpreter", site_dir)
        return None
    if not os.path.isdir(site_dir):
        _logger().warning("not activating %s: the folder is missing", site_dir)
        return None
    return str(site_dir)


def _put_on_path(site_dir: str, *, first: bool = False) -> None:
    """After the host's site-packages, unless the generation overrides host packages (an operator's choice).

    A switch from an older generation replaces its entry in one step (a slice
    assignment), so an import in another thread never finds no generation on the path.
    """
    global _active_site_dir, _active_first
    if _active_site_dir == site_dir and site_dir in sys.path:
        return
    old = _active_site_dir if _active_site_dir is not None and _active_site_dir in sys.path else None
    import site

    if old is not None and first == _active_first:
        sys.path[:] = [site_dir if entry == old else entry for entry in sys.path if entry != site_dir]
    elif first:
        sys.path[:] = [site_dir, *(entry for entry in sys.path if entry not in (old, site_dir))]
    elif old is not None:
        sys.path.remove(old)  # moving from first to last place: rare (an operator's override setting changed)
    site.addsitedir(site_dir)  # appends it if not there yet; reads its .pth files either way
    _active_site_dir, _active_first = site_dir, first


def startup(
    settings: Settings | None = None, *, raise_errors: bool = False, watch: bool = False, block: bool = True
) -> dict[str, Any] | None:
    """Sync if needed, then activate; return the manifest.

    The fast path (nothing changed) starts no process and imports nothing
    heavy. When a sync is needed and fails, the failure is logged and recorded
    in the manifest, and the last good generation is activated anyway, so the
    host keeps serving; pass ``raise_errors=True`` to get the error instead.

    ``watch=True`` keeps a watcher thread that syncs whenever the requirements
    file changes and moves this process to every new generation.
    ``block=False`` activates the last good generation and returns at once; a
    needed sync runs in a background thread (``bootstrap.wait_until_synced()``).
    """
    if watch or not block:
        from bootstrap import live

        return live.start(settings, raise_errors=raise_errors, watch=watch, block=block)
    if settings is None:
        requirements_file = env_path("requirements_file", DEFAULT_REQUIREMENTS_FILE)
        packages_dir = _packages_dir(None)
        lock_file = env_path("lock_file", default_lock_file(requirements_file))
    else:
        requirements_file, packages_dir = str(settings.requirements_file), str(settings.packages_dir)
        lock_file = str(settings.committed_lock_file)
    manifest = read_manifest(packages_dir)
    if (
        manifest is not None
        and manifest.get("status") == "ok"
        and stale_reason(manifest, requirements_file, lock_file, os.path.join(packages_dir, RUNTIME_REQUIREMENTS_NAME))
        is None
    ):
        _activate(manifest)  # the manifest just read: the fast path reads it once
        return manifest

    from bootstrap.errors import BootstrapError
    from bootstrap.settings import load_settings
    from bootstrap.sync import sync

    try:
        sync(settings if settings is not None else load_settings())
    except BootstrapError as exc:
        if raise_errors:
            raise
        from bootstrap._pipout import redact

        _logger().error("sync failed, serving the last good generation: %s", redact(str(exc)))
    except Exception:  # a bug, or the machine failing: the host must still start on what it has
        if raise_errors:
            raise
        _logger().exception("sync failed unexpectedly, serving the last good generation")
    activate(packages_dir)
    return read_manifest(packages_dir)
