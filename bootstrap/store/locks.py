"""The inter-process locks beside the manifest: the one wrapper around filelock, and the build claim.

``build_lock``: one builder at a time (a waiter re-reads the manifest once it
has it). It is two locks: filelock's (fcntl/msvcrt), which makes waiting
cheap among the processes of one machine, and the build claim
(``store.leases``: a lease file made by exclusive create), which holds across
the clients of a network share, where fcntl locks may not reach the server.
Correctness rests on the claim (and on content-derived generation ids: a
duplicate build is wasted time, never damage); a filesystem whose fcntl
locks fail outright leaves the claim alone. ``overlay_lock``: edits of the
runtime overlay, held across the sync that follows. The fast path never
takes a lock.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from bootstrap.errors import LockTimeoutError
from bootstrap.store import leases
from bootstrap.store.layout import Layout

log = logging.getLogger("bootstrap")


@contextmanager
def _held(path: Path, timeout: float, *, on_wait: Callable[[], None], timed_out: Callable[[], str]) -> Iterator[bool]:
    """Hold the lock file ``path``; yield whether another process held it first.

    ``on_wait`` runs once when the lock is taken by someone else; ``timed_out`` makes the
    message of the ``LockTimeoutError`` raised after ``timeout`` seconds.
    """
    # Not group- or world-writable: filelock 4 then probes the folder with a file it unlinks while holding it
    # open, which an SMB share refuses (EBUSY), leaving `.filelock-probe-*` behind.
    lock = FileLock(str(path), mode=0o644)
    waited = False
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            waited = True
            on_wait()
            try:
                lock.acquire(timeout=timeout)
            except Timeout:
                raise LockTimeoutError(timed_out()) from None
    except OSError as exc:  # a share refusing fcntl locks (or filelock's own probe files): the claim still holds
        log.debug("no local lock on %s (%s): relying on the build claim", path, exc)
        yield waited
        return
    try:
        yield waited
    finally:
        lock.release()


@contextmanager
def build_lock(layout: Layout, timeout: float) -> Iterator[bool]:
    """The build lock and the build claim; yields whether we had to wait for either.

    ``timeout`` 0: take them only if they are free (``LockTimeoutError`` at once, with nothing said, if not).
    The claim (``.bootstrap.lease``) names the holder, and is renewed while it is held.
    """
    holder = ["another sync"]
    lease_seconds = layout.lease_seconds

    def on_wait() -> None:
        if timeout > 0:
            log.info("waiting for another sync (%s)", _owner(layout, lease_seconds))

    def timed_out() -> str:
        named = holder[0] if holder[0] != "another sync" else _owner(layout, lease_seconds)
        return (
            f"another sync ({named}) has held {layout.build_lock} for over {timeout:.0f}s; if that process "
            f"is gone, its lock is released by the OS and its claim expires {lease_seconds:.0f}s after its last "
            "renewal; otherwise wait, or raise BOOTSTRAP_LOCK_TIMEOUT"
        )

    started = time.monotonic()
    with _held(layout.build_lock, timeout, on_wait=on_wait, timed_out=lambda: timed_out()) as waited_locally:
        remaining = max(timeout - (time.monotonic() - started), 0.0) if timeout > 0 else 0.0
        lease, waited = _claim(layout.build_lease, remaining, lease_seconds, holder, on_wait)
        leases.keep_renewed(lease)
        try:
            yield waited_locally or waited
        finally:
            leases.forget(lease)
            lease.release()


def _claim(
    path: Path, timeout: float, ttl: float, holder: list[str], on_wait: Callable[[], None]
) -> tuple[leases.Lease, bool]:
    """Take the claim at ``path``, waiting (polling, with backoff) for a live holder; take over an expired one."""
    deadline = time.monotonic() + timeout
    delay, waited = 0.05, False
    while True:
        lease = leases.try_claim(path, ttl)
        if lease is not None:
            return lease, waited
        judged = leases.judge(path, ttl)
        holder[0] = judged.holder
        if judged.expired:
            log.info("taking over the expired build claim (%s)", judged.holder)
            lease = leases.take_over(path, judged, ttl)
            if lease is not None:
                return lease, True
        elif not judged.exists and time.monotonic() <= deadline:  # released between the two calls, or still
            time.sleep(0.02)  # shown for a moment: again, soon
            continue
        if timeout <= 0 or time.monotonic() > deadline:
            raise LockTimeoutError(
                f"another sync ({judged.holder}) holds the build claim {path}; if that instance is gone, the "
                f"claim expires {ttl:.0f}s after its last renewal; otherwise wait, or raise BOOTSTRAP_LOCK_TIMEOUT"
            )
        if not waited:
            waited = True
            on_wait()
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


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


def _owner(layout: Layout, ttl: float) -> str:
    """Who holds the build claim, as its lease says."""
    return leases.judge(layout.build_lease, ttl).holder
