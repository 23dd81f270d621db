"""Claims that hold across the clients of a network share: lease files made by exclusive create.

``flock``/``lockf`` (and so filelock) do not reach the server on every SMB or NFS client: two
instances mounting one share can both "hold" a lock. What does hold across clients is
``O_CREAT|O_EXCL`` (and ``mkdir``): exactly one client creates a given name. A lease is such a
file, naming its holder (host, kernel boot id, pid and that pid's start time) and how long it
lasts unless renewed (``ttl``); the holder rewrites it every ``ttl / 4`` seconds while it works,
which moves the file's mtime on the share's own clock.

A lease is judged expired, never by comparing this machine's clock with another's:
- on the same kernel (same boot id): at once when its process is gone (or the pid was reused);
- otherwise: when the share's clock (the mtime of a file just written there) is more than
  ``ttl`` + a margin past the lease's mtime, the same clock on both sides.

Taking over an expired lease is itself claimed (``mkdir`` of ``<lease>.takeover``), so two
waiters never both remove it and both create their own. Duplicate work after a wrong judgement
(a holder frozen past its ttl) is harmless by design (content-derived generation ids); a lease
only saves the wasted work and says whom a waiter waits for.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bootstrap.store import registry
from bootstrap.store.fs import retrying

log = logging.getLogger("bootstrap")

# The share's mtimes keep whole seconds (some keep two); writes may reach the server a moment late.
MARGIN_SECONDS = 3.0
_TAKEOVER = ".takeover"


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:  # not Linux: the same kernel is then never assumed
        return ""


def _started(pid: int) -> str:
    """When ``pid`` started (clock ticks since boot, from /proc), or "": tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return ""


def _pid_namespace() -> str:
    """This process's pid namespace (containers on one kernel share the boot id, not their pids), or ""."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return ""


def holder_identity(ttl: float, **extra: object) -> dict[str, object]:
    """What a lease of this process says about its holder."""
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "boot_id": _boot_id(),
        "pid_namespace": _pid_namespace(),
        "pid": pid,
        "pid_started": _started(pid),
        "ttl": ttl,
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "token": os.urandom(8).hex(),
        **extra,
    }


@dataclass(eq=False)  # one lease is one claim: compared by identity
class Lease:
    """A lease this process holds: the file, and the exact bytes it wrote (its proof of holding)."""

    path: Path
    content: bytes
    ttl: float
    lost: bool = field(default=False)
    released: bool = field(default=False)
    _writing: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def renew(self) -> None:
        """Rewrite the lease in place (never replaced: a replace fails while another client reads it)."""
        with self._writing:
            self._renew()

    def _renew(self) -> None:
        if self.released:
            return
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            self._lose("it was removed")
            return
        try:
            if os.pread(fd, len(self.content) + 1, 0) != self.content:
                self._lose("another process took it over")
                return
            os.pwrite(fd, self.content, 0)
            os.fsync(fd)
        finally:
            os.close(fd)

    def update(self, **fields: object) -> None:
        """Rewrite the lease with ``fields`` added (the generation a builder is about to publish, say)."""
        with self._writing:
            retrying(lambda: self._update(fields), what=f"rewriting {self.path.name}")

    def _update(self, fields: dict[str, object]) -> None:
        record = json.loads(self.content)
        content = (json.dumps({**record, **fields}, sort_keys=True) + "\n").encode()
        fd = os.open(self.path, os.O_RDWR)
        try:
            os.pwrite(fd, content, 0)
            os.ftruncate(fd, len(content))
            os.fsync(fd)
        finally:
            os.close(fd)
        self.content = content

    def _lose(self, why: str) -> None:
        if not self.lost:
            log.warning("lost the claim %s (%s); going on: a duplicate build is harmless", self.path.name, why)
        self.lost = True

    def release(self) -> None:
        """Remove the lease, unless it is no longer ours; a share refusing for long gets it marked released.

        Left behind anyway (the share gone), it expires a ttl after its last renewal, like a dead holder's."""
        with self._writing:
            self.released = True  # the renewer, between its look and its write, must not renew it again

        def read() -> bytes:
            with open(self.path, "rb") as handle:
                return handle.read(len(self.content) + 1)

        try:
            if retrying(read, what=f"reading {self.path.name}", seconds=2.0) != self.content:
                return
        except OSError:
            return
        try:
            retrying(lambda: os.unlink(self.path), what=f"removing {self.path.name}")
        except FileNotFoundError:
            pass
        except OSError:  # another client holds it open for long: say it is free instead
            with contextlib.suppress(OSError), open(self.path, "r+b") as handle:
                handle.write(json.dumps({"released": True}).encode().ljust(len(self.content)))


