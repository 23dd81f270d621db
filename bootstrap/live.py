"""Bootstrap inside a running host: background syncs, the watcher thread, generation switches.

``startup(watch=True)`` and ``startup(block=False)`` land here (the plain
``startup()`` fast path never imports this module).

- **Switching.** When a new generation is published, ``switch()`` moves this
  process's ``sys.path`` entry to it and invalidates the import caches, so
  packages added since import at once.
- **Restart pending.** Modules already imported stay what they are: Python
  cannot swap them safely. ``switch()`` looks at what is loaded (every module
  whose file lies in a generation folder, mapped to its distribution through
  the RECORD files) and lists the distributions whose active version is now a
  different one: ``restart_pending()``. ``check`` and the health report show
  the list (for other processes too: a process with a pending restart leaves
  ``processes/<host>-<pid>.json`` in the packages folder, removed when the
  list empties or the process exits).
- **Following.** A watching process also follows the manifest: a generation
  published by anyone (another instance, ``bootstrap add``) is switched to.
"""

from __future__ import annotations

import atexit
import importlib
import json
import logging
import os
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from bootstrap import activation, manifest
from bootstrap._fs import atomic_write_text
from bootstrap.errors import BootstrapError
from bootstrap.layout import Layout
from bootstrap.settings import Settings, load_settings

log = logging.getLogger("bootstrap")

_switching = threading.Lock()
_state: dict[str, Any] = {"watcher": None, "background": None}
_synced = threading.Event()  # the sync startup(block=False) or the watcher's first sync started has finished
_pending: list[dict[str, Any]] = []


def start(settings: Settings | None, *, raise_errors: bool, watch: bool, block: bool) -> dict[str, Any] | None:
    """``startup()`` with a watcher thread (``watch``) and/or without waiting for a needed sync (``block=False``).

    Like ``startup()``, it never raises unless ``raise_errors``: a bad setting or a folder that cannot be
    watched is logged (one line) and the last good generation serves. With ``block=False`` a failed sync is
    only logged, whatever ``raise_errors`` says (the caller has moved on).
    """
    try:
        return _start(settings, raise_errors=raise_errors, watch=watch, block=block)
    except Exception as exc:
        if raise_errors:
            raise
        if isinstance(exc, BootstrapError):
            log.error("start-up incomplete, serving the last good generation: %s", exc)
        else:
            log.exception("start-up failed unexpectedly, serving the last good generation")
        _synced.set()
        packages_dir = settings.packages_dir if settings is not None else None
        activation.activate(packages_dir)
        return activation.read_manifest(packages_dir)


def _start(settings: Settings | None, *, raise_errors: bool, watch: bool, block: bool) -> dict[str, Any] | None:
    settings = settings if settings is not None else load_settings()
    _synced.clear()
    if block:
        current = activation.startup(settings, raise_errors=raise_errors)
        switch(current)  # records the generation this host runs on, so no other process's gc removes it
        _synced.set()
        if watch:
            _start_watcher(settings, initial_sync=False)
        return current
    layout = Layout(settings.packages_dir)
    current = manifest.read(layout.manifest)
    fresh = current is not None and current.get("status") == "ok" and not _stale(current, settings, layout)
    switch(current)  # the last good generation serves at once, fresh or not
    if fresh:
        _synced.set()
        if watch:
            _start_watcher(settings, initial_sync=False)
    elif watch:
        _start_watcher(settings, initial_sync=True)  # its first sync is the one needed
    else:
        _start_background_sync(settings)
    return current


def _start_background_sync(settings: Settings) -> None:
    thread = threading.Thread(target=_background_sync, args=(settings,), name="bootstrap-sync", daemon=True)
    _state["background"] = thread
    thread.start()


def wait_until_synced(timeout: float | None = None) -> bool:
    """Wait for the sync that ``startup(block=False)`` (or the watcher's first sync) started; True once done."""
    return _synced.wait(timeout)


def stop(timeout: float | None = None) -> None:
    """Stop the watcher thread (a sync in progress finishes first) and wait for a background sync."""
    watcher, background = _state["watcher"], _state["background"]
    _state["watcher"] = _state["background"] = None
    if watcher is not None:
        watcher.stop(timeout)
    if background is not None:
        background.join(timeout)


def switch(current: dict[str, Any] | None) -> str | None:
    """Put ``current``'s generation on ``sys.path`` (replacing this process's older entry); note what is stale."""
    with _switching:
        target = activation.usable_site(current)
        if current is None or target is None:
            return None
        if target == _state.get("noted") == activation._active_site_dir and target in sys.path:
            return target  # already there and noted: nothing to move, nothing new to note
        _note_restart_pending(Path(target), current)  # first: whoever sees the new path sees the list too
        _state["noted"] = target
        site_dir = activation._activate(current)
        importlib.invalidate_caches()
        return site_dir


def restart_pending() -> list[dict[str, Any]]:
    """Loaded distributions whose active version changed: ``[{"name", "loaded", "active"}]`` (active None: gone)."""
    return [dict(item) for item in _pending]


