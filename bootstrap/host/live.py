"""Bootstrap inside a running host: background syncs, the watcher thread, generation switches.

``startup(watch=True)`` and ``startup(block=False)`` land here (the plain
``startup()`` fast path never imports this module). This module uses the
standard library and the store layer only: syncs and the watcher run as
``python -m bootstrap`` children (``host.child``), so the host never imports
bootstrap's tools (a generation may hold a user's own version of them).

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
- **Following.** A watching process also follows the manifest (a thread that
  polls it): a generation published by anyone (its watcher child, another
  instance, ``bootstrap add``) is switched to.
"""

from __future__ import annotations

import atexit
import importlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bootstrap.errors import BootstrapError, SettingsError
from bootstrap.host import activation, child, state
from bootstrap.host.activation import activate, read_manifest
from bootstrap.host.boot import boot, sources_of
from bootstrap.store import freshness, manifest, records, registry
from bootstrap.store.layout import Layout
from bootstrap.store.records import canonical_name

if TYPE_CHECKING:
    import subprocess

    from bootstrap.settings import Settings
    from bootstrap.store.manifest import Manifest
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
        sources = sources_of(settings)
        if block:
            current = boot(settings, raise_errors=raise_errors)
            fresh = True  # synced just now (or failed, and recorded: the watcher need not repeat it)
        else:
            current = manifest.read(sources.manifest_file)
            fresh = freshness.is_fresh(current, sources)
        switch(current, sources.packages_dir)  # the last good generation serves at once; the record keeps it from gc
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


def switch(current: Manifest | None, packages_dir: str | None = None) -> str | None:
    """Put ``current``'s generation on ``sys.path`` (replacing this process's older entry); note what is stale.

    ``packages_dir``: the folder ``current`` was read from (default ``BOOTSTRAP_PACKAGES_DIR``).
    """
    with _switching:
        host = state.current()
        target = freshness.usable_site(current, packages_dir)
        if current is None or target is None:
            return None
        if target == host.noted == host.site_dir and target in sys.path:
            return target  # already there and noted: nothing to move, nothing new to note
        _note_restart_pending(Path(target), current)  # first: whoever sees the new path sees the list too
        host.noted = target
        site_dir = activation.activate_manifest(current, packages_dir)
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
    try:
        child.run(["sync"], settings)
    except Exception as exc:
        _log_failure("sync failed, serving the last good generation", exc)
    finally:
        sources = sources_of(settings)
        switch(manifest.read(sources.manifest_file), sources.packages_dir)
        _set_synced()


def _watch(settings: Settings | None, sources: Sources, *, needed: bool, raise_errors: bool) -> None:
    """Start the watcher child; with ``raise_errors``, wait here until it watches, and raise why it cannot.

    The key files are hashed now and handed to the child (unless it syncs first anyway): if they
    differ once it watches, an edit came in between (after ``startup()`` returned, before its
    events were seen), and it syncs.
    """
    args = ["watch", "--parent", str(os.getpid())]
    if not needed:
        args += ["--no-initial-sync", "--seen", json.dumps(freshness.inputs_of(sources))]
    watcher = _ChildWatcher(settings, sources, args, needed=needed)
    with _starting:  # registered and started in one step: a stop() sees it whole, or not at all
        if state.current().stopping:  # stop() came first: this watcher never starts
            _set_synced()
            return
        state.current().watcher = watcher
        watcher.start()
    if raise_errors:
        watcher.ready.wait()
        if watcher.failure is not None:
            raise watcher.failure


class _ChildWatcher:
    """The host's watcher: a ``python -m bootstrap watch`` child (``host.child``), and a thread here that
    follows the manifest: a generation published by anyone (that child, another instance, ``add``) is
    switched to. Polling one small file (``FOLLOW_SECONDS``): the standard library only, and it works on
    network shares, which deliver no inotify events."""

    def __init__(self, settings: Settings | None, sources: Sources, args: list[str], *, needed: bool) -> None:
        self.settings = settings
        self.manifest_file = sources.manifest_file
        self.packages_dir = sources.packages_dir
        self.args = args
        self.needed = needed
        self.ready = threading.Event()  # watching, or failed (then ``failure`` says why)
        self.failure: BootstrapError | None = None
        self._stopping = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, name="bootstrap-watch", daemon=True),
            threading.Thread(target=self._follow, name="bootstrap-follow", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """End the child (it lets a sync in progress finish) and this side's threads, within ``timeout``.

        A child still starting up is waited for first (within ``timeout``), so that its errors are told.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        self.ready.wait(timeout)
        self._stopping.set()
        with self._lock:
            if self._proc is not None and self._proc.poll() is None:
                self._proc.terminate()  # the watch command's SIGTERM: finish the sync in progress, start none
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        try:
            child.run(self.args, self.settings, on_event=self._on_event, on_start=self._started)
        except Exception as exc:
            if not self._stopping.is_set():
                self.failure = exc if isinstance(exc, BootstrapError) else BootstrapError(str(exc))
                _log_failure("not watching for changes", exc)
                # The sync start-up skipped still runs (a folder it cannot watch), unless no setting could be read.
                if self.needed and not isinstance(exc, SettingsError):
                    _background_sync(self.settings)
        finally:
            self._stopping.set()
            self.ready.set()
            _set_synced()

    def _started(self, proc: subprocess.Popen[str]) -> None:
        with self._lock:
            self._proc = proc
            if self._stopping.is_set():
                proc.terminate()

    def _on_event(self, event: dict[str, Any]) -> None:
        if event.get("event") == "ready":
            self.ready.set()
            if not self.needed:
                _set_synced()
        elif event.get("event") == "synced":
            switch(manifest.read(self.manifest_file), self.packages_dir)
            _set_synced()

    def _follow(self) -> None:
        seen: tuple[int, int, int] | None = (
            None  # never the manifest read before: one published meanwhile is switched to at the first look
        )
        while not self._stopping.wait(FOLLOW_SECONDS):
            now = _signature(self.manifest_file)
            if now != seen:
                seen = now
                try:
                    switch(manifest.read(self.manifest_file), self.packages_dir)
                except Exception as exc:  # never end the host's following over one bad read
                    _log_failure("could not follow the manifest", exc)


FOLLOW_SECONDS = 0.5  # how often a watching host looks whether the manifest changed (one stat call)


def _signature(path: str) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


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
