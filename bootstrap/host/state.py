"""What a host process knows about its own bootstrap: one small object, not module globals.

On the fast path: no imports at all (``threading`` and ``pathlib`` are not
loaded for a plain ``startup()``). Tests reset it with ``reset()``.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    import threading
    from pathlib import Path
    from typing import Any


class HostState:
    __slots__ = ("background", "first", "noted", "pending", "record", "site_dir", "stopping", "synced", "watcher")

    def __init__(self) -> None:
        self.site_dir: str | None = None  # the generation folder this process put on sys.path
        self.first = False  # whether it went before the host's site-packages (a host override)
        self.noted: str | None = None  # the generation whose restart-pending list was last computed
        self.pending: list[dict[str, Any]] = []  # loaded distributions whose active version changed
        self.record: Path | None = None  # this process's file in the registry of running hosts
        self.watcher: Any = None  # the Watcher of startup(watch=True), once started
        self.background: list[threading.Thread] = []  # background syncs and watcher start-ups
        self.synced: threading.Event | None = None  # set once the first background sync has finished
        self.stopping = False  # stop() was called: a watcher still starting up must not start


_current = HostState()


def current() -> HostState:
    return _current


def reset() -> HostState:
    """A fresh state (tests): this process's registry record is removed; ``sys.path`` is the caller's to restore."""
    global _current
    record = _current.record
    if record is not None:
        record.unlink(missing_ok=True)
    _current = HostState()
    return _current
