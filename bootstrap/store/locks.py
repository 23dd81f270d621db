"""The inter-process locks beside the manifest: the one wrapper around filelock.

``build_lock``: one builder at a time (a waiter re-reads the manifest once it
has it). ``overlay_lock``: edits of the runtime overlay, held across the sync
that follows. filelock (fcntl/msvcrt, time-outs) is the one library of the
store layer beyond the standard library; the fast path never takes a lock.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from bootstrap.errors import LockTimeoutError
from bootstrap.store import manifest
from bootstrap.store.fs import atomic_write_text
from bootstrap.store.layout import Layout

log = logging.getLogger("bootstrap")


@contextmanager
def _held(path: Path, timeout: float, *, on_wait: Callable[[], None], timed_out: Callable[[], str]) -> Iterator[bool]:
    """Hold the lock file ``path``; yield whether another process held it first.

    ``on_wait`` runs once when the lock is taken by someone else; ``timed_out`` makes the
    message of the ``LockTimeoutError`` raised after ``timeout`` seconds.
    """
    lock = FileLock(str(path))
    waited = False
    try:
        lock.acquire(timeout=0)
    except Timeout:
        waited = True
        on_wait()
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise LockTimeoutError(timed_out()) from None
    try:
        yield waited
    finally:
        lock.release()


@contextmanager
def build_lock(layout: Layout, timeout: float) -> Iterator[bool]:
    """The build lock; yields whether we had to wait for it. The holder is named in ``.owner``.

    ``timeout`` 0: take it only if it is free (``LockTimeoutError`` at once, with nothing said, if not).
    """

    def on_wait() -> None:
        if timeout > 0:
            log.info("waiting for another sync (%s)", _owner(layout))

    def timed_out() -> str:
        return (
            f"another sync ({_owner(layout)}) has held {layout.build_lock} for over {timeout:.0f}s; "
            "if that process is gone, its lock is released by the OS; otherwise wait, or raise "
            "BOOTSTRAP_LOCK_TIMEOUT"
        )

    with _held(layout.build_lock, timeout, on_wait=on_wait, timed_out=timed_out) as waited:
        atomic_write_text(
            layout.lock_owner,
            json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": manifest.now_iso()}) + "\n",
        )
        yield waited


@contextmanager
def overlay_lock(layout: Layout, timeout: float) -> Iterator[None]:
    """Serialises edits of the runtime overlay (``add``, ``remove``)."""

    def timed_out() -> str:
        return (
            f"another process has been changing the runtime requirements in {layout.root} for over "
            f"{timeout:.0f}s; wait, or raise BOOTSTRAP_LOCK_TIMEOUT"
        )

    with _held(layout.runtime_lock, timeout, on_wait=lambda: None, timed_out=timed_out):
        yield


def _owner(layout: Layout) -> str:
    try:
        owner = json.loads(layout.lock_owner.read_text(encoding="utf-8"))
        return f"pid {owner['pid']} on {owner['host']}, since {owner['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
