"""``watch``: sync now, then again whenever the requirements file changes.

Why it looks like this:

- Editors and git save by writing a temporary file and renaming it over the
  old one, so the *folder* is watched (a watch on the file itself would follow
  the replaced inode and go deaf) and an event counts when either its source
  or its destination is the requirements file (or the committed lock beside it).
- A save is a burst of events (created, modified, moved, closed). The watchdog
  handler only raises a "dirty" flag and returns; one worker thread waits for
  ``watch_debounce`` seconds of quiet and then runs one sync. Edits made during
  a sync raise the flag again, which means exactly one more sync after it, and
  never two at once.
- A failed sync is one log line; ``sync()`` already recorded it in the manifest
  beside the generation that keeps serving, and the next edit that fixes the
  file recovers without a restart.
- Network shares deliver no inotify events: ``watch_polling`` switches to
  watchdog's ``PollingObserver``.
- SIGTERM and Ctrl-C only set a flag (nothing that takes a lock runs inside a
  signal handler); the main loop sees it, lets a sync in progress finish, starts
  no new one and returns 0. ``Watcher`` is the same machinery without signal
  handlers, for a host that watches from a background thread.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from watchdog.events import (
    EVENT_TYPE_CLOSED_NO_WRITE,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_MOVED,
    EVENT_TYPE_OPENED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from bootstrap.errors import BootstrapError, StorageError, redact
from bootstrap.inputs import legacy, orgs
from bootstrap.pipeline import sync_all
from bootstrap.pipeline.sync import SyncResult, sync
from bootstrap.settings import Settings
from bootstrap.store import freshness, manifest, safety

if TYPE_CHECKING:
    from bootstrap.store.manifest import Inputs, Manifest

log = logging.getLogger("bootstrap")

#: Called after every sync with its result, or with the ``BootstrapError`` it raised.
OnSynced = Callable[[SyncResult | BootstrapError], None]
#: Called with the manifest whenever it is rewritten (by this process or any other).
OnManifest = Callable[["Manifest | None"], object]

_IGNORED_EVENTS = frozenset({EVENT_TYPE_OPENED, EVENT_TYPE_CLOSED_NO_WRITE})


def _key(path: str | bytes | os.PathLike[str]) -> str:
    return os.path.normcase(os.path.abspath(os.fsdecode(path)))


class _Flag(Protocol):
    def set(self) -> None: ...


class _WorkspaceChanged:
    """The dirty flag raised for the workspace's own files: the next sync is of everything (the organisations'
    sets are built on the workspace's), not of the changed organisations alone."""

    def __init__(self, dirty: threading.Event, workspace: threading.Event) -> None:
        self._dirty, self._workspace = dirty, workspace

    def set(self) -> None:
        self._workspace.set()
        self._dirty.set()


class _Handler(FileSystemEventHandler):
    """Raise the dirty flag when an event touches one of the watched files; return at once."""

    def __init__(self, watched: frozenset[str], dirty: _Flag) -> None:
        self._watched = watched
        self._dirty = dirty

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type in _IGNORED_EVENTS:
            return
        paths = [event.src_path, event.dest_path] if event.dest_path else [event.src_path]
        if any(_key(p) in self._watched for p in paths):
            self._dirty.set()


class _LegacyHandler(FileSystemEventHandler):
    """Raise the dirty flag when a ``*.dist-info`` folder appears at the packages folder's top level
    (``pip install --target`` moves each one there from its temporary folder, or creates it)."""

    def __init__(self, root: Path, dirty: _Flag) -> None:
        self._root = _key(root)
        self._dirty = dirty

    def on_any_event(self, event: FileSystemEvent) -> None:
        if not event.is_directory or event.event_type not in (EVENT_TYPE_CREATED, EVENT_TYPE_MOVED):
            return
        path = _key(event.dest_path or event.src_path)
        if path.endswith(".dist-info") and os.path.dirname(path) == self._root:
            self._dirty.set()


class _OrgsHandler(FileSystemEventHandler):
    """Note which organisation's folder an event touched (its file, an included one, its lock) and raise the
    dirty flag: the next sync is of those organisations alone."""

    def __init__(self, settings: Settings, changed: set[str], lock: threading.Lock, dirty: threading.Event) -> None:
        self._settings, self._changed, self._lock, self._dirty = settings, changed, lock, dirty

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in _IGNORED_EVENTS:
            return
        paths = [event.src_path, event.dest_path] if event.dest_path else [event.src_path]
        touched = {org for org in (orgs.org_of(Path(os.fsdecode(p)), self._settings) for p in paths) if org}
        if touched:
            with self._lock:
                self._changed.update(touched)
            self._dirty.set()


class _OrgsFolderArrives:
    """Watches the organisations' folder (``start``) once it exists, the first time it is seen."""

    def __init__(self, folder: Path, start: Callable[[], object]) -> None:
        self.folder, self._start, self._started = _key(folder), start, False

    def arrived(self) -> bool:
        """True the once the folder is found there (watched from then on)."""
        if self._started or not os.path.isdir(self.folder):
            return False
        self._started = True
        self._start()
        return True