def process_records(layout: Layout, *, include_self: bool = False) -> list[dict[str, Any]]:
    """What running hosts using ``layout`` reported: ``{"pid", "host", "since", "packages", "generations"}``.

    ``packages``: their restart-pending list; ``generations``: older generations they still run modules
    from. Records of dead processes on this machine are removed on the way.
    """
    found: list[dict[str, Any]] = []
    if not layout.processes.is_dir():
        return found
    here = socket.gethostname()
    for path in sorted(layout.processes.glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            pid, host = int(record["pid"]), str(record["host"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if host == here and not _alive(pid):
            path.unlink(missing_ok=True)  # it restarted (or died): nothing is pending any more
            continue
        if host == here and pid == os.getpid() and not include_self:
            continue
        found.append(record)
    return found


def generations_in_use(layout: Layout, *, max_age_days: float = 7.0) -> frozenset[str]:
    """Older generations that running hosts still import from: garbage collection keeps them.

    A record from another machine cannot be checked for life; it counts for ``max_age_days`` after its
    last update (a host that crashed there must not pin a generation on the share for ever).
    """
    from datetime import UTC, datetime, timedelta

    here = socket.gethostname()
    oldest = datetime.now(UTC) - timedelta(days=max_age_days)
    in_use: set[str] = set()
    for record in process_records(layout, include_self=True):
        if record.get("host") != here:
            try:
                since = datetime.fromisoformat(str(record.get("since")).replace("Z", "+00:00"))
            except ValueError:
                continue
            if since < oldest:
                continue
        in_use.update(str(generation) for generation in record.get("generations", []))
    return frozenset(in_use)


def _background_sync(settings: Settings) -> None:
    from bootstrap.sync import sync

    try:
        switch(sync(settings).manifest)
    except BootstrapError as exc:
        log.error("sync failed, serving the last good generation: %s", exc)
    except Exception:
        log.exception("sync failed unexpectedly, serving the last good generation")
    finally:
        _synced.set()


def _start_watcher(settings: Settings, *, initial_sync: bool) -> None:
    from bootstrap.sync import SyncResult
    from bootstrap.watch import Watcher

    def on_synced(outcome: SyncResult | BootstrapError) -> None:
        if isinstance(outcome, SyncResult):
            switch(outcome.manifest)
        _synced.set()

    stop()
    watcher = Watcher(settings, on_synced, initial_sync=initial_sync, follow=switch)
    try:
        watcher.start()
    except (BootstrapError, OSError) as exc:  # no requirements folder yet, say: serve, say why not watching
        log.error("not watching for changes: %s", exc)
        if initial_sync:  # the sync that was needed still runs
            _start_background_sync(settings)
        else:
            _synced.set()
        return
    _state["watcher"] = watcher


def _stale(current: dict[str, Any], settings: Settings, layout: Layout) -> bool:
    return (
        activation.stale_reason(
            current, settings.requirements_file, settings.committed_lock_file, layout.runtime_requirements
        )
        is not None
    )


def _note_restart_pending(active_site: Path, current: dict[str, Any]) -> None:
    """Recompute which loaded distributions the active generation now has in another version (or not at all),
    and which older generations this process still runs modules from."""
    from bootstrap import verify

    generations = active_site.parent.parent  # <packages>/generations/<id>/site
    active: dict[str, Any] = {
        canonicalize_name(str(package.get("name", ""))): package.get("version")
        for package in current.get("packages", [])
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
            dists = verify.installed(site)
        except (BootstrapError, OSError):
            continue
        for dist in dists:
            if dist.name in pending or not files.intersection(dist.files):
                continue
            now = active.get(dist.name)
            if now != dist.version:
                pending[dist.name] = {"name": dist.display_name, "loaded": dist.version, "active": now}
    now_pending = sorted(pending.values(), key=lambda item: str(item["name"]).lower())
    changed = now_pending != _pending
    _pending[:] = now_pending
    if _pending and changed:
        log.warning(
            "restart pending: loaded %s; the active generation has other versions",
            ", ".join(f"{item['name']} {item['loaded']}" for item in _pending),
        )
    _report(Layout(generations.parent), sorted({active_site.parent.name, *(site.parent.name for site in loaded_from)}))


def _report(layout: Layout, in_use: list[str]) -> None:
    """Leave this process's record where ``check`` and garbage collection in other processes find it: its
    restart-pending list, and the generations it runs on (the active one, older ones it still imports from).
    Removed when the process exits."""
    path = layout.processes / f"{socket.gethostname()}-{os.getpid()}.json"
    try:
        path.parent.mkdir(mode=0o700, exist_ok=True)
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": manifest.now_iso(),
            "packages": _pending,
            "generations": in_use,
        }
        atomic_write_text(path, json.dumps(record, indent=2) + "\n")
        _state["report"] = path
    except OSError as exc:  # only a report: never fail a switch over it
        log.debug("could not write %s: %s", path, exc)


@atexit.register
def _clear_report() -> None:
    path = _state.get("report")
    if isinstance(path, Path):
        path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