def try_claim(path: Path, ttl: float, **extra: object) -> Lease | None:
    """Create the lease file ``path`` exclusively; None if it exists (held, or to be judged)."""
    content = (json.dumps(holder_identity(ttl, **extra), sort_keys=True) + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return None
    try:
        try:
            os.write(fd, content)
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # an empty claim would hold others off for a whole ttl
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return Lease(path, content, ttl)


def claim_new(path: Path, scratch: Path, ttl: float, **extra: object) -> Lease:
    """The lease ``path`` of a name no one else can hold (a builder's new staging folder), never seen empty:
    written in ``scratch`` (that folder, made first) and renamed into place. A builder killed before the
    rename leaves a folder without a lease, which cleanup removes; with ``try_claim``'s exclusive create, a
    kill between the create and the write would leave an empty lease, judged only by its age."""
    content = (json.dumps(holder_identity(ttl, **extra), sort_keys=True) + "\n").encode()
    written = scratch / ".lease"
    with open(written, "xb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(written, path)
    return Lease(path, content, ttl)


@dataclass(frozen=True)
class Judgement:
    """What a lease file says now: whether it may be taken over, whom it names, what it was when judged."""

    exists: bool
    expired: bool
    holder: str
    content: bytes = b""
    mtime_ns: int = 0
    generation: str | None = None


def judge(path: Path, default_ttl: float) -> Judgement:
    """Read and judge the lease at ``path`` (see the module's docstring)."""

    def read() -> tuple[bytes, int]:
        with open(path, "rb") as handle:
            return handle.read(1 << 16), os.fstat(handle.fileno()).st_mtime_ns

    try:  # through a share's moment of EIO or EBUSY (a second at most: waiters poll again anyway)
        content, mtime_ns = retrying(read, what=f"reading {path.name}", seconds=1.0)
    except FileNotFoundError:
        return Judgement(exists=False, expired=False, holder="nobody")
    except OSError as exc:  # a share answering EIO or EBUSY for a moment: judged again on the next poll
        return Judgement(exists=True, expired=False, holder=f"unreadable ({exc.strerror})")
    try:
        record = json.loads(content)
        if not isinstance(record, dict):
            raise ValueError(record)
    except ValueError:  # empty (its maker killed between the create and the write), or damaged: by its age
        record = {"ttl": 0.0}  # a live maker writes it within milliseconds of the create: the margin is plenty
    holder = _describe(record)
    generation = record.get("generation") if isinstance(record.get("generation"), str) else None
    found = Judgement(True, False, holder, content, mtime_ns, generation)
    if record.get("released"):
        return Judgement(True, True, "a released claim", content, mtime_ns)
    if _visible_here(record):
        pid = record["pid"]
        alive = registry.alive(pid) and (not record.get("pid_started") or record.get("pid_started") == _started(pid))
        if not alive:
            return Judgement(True, True, holder + ", now gone", content, mtime_ns, generation)
    # Alive (or on another machine, where its pid says nothing): expired only when not renewed for its ttl.
    said = record.get("ttl")
    ttl = float(said) if isinstance(said, int | float) else default_ttl
    age = share_clock(path.parent) - mtime_ns / 1e9
    if age > ttl + MARGIN_SECONDS:
        return Judgement(True, True, f"{holder}, not renewed for {age:.0f}s", content, mtime_ns, generation)
    return found


def _visible_here(record: dict[str, object]) -> bool:
    """Whether the holder's pid can be looked up from here: the same kernel, host and pid namespace."""
    return (
        bool(record.get("boot_id"))
        and record.get("boot_id") == _boot_id()
        and record.get("host") == socket.gethostname()
        and record.get("pid_namespace", "") == _pid_namespace()
        and isinstance(record.get("pid"), int)
    )


def take_over(path: Path, judged: Judgement, ttl: float, **extra: object) -> Lease | None:
    """Replace the expired lease ``judged`` with ours, if no other waiter is doing so and it is unchanged."""
    marker = path.with_name(path.name + _TAKEOVER)
    try:
        os.mkdir(marker)
    except FileExistsError:
        _remove_stale_marker(marker, ttl)
        return None
    try:
        again = judge(path, ttl)
        if again.exists and (again.content, again.mtime_ns) != (judged.content, judged.mtime_ns):
            return None  # renewed, or replaced, meanwhile
        with contextlib.suppress(FileNotFoundError):
            retrying(lambda: os.unlink(path), what=f"removing the expired {path.name}")
        return try_claim(path, ttl, **extra)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(marker)


def _remove_stale_marker(marker: Path, ttl: float) -> None:
    """A takeover marker whose maker died: removed once it is older than a lease."""
    try:
        age = share_clock(marker.parent) - marker.stat().st_mtime
    except OSError:
        return
    if age > ttl + MARGIN_SECONDS:
        with contextlib.suppress(OSError):
            os.rmdir(marker)


def share_clock(folder: Path) -> float:
    """The time on the clock that stamps files in ``folder``: the mtime of a file written there now.

    On a network share that is the server's clock (or the one client-side stamp every client uses),
    never this machine's alone; where nothing can be written, this machine's clock.
    """
    probe = folder / f".bootstrap.lease.clock.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        return time.time()
    try:
        os.write(fd, b"t")
        os.fsync(fd)
        stamp = os.fstat(fd).st_mtime
    except OSError:
        stamp = time.time()
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):  # a share may refuse it for a moment after the close (EBUSY)
            retrying(lambda: os.unlink(probe), what=f"removing {probe.name}", seconds=3.0)
    return stamp


def _describe(record: dict[str, object]) -> str:
    if not record.get("pid"):
        return "holder unknown"
    return f"pid {record.get('pid')} on {record.get('host', 'an unknown host')}, since {record.get('since', '?')}"


_renewed: list[Lease] = []
_renewed_mutex = threading.Lock()
_renewer: threading.Thread | None = None
_added = threading.Event()  # wakes the renewer: a lease shorter than those it sleeps for may have come


def keep_renewed(lease: Lease) -> None:
    """Renew ``lease`` every ``ttl / 4`` seconds (in one daemon thread for all of them) until ``forget``."""
    global _renewer
    with _renewed_mutex:
        _renewed.append(lease)
        _added.set()
        if _renewer is None or not _renewer.is_alive():
            _renewer = threading.Thread(target=_renew_forever, name="bootstrap-lease-renewer", daemon=True)
            _renewer.start()


def forget(lease: Lease) -> None:
    with _renewed_mutex, contextlib.suppress(ValueError):
        _renewed.remove(lease)


def release_held(path: Path) -> None:
    """Stop renewing and remove the lease at ``path`` if this process holds it (a builder's staging lease)."""
    with _renewed_mutex:
        held = [lease for lease in _renewed if lease.path == path]
    for lease in held:
        forget(lease)
        lease.release()


def update_held(path: Path, **fields: object) -> None:
    """``Lease.update`` of the lease at ``path`` this process holds (none: nothing to do)."""
    with _renewed_mutex:
        for lease in _renewed:
            if lease.path == path:
                lease.update(**fields)


def held_here(judged: Judgement) -> bool:
    """Whether the lease judged is one this very process holds."""
    with _renewed_mutex:
        return any(lease.content == judged.content for lease in _renewed)


def _renew_forever() -> None:
    while True:
        with _renewed_mutex:
            leases = list(_renewed)
        if _added.wait(max(min((lease.ttl for lease in leases), default=4.0) / 4, 0.2)):
            _added.clear()
            continue
        for lease in leases:
            with _renewed_mutex:
                if lease not in _renewed:
                    continue
            try:
                lease.renew()
            except OSError as exc:  # the share away for a moment: the next round tries again
                if exc.errno not in (errno.EIO, errno.EBUSY, errno.EAGAIN, errno.ETIMEDOUT):
                    log.debug("could not renew %s: %s", lease.path.name, exc)