class _OrgsFolderHandler(FileSystemEventHandler):
    """In the folder that will hold the organisations' folder: when it comes, watch it and sync everything."""

    def __init__(self, arrival: _OrgsFolderArrives, workspace_changed: _Flag) -> None:
        self._arrival, self._workspace_changed = arrival, workspace_changed

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in _IGNORED_EVENTS:
            return
        paths = [event.src_path, event.dest_path] if event.dest_path else [event.src_path]
        if any(_key(p) == self._arrival.folder for p in paths) and self._arrival.arrived():
            self._workspace_changed.set()


class _ManifestHandler(FileSystemEventHandler):
    """Hand the manifest to ``follow`` whenever it is replaced (atomic writes: a rename onto it)."""

    def __init__(self, manifest_path: Path, follow: OnManifest) -> None:
        self._manifest = manifest_path
        self._key = _key(manifest_path)
        self._follow = follow

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type in _IGNORED_EVENTS:
            return
        paths = [event.src_path, event.dest_path] if event.dest_path else [event.src_path]
        if any(_key(p) == self._key for p in paths):
            try:
                self._follow(manifest.read(self._manifest))
            except Exception:  # the observer thread must survive a bad callback
                log.exception("following the manifest failed")


class Watcher:
    """Sync once, then after every burst of changes to the requirements file (or its committed lock, or
    the runtime overlay in the state folder, or a new distribution at the packages folder's top level).

    ``start()`` returns at once; ``stop()`` lets a sync in progress finish, starts
    no new one and joins every thread. Also a context manager. No signal handlers.
    ``follow`` (a host's watcher) is called with the manifest whenever anyone publishes.
    """

    def __init__(
        self,
        settings: Settings,
        on_synced: OnSynced | None = None,
        *,
        initial_sync: bool = True,
        follow: OnManifest | None = None,
    ) -> None:
        self.settings = settings
        self.on_synced = on_synced
        self.initial_sync = initial_sync
        self.follow = follow
        self.folder = settings.requirements_file.parent
        watched = {settings.requirements_file}
        if settings.committed_lock_file.parent == self.folder:
            watched.add(settings.committed_lock_file)
        self._watched = frozenset(_key(p) for p in watched)
        self._layout = settings.layout
        self._dirty = threading.Event()
        self._workspace_dirty = threading.Event()  # the workspace's files changed: sync everything
        self._changed_orgs: set[str] = set()  # else these organisations' files changed
        self._orgs_lock = threading.Lock()
        self._stopping = threading.Event()
        self._observer: BaseObserver | None = None
        self._worker: threading.Thread | None = None

    def start(self) -> None:
        if self._observer is not None:
            raise RuntimeError("watcher already started")
        if not self.folder.is_dir():
            raise StorageError(f"cannot watch {self.folder}: no such folder")
        observer: BaseObserver = PollingObserver() if self.settings.watch_polling else Observer()
        workspace_changed = _WorkspaceChanged(self._dirty, self._workspace_dirty)
        observer.schedule(_Handler(self._watched, workspace_changed), str(self.folder), recursive=False)
        self._watch_packages_folder(observer, workspace_changed)
        if self.settings.org is None:  # each organisation's file too
            self._watch_orgs_folder(observer, workspace_changed)
        observer.start()  # before the initial sync, so an edit made during it is not missed
        self._observer = observer
        log.info("watching %s for changes to %s", self.folder, self.settings.requirements_file.name)
        self._worker = threading.Thread(target=self._run, name="bootstrap-watch", daemon=True)
        self._worker.start()

    def _watch_orgs_folder(self, observer: BaseObserver, workspace_changed: _Flag) -> None:
        """The organisations' folder, recursively; when there is none yet, its parent, until it comes (then
        everything is synced: the first organisations are found)."""
        folder = self.settings.orgs_folder
        handler = _OrgsHandler(self.settings, self._changed_orgs, self._orgs_lock, self._dirty)
        if folder.is_dir():
            observer.schedule(handler, str(folder), recursive=True)
        elif folder.parent.is_dir():
            arrival = _OrgsFolderArrives(folder, lambda: observer.schedule(handler, str(folder), recursive=True))
            observer.schedule(_OrgsFolderHandler(arrival, workspace_changed), str(folder.parent), recursive=False)

    def _watch_packages_folder(self, observer: BaseObserver, dirty: _Flag) -> None:
        """The runtime overlay in the state folder (a sync when another process edits it), a distribution a
        workflow's ``pip install --target`` leaves at the packages folder's top level (a sync adopts it)
        and, with ``follow``, the manifest."""
        try:
            safety.prepare_packages_dir(self._layout.root, allow_world_writable=self.settings.allow_world_writable)
            legacy.prepare_state_dir(self.settings)
        except BootstrapError as exc:  # the initial sync will say the same, in full
            log.warning("not watching the packages folder: %s", exc)
            return
        overlay = frozenset({_key(self._layout.runtime_requirements)})
        observer.schedule(_Handler(overlay, dirty), str(self._layout.state), recursive=False)
        observer.schedule(_LegacyHandler(self._layout.root, dirty), str(self._layout.root), recursive=False)
        if self.follow is not None:
            observer.schedule(_ManifestHandler(self._layout.manifest, self.follow), str(self._layout.root))

    def stop(self, timeout: float | None = None) -> None:
        """Stop watching; wait for a sync in progress (up to ``timeout`` seconds, default: as long as it takes)."""
        self._stopping.set()
        self._dirty.set()  # wake the worker
        if self._observer is not None:
            self._observer.stop()
            self._observer.join()
        if self._worker is not None:
            self._worker.join(timeout)

    def request_sync(self) -> None:
        """Sync once more, as if the requirements file had just changed (debounced like an edit)."""
        self._dirty.set()

    @property
    def running(self) -> bool:
        return self._worker is not None and self._worker.is_alive()

    def __enter__(self) -> Watcher:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _run(self) -> None:
        if self.initial_sync:
            self._sync_once()
        while not self._stopping.is_set():
            self._dirty.wait()
            while not self._stopping.is_set():  # debounce: until a quiet spell of watch_debounce seconds
                self._dirty.clear()
                if self._stopping.wait(self.settings.watch_debounce) or not self._dirty.is_set():
                    break
            if self._stopping.is_set():
                return
            self._sync_once()

    def _sync_once(self) -> None:
        outcome: SyncResult | BootstrapError | None
        try:
            outcome = self._sync()
        except BootstrapError as exc:
            log.error("sync failed (the last good generation keeps serving): %s", redact(" ".join(str(exc).split())))
            outcome = exc
        except Exception:  # a bug must not end the watch silently
            log.exception("sync crashed; still watching")
            return
        if outcome is None:  # organisations alone: nothing changed for the workspace (and the host) to follow
            return
        if isinstance(outcome, SyncResult) and outcome.changed:
            log.info("synced: generation %s is active", outcome.manifest.get("generation"))
        if self.on_synced is not None:
            try:
                self.on_synced(outcome)
            except Exception:
                log.exception("on_synced callback failed")

    def _sync(self) -> SyncResult | None:
        """The sync the changes call for: the workspace's files (or the first sync): everything, the workspace
        first; only organisations' files: those organisations (None); an organisation's watch: its own."""
        with self._orgs_lock:
            changed_orgs, workspace = sorted(self._changed_orgs), self._workspace_dirty.is_set()
            self._changed_orgs.clear()
            self._workspace_dirty.clear()
        if self.settings.org is not None:
            return sync(self.settings)
        if workspace or not changed_orgs:
            everything = sync_all.sync_everything(self.settings)
            for line in everything.failed[1 if everything.workspace_error else 0 :]:
                log.error("sync failed (the last good generation keeps serving): %s", line)
            if everything.workspace_error is not None:
                raise everything.workspace_error
            return everything.workspace
        present = orgs.discover(self.settings).orgs
        for outcome in sync_all.sync_orgs(self.settings, [org for org in changed_orgs if org in present]):
            if outcome.error is not None:
                log.error(
                    "org %s: sync failed (its last good generation keeps serving): %s", outcome.org, outcome.error
                )
        sync_all.remove_departed(self.settings, present)
        return None


