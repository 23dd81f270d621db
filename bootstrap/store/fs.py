"""Small filesystem helpers: atomic writes, hashing, sizes, where a link leads.

Light on imports: ``file_sha256`` runs on the start-up fast path.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time

# The most of a committed file bootstrap reads: a requirements file (or one it includes), and the runtime
# overlay, and a lock (hashed ones are bigger: 50 pins with every wheel's hash are about 150 KB). A bigger
# "requirements file" is a mistake (a log, a dump) or an attack: reading it whole would exhaust memory.
MAX_REQUIREMENTS_BYTES = 1 << 20
MAX_LOCK_BYTES = 8 << 20
_CHUNK = 1 << 16

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing and pathlib stay off the start-up fast path
    from collections.abc import Callable
    from pathlib import Path
    from typing import TypeVar

    T = TypeVar("T")

# What a network share answers for a moment while another client has a file open or is replacing it
# (measured on SMB: os.replace over a file another client has open fails with EEXIST; EBUSY, EIO, ETXTBSY
# come and go likewise). Never a reason to fail at once; a local disk never gives them for these calls.
_RETRY_SECONDS = 10.0


def transient_errnos() -> frozenset[int]:
    import errno  # slow path: only writers retry; the start-up fast path loads no more than it needs

    return frozenset({errno.EEXIST, errno.EBUSY, errno.EIO, errno.ETXTBSY, errno.EAGAIN})


def retrying(action: Callable[[], T], *, what: str, seconds: float = _RETRY_SECONDS) -> T:
    """Run ``action``, again with backoff (5 ms doubling to 0.5 s) while it fails with a transient errno,
    for at most ``seconds``; then the last error is raised. ``what`` names it in that error."""
    deadline = time.monotonic() + seconds
    delay = 0.005
    transient = transient_errnos()
    while True:
        try:
            return action()
        except OSError as exc:
            if exc.errno not in transient or time.monotonic() + delay > deadline:
                if exc.errno in transient:
                    exc.strerror = f"{exc.strerror}, {what}, for {seconds:.0f}s (the share kept refusing)"
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def file_sha256(path: str | os.PathLike[str], limit: int = MAX_LOCK_BYTES) -> str | None:
    """The hex sha256 of a file's bytes, or None when there is no such file.

    Bounded like ``read_limited``: a FIFO, a device or a file over ``limit`` gives a reason instead
    (``unreadable: ...``, never equal to a real hash), so the start-up fast path never hangs on one.
    """
    try:
        return hashlib.sha256(read_limited(path, limit)).hexdigest()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except ValueError as exc:
        return f"unreadable: {exc}"
    except OSError as exc:  # a folder where a file was, no permission: never equal to a real hash
        return f"unreadable: {exc.strerror}"


def read_limited(path: str | os.PathLike[str], limit: int) -> bytes:
    """A regular file's bytes, at most ``limit`` of them; ``ValueError`` (a reason to follow the path) else.

    The type is judged on the open file (links followed): a FIFO opens without waiting for a writer
    (``O_NONBLOCK``) and is refused, as are devices (``/dev/zero``) and sockets; a file over ``limit`` is
    refused without being read whole, even if it grows while being read. ``OSError`` as ``open`` gives it.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ValueError(f"is not a regular file but {_file_type(mode)}; commit a plain text file")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(_CHUNK, limit + 1 - size))
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
            size += len(chunk)
        raise ValueError(f"is larger than {limit // (1 << 20)} MiB, more than bootstrap reads of such a file")
    finally:
        os.close(fd)


def _file_type(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return f"of type {stat.S_IFMT(mode):o}"


def resolves_inside(path: str | os.PathLike[str], folder: str | os.PathLike[str]) -> bool:
    """Whether ``path``, links followed, is ``folder`` or lies inside it (links followed too).

    The one check against a committed link that leads out (``requirements.txt -> /proc/self/environ``).
    """
    real, root = os.path.realpath(path), os.path.realpath(folder)
    return real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def text_sha256(text: str) -> str:
    return bytes_sha256(text.encode("utf-8"))


def bytes_sha256(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some network filesystems refuse fsync on a directory
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike[str], text: str, mode: int = 0o644) -> None:
    """Write ``text`` to ``path`` so a reader sees the old file or the new one, never a mix.

    A temp file in the same folder (same filesystem), flushed to disk, then
    ``os.replace``: a crash at any instruction leaves at worst a stray
    ``.<name>.<pid>.<rand>.tmp`` that the next sync removes. The replace is retried while a
    network share refuses it because another client is reading the file (``retrying``).
    """
    folder, name = os.path.split(os.fspath(path))
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        retrying(lambda: os.replace(tmp, path), what=f"replacing {name}")
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def copy_file(source: str, target: str) -> None:
    """Copy the bytes, the mode bits and the times of ``source`` to a new file ``target`` (never xattrs).

    ``FileExistsError`` if ``target`` exists. No rename and no extended attributes (``shutil.copy2`` lists
    them: an SMB share through smbnetfs answers EIO); big writes, since on a share each one is a round trip.
    """
    import shutil  # slow path: building generations only

    with open(source, "rb") as src, open(target, "xb") as dst:
        shutil.copyfileobj(src, dst, length=1 << 20)
        st = os.fstat(src.fileno())
    os.chmod(target, stat.S_IMODE(st.st_mode))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))


def copy_tree(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> int:
    """Copy every file under ``source`` into the folder ``target`` (``copy_file``, links followed); the count."""
    root, count = os.fspath(source), 0
    for folder, _, names in os.walk(root):
        destination = os.path.join(os.fspath(target), os.path.relpath(folder, root))
        os.makedirs(destination, exist_ok=True)
        for name in names:
            copy_file(os.path.join(folder, name), os.path.join(destination, name))
            count += 1
    return count


# Filesystem types (``/proc/self/mountinfo``) of network shares and of FUSE clients of them.
_NETWORK_TYPES = frozenset({"cifs", "smb3", "smbfs", "nfs", "nfs4", "9p", "afs", "ceph", "glusterfs", "lustre"})
_LOCAL_FUSE = frozenset({"fuse.fuse-overlayfs", "fuse.lxcfs"})


def network_filesystem(path: str | os.PathLike[str], table: str = "/proc/self/mountinfo") -> str | None:
    """The type of the network filesystem ``path`` lies on (``cifs``, ``fuse.smbnetfs``, ``nfs4``, ...), or None
    for a local one or where the mount table cannot be read (Linux's ``/proc/self/mountinfo`` only)."""
    real = os.path.realpath(path)
    best, kind = "", None
    try:
        with open(table, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    for line in lines:
        fields, _, rest = line.partition(" - ")
        parts, types = fields.split(), rest.split()
        if len(parts) < 5 or not types:
            continue
        mount = parts[4].replace("\\040", " ")
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, types[0]
    if kind in _NETWORK_TYPES or (kind is not None and kind.startswith("fuse.") and kind not in _LOCAL_FUSE):
        return kind
    return None


def tree_size(path: Path) -> int:
    """Bytes used under ``path``, each hard-linked file counted once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + dirnames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            total += st.st_size
    return total


def counted(count: int, noun: str) -> str:
    """``1 package``, ``2 packages``: the nouns bootstrap counts all take an ``s``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
