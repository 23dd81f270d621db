"""Bootstrap inside a running host: background syncs, the watcher thread, generation switches.

``startup(watch=True)`` and ``startup(block=False)`` land here (the plain
``startup()`` fast path never imports this module). In the calling thread this
module uses the standard library and the store layer only; the settings, the
sync and watchdog load in the background threads that need them.

- **Switching.** When a new generation is published, ``switch()`` moves this
  process's ``sys.path`` entry to it and invalidates the import caches, so
  packages added since import at once.
- **Restart pending.** Modules already imported stay what they are: Python
  cannot swap them safely. ``switch()`` looks at what is loaded (every module
  whose file lies in a generation folder, mapped to its distribution through
  the RECORD files) and lists the distributions whose active version is now a
  different one: ``restart_pending()``. ``check`` and the health report show
  the list (for other processes too: a process with a pending restart leaves
  its record in the registry, ``store.registry``, removed when the process exits).
- **Following.** A watching process also follows the manifest: a generation
  published by anyone (another instance, ``bootstrap add``) is switched to.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bootstrap.errors import BootstrapError
from bootstrap.host import activation, state
from bootstrap.host.activation import activate, read_manifest
from bootstrap.host.boot import boot, sources_of
from bootstrap.store import freshness, manifest, records, registry
from bootstrap.store.layout import Layout
from bootstrap.store.records import canonical_name

if TYPE_CHECKING:
    from bootstrap.settings import Settings
    from bootstrap.store.manifest import Inputs, Manifest
    from bootstrap.store.paths import Sources

log = logging.getLogger("bootstrap")

_switching = threading.Lock()  # one switch of sys.path at a time
_starting = threading.Lock()  # the watcher's registration against stop(); the synced event's creation


def start(settings: Settings | None, *, raise_errors: bool, watch: bool, block: bool) -> Manifest | None:
    """``startup()`` with a watcher thread (``watch``) and/or without waiting for a needed sync (``block=False``).

    Like ``startup()``, it never raises unless ``raise_errors``: a bad setting or a folder that cannot be
    watched is logged (one line) and the last good generation serves. With ``block=False`` a failed sync is
    only logged, whatever ``raise_errors`` says (the caller has moved on). With ``raise_errors`` the settings
    are read, and the watcher started, in the calling thread, so that their errors can be raised.
    """
    if watch:
        stop()  # one watcher per process: a new start replaces the old one
    state.current().stopping = False
    synced = _synced()
    synced.clear()
    try:
        if settings is None and raise_errors:  # the caller wants a bad setting raised, here and now
            from bootstrap.settings import load_settings  # slow path: pydantic, asked for

            settings = load_settings()
        sources = sources_of(settings)
        if block:
            current = boot(settings, raise_errors=raise_errors)
            fresh = True  # synced just now (or failed, and recorded: the watcher need not repeat it)
        else:
            current = manifest.read(sources.manifest_file)
            fresh = freshness.is_fresh(current, sources)
        switch(current)  # the last good generation serves at once; the host's record keeps it from gc
        if fresh:
            synced.set()
        if watch:
            _watch(settings, sources, needed=not fresh, raise_errors=raise_errors)
        elif not fresh:
            _in_background("bootstrap-sync", _background_sync, settings)
        return current
    except Exception as exc:
        if raise_errors:
            raise
        _log_failure("start-up incomplete, serving the last good generation", exc)
        synced.set()
        packages_dir = settings.packages_dir if settings is not None else None
        activate(packages_dir)
        return read_manifest(packages_dir)


def wait_until_synced(timeout: float | None = None) -> bool:
    """Wait for the sync that ``startup(block=False)`` (or the watcher's first sync) started; True once done."""
    return _synced().wait(timeout)


def stop(timeout: float | None = None) -> None:
    """Stop the watcher thread (a sync in progress finishes first) and wait for background work.

    ``timeout`` bounds the whole wait. A watcher still starting up is waited for (its errors are told),
    then stopped; one that has not started when the time is up never starts.
    """
    host = state.current()
    with _starting:
        background, host.background = host.background, []
    deadline = None if timeout is None else time.monotonic() + timeout

    def left() -> float | None:
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    for thread in background:
        thread.join(left())
    with _starting:
        host.stopping = True
        watcher, host.watcher = host.watcher, None
    if watcher is not None:
        watcher.stop(left())


def _synced() -> threading.Event:
    """Set once the first sync after start-up has finished; one per process, never replaced (waiters keep it)."""
    host = state.current()
    with _starting:
        if host.synced is None:
            host.synced = threading.Event()
        return host.synced


def switch(current: Manifest | None) -> str | None:
    """Put ``current``'s generation on ``sys.path`` (replacing this process's older entry); note what is stale."""
    with _switching:
        host = state.current()
        target = freshness.usable_site(current)
        if current is None or target is None:
            return None
        if target == host.noted == host.site_dir and target in sys.path:
            return target  # already there and noted: nothing to move, nothing new to note
        _note_restart_pending(Path(target), current)  # first: whoever sees the new path sees the list too
        host.noted = target
        site_dir = activation.activate_manifest(current)
        importlib.invalidate_caches()
        return site_dir


def restart_pending() -> list[dict[str, Any]]:
    """Loaded distributions whose active version changed: ``[{"name", "loaded", "active"}]`` (active None: gone)."""
    return [dict(item) for item in state.current().pending]


def _in_background(name: str, target: Callable[..., None], *args: Any, **kwargs: Any) -> None:
    thread = threading.Thread(target=target, args=args, kwargs=kwargs, name=name, daemon=True)
    with _starting:
        state.current().background.append(thread)
    thread.start()


def _log_failure(what: str, exc: Exception) -> None:
    if isinstance(exc, BootstrapError):
        log.error("%s: %s", what, exc)
    else:
        log.error("%s", what, exc_info=exc)


def _background_sync(settings: Settings | None) -> None:
    from bootstrap.pipeline.sync import sync  # slow path: the pipeline, in a background thread
    from bootstrap.settings import load_settings  # slow path: pydantic, in a background thread

    try:
        switch(sync(settings if settings is not None else load_settings()).manifest)
    except Exception as exc:
        _log_failure("sync failed, serving the last good generation", exc)
    finally:
        _set_synced()


def _watch(settings: Settings | None, sources: Sources, *, needed: bool, raise_errors: bool) -> None:
    """Start the watcher: in a background thread, or here when errors are to be raised.

    The key files are hashed now: if they differ once the watcher's observer runs, an edit came
    in between (after ``startup()`` returned, before events were seen), and the watcher syncs.
    """
    seen = freshness.inputs_of(sources)
    if raise_errors:
        _start_watcher(settings, sources, seen, needed=needed, raise_errors=True)
    else:
        _in_background("bootstrap-watch-start", _start_watcher, settings, sources, seen, needed=needed)


def _start_watcher(
    settings: Settings | None, sources: Sources, seen: Inputs, *, needed: bool, raise_errors: bool = False
) -> None:
    """Load the settings and watchdog, start the watcher (``needed``: its first act is the sync start-up skipped)."""
    from bootstrap.host.watch import Watcher  # slow path: watchdog
    from bootstrap.pipeline.sync import SyncResult  # slow path
    from bootstrap.settings import load_settings  # slow path: pydantic

    def on_synced(outcome: SyncResult | BootstrapError) -> None:
        if isinstance(outcome, SyncResult):
            switch(outcome.manifest)
        _set_synced()

    chosen: Settings | None = settings
    try:
        chosen = settings if settings is not None else load_settings()
        watcher = Watcher(chosen, on_synced, initial_sync=needed, follow=switch)
        with _starting:
            if state.current().stopping:  # stop() came first: this watcher never starts
                _set_synced()
                return
            watcher.start()
            state.current().watcher = watcher
    except (BootstrapError, OSError) as exc:  # no requirements folder yet, a bad setting: serve, say why
        if raise_errors:
            raise
        log.error("not watching for changes: %s", exc)
        if needed and chosen is not None:  # the sync that was needed still runs (not on a bad setting)
            _background_sync(chosen)
        _set_synced()
        return
    except Exception as exc:
        if raise_errors:
            raise
        _log_failure("not watching for changes", exc)
        _set_synced()
        return
    if not needed and freshness.inputs_of(sources) != seen:
        watcher.request_sync()


def _set_synced() -> None:
    synced = state.current().synced
    if synced is not None:
        synced.set()


def _note_restart_pending(active_site: Path, current: Manifest) -> None:
    """Recompute which loaded distributions the active generation now has in another version (or not at all),
    and which older generations this process still runs modules from."""
    host = state.current()
    generations = active_site.parent.parent  # <packages>/generations/<id>/site
    active: dict[str, Any] = {
        canonical_name(str(package.get("name", ""))): package.get("version") for package in current.get("packages", [])
    }
    loaded_from: dict[Path, set[str]] = {}
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if not isinstance(file, str) or not file.startswith(str(generations) + os.sep):
            continue
        relative = Path(file).relative_to(generations)
        if len(relative.parts) < 3 or relative.parts[1] != "site":
            continue
        site = generations / relative.parts[0] / "site"
        if site != active_site:
            loaded_from.setdefault(site, set()).add("/".join(relative.parts[2:]))
    pending: dict[str, dict[str, Any]] = {}
    for site, files in loaded_from.items():
        try:
            dists = records.installed(site)
        except (BootstrapError, OSError):  # a damaged dist-info: nothing to tell of it
            continue
        for dist in dists:
            if dist.name in pending or not files.intersection(dist.files):
                continue
            now = active.get(dist.name)
            if now != dist.version:
                pending[dist.name] = {"name": dist.display_name, "loaded": dist.version, "active": now}
    now_pending = sorted(pending.values(), key=lambda item: str(item["name"]).lower())
    changed = now_pending != host.pending
    host.pending[:] = now_pending
    if host.pending and changed:
        log.warning(
            "restart pending: loaded %s; the active generation has other versions",
            ", ".join(f"{item['name']} {item['loaded']}" for item in host.pending),
        )
    _report(Layout(generations.parent), sorted({active_site.parent.name, *(site.parent.name for site in loaded_from)}))


def _report(layout: Layout, in_use: list[str]) -> None:
    """Leave this process's record where ``check`` and garbage collection in other processes find it."""
    try:
        state.current().record = registry.write_record(layout, state.current().pending, in_use)
    except OSError as exc:  # only a report: never fail a switch over it
        log.debug("could not write this process's record in %s: %s", layout.processes, exc)


@atexit.register
def _clear_report() -> None:
    record = state.current().record
    if record is not None:
        record.unlink(missing_ok=True)