def _cannot_watch(folder: Path, exc: OSError) -> str:
    why = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EMFILE):  # inotify's limits, not the disk
        return (
            f"cannot watch {folder}: {why} (the inotify limits): raise fs.inotify.max_user_watches and "
            "fs.inotify.max_user_instances, or set BOOTSTRAP_WATCH_POLLING=true"
        )
    return f"cannot watch {folder}: {why}"


def watch(
    settings: Settings,
    *,
    initial_sync: bool = True,
    seen: Inputs | None = None,
    parent: int | None = None,
    on_event: Callable[[dict[str, object]], None] | None = None,
) -> int:
    """The ``watch`` command: run a ``Watcher`` until SIGTERM or Ctrl-C; 0 then. A folder it cannot watch raises.

    A host's watcher (``host.live``) gives ``on_event`` (``ready`` once watching, ``synced`` after each
    sync), ``parent`` (the host: the watch ends when it has gone) and, without the first sync,
    ``seen``: the files' hashes at the host's start-up; if they differ once watching, an edit came in
    between and it syncs.
    """
    requested: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        requested.append(signum)  # no locks in a signal handler: the main loop polls this

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)

    def on_synced(outcome: SyncResult | BootstrapError) -> None:
        if on_event is not None:
            on_event({"event": "synced", "ok": isinstance(outcome, SyncResult)})

    watcher = Watcher(settings, on_synced, initial_sync=initial_sync)
    try:
        try:
            watcher.start()
        except OSError as exc:
            raise StorageError(_cannot_watch(watcher.folder, exc)) from None
        if on_event is not None:
            on_event({"event": "ready"})
        if seen is not None and not initial_sync and freshness.inputs_of(settings.sources) != seen:
            watcher.request_sync()
        while not requested and watcher.running and (parent is None or os.getppid() == parent):
            time.sleep(0.2)
        log.info("stopping: a sync in progress finishes first")
    except KeyboardInterrupt:
        log.info("interrupted: a sync in progress finishes first")
    finally:
        watcher.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0
