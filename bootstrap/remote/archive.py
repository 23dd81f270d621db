"""A generation folder as one tar + gzip archive, and back, safely.

Packing takes regular files and folders only (a generation with a link in it is not packed: an
organisation's, whose folders link into the workspace's). Unpacking refuses, before anything of a member
is written, an absolute name, a ``..``, a link, a device or FIFO, a sparse member, a name that comes
twice, and anything that would land outside the target. It writes the files itself (``tarfile`` only
parses), hashing each as it writes it.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import queue
import tarfile
import threading
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bootstrap.errors import RemoteCacheError

FORMAT = "tar+gzip"
# gzip's 9 packs set M (200 MB) in 38 s on one core for 64 MB; 6 is about a third of that for a few MB more.
# Unpacking takes the same time either way.
COMPRESS_LEVEL = 6
_BLOCK = 1 << 20
_SMALL = 256 << 10  # a file up to this size is written by the writer thread
_QUEUED = 256  # files queued for it at most: 64 MiB


@dataclass(frozen=True)
class Packed:
    sha256: str
    size: int


class _Counting:
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, target: IO[bytes]) -> None:
        self._target = target
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        return self._target.write(data)

    def flush(self) -> None:
        self._target.flush()


def linked_entries(folder: Path) -> list[str]:
    """What ``pack`` would refuse: links and special files under ``folder`` (relative names)."""
    found = []
    for parent, dirs, files in os.walk(folder):
        for name in (*dirs, *files):
            path = os.path.join(parent, name)
            if os.path.islink(path) or not (os.path.isdir(path) or os.path.isfile(path)):
                found.append(os.path.relpath(path, folder))
    return found


def pack(folder: Path, target: IO[bytes]) -> Packed:
    """Write ``folder``'s contents (names relative to it) to ``target`` as tar + gzip; its sha256 and size."""
    counting = _Counting(target)
    # gzip's own header holds no time (mtime=0): the same folder packs to the same bytes, on any instance.
    with (
        gzip.GzipFile(fileobj=counting, mode="wb", mtime=0, compresslevel=COMPRESS_LEVEL) as compressed,
        tarfile.open(fileobj=compressed, mode="w|", format=tarfile.PAX_FORMAT) as tar,
    ):
        for parent, dirs, files in os.walk(folder):
            dirs.sort()
            for name in sorted(dirs) + sorted(files):
                path = os.path.join(parent, name)
                relative = os.path.relpath(path, folder).replace(os.sep, "/")
                info = tar.gettarinfo(path, arcname=relative)
                # Whole seconds, as a .pyc holds its source's: a fraction needs a pax header per member, which
                # doubles what unpacking parses (set M: 7,000 more headers).
                info.mtime = int(info.mtime)
                if info.isdir():
                    tar.addfile(info)
                elif info.isreg() or info.islnk():
                    info.type = tarfile.REGTYPE  # a hard link elsewhere in the store is a plain file here
                    info.linkname = ""
                    info.size = os.path.getsize(path)
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    with open(path, "rb") as handle:
                        tar.addfile(info, handle)
                else:
                    raise RemoteCacheError(f"{relative} in {folder} is a link or special file: not packed")
    return Packed(counting.hash.hexdigest(), counting.size)


class Inflater:
    """The archive's gzip bytes in, its tar out, in pieces of at most a MiB whatever the bytes (a small archive
    cannot swell into a large piece in memory): for a download thread, as the bytes arrive (zlib lets go of the
    interpreter lock), so the unpacking thread parses the tar alone (``unpack(compressed=False)``)."""

    def __init__(self) -> None:
        self._zlib = zlib.decompressobj(wbits=31)  # 31: gzip's header and trailer

    def feed(self, data: bytes) -> Iterator[bytes]:
        try:
            while data and not self._zlib.eof:  # what follows the end: hashed by the caller, not kept here
                piece = self._zlib.decompress(data, _BLOCK)
                data = self._zlib.unconsumed_tail
                yield piece
        except zlib.error as exc:
            raise RemoteCacheError(f"the archive cannot be unpacked (gzip: {exc})") from None

    def end(self) -> None:
        """``RemoteCacheError`` unless the gzip stream was whole."""
        if not self._zlib.eof:
            raise RemoteCacheError("the archive cannot be unpacked (its gzip stream ends early)")


def unpack(source: IO[bytes], target: Path, *, compressed: bool = True) -> dict[str, str]:
    """Unpack a tar + gzip stream (``compressed``, or a tar) into the existing folder ``target``: each file's
    sha256, as a RECORD writes it (``sha256=<urlsafe base64>``), by its name relative to ``target``.
    ``RemoteCacheError`` (with nothing of the offending member written) for a member that is not a plain file
    or folder inside it, or a name that comes twice.

    Each file is hashed as it is written, so checking it against its RECORD reads nothing again. It is
    written here, not by ``tarfile.extract``: that one resolves every name (``realpath``, a stat per part of
    the path) and changes owner, mode and times one call at a time. No link is ever unpacked (refused
    first), so the name alone says where a member lands."""
    root = os.path.realpath(target)
    folders = {root}
    writer = _Writer()
    try:
        with tarfile.open(fileobj=source, mode="r|gz" if compressed else "r|") as tar:
            for member in tar:
                destination = _refuse_unsafe(member, root)
                if member.isdir():
                    _make_folder(destination, folders)
                    continue
                _make_folder(os.path.dirname(destination), folders)
                content = tar.extractfile(member)
                assert content is not None  # a regular file (_refuse_unsafe)
                relative = os.path.relpath(destination, root).replace(os.sep, "/")
                if member.size <= _SMALL:  # the writer thread's, from memory
                    writer.put(relative, destination, content.read(), member)
                else:  # read and written in blocks, here: a large file is never all in memory
                    blocks = iter(lambda: content.read(_BLOCK), b"")  # noqa: B023 (used at once)
                    writer.hashes[relative] = _write(destination, blocks, member)
        writer.close()
    except (tarfile.TarError, EOFError, OSError, ValueError, OverflowError) as exc:  # Overflow: a time
        raise RemoteCacheError(f"the archive cannot be unpacked ({type(exc).__name__}: {exc})") from None
    finally:
        writer.close(check=False)  # an error already on its way (a refused member, Ctrl-C) is the one raised
    return writer.hashes


class _Writer:
    """Writes small files in a thread while the caller decompresses and parses the next members: the kernel's
    part of writing a file, about as much time as the rest on set M's 7,000 files, runs on another core."""

    def __init__(self) -> None:
        self.hashes: dict[str, str] = {}
        self._queue: queue.Queue[tuple[str, str, bytes, tarfile.TarInfo] | None] = queue.Queue(maxsize=_QUEUED)
        self._failure: list[BaseException] = []
        self._closing = threading.Event()  # set first: even if the end marker never gets queued (a Ctrl-C)
        self._thread: threading.Thread | None = threading.Thread(target=self._run, name="bootstrap-unpack", daemon=True)
        self._thread.start()

    def put(self, relative: str, destination: str, data: bytes, member: tarfile.TarInfo) -> None:
        if self._failure:
            raise self._failure[0]
        self._queue.put((relative, destination, data, member))

    def close(self, *, check: bool = True) -> None:
        """Wait for the files queued; the first that failed raises here (once, if ``check``)."""
        if self._thread is not None:
            self._closing.set()
            self._queue.put(None)
            self._thread.join()
            self._thread = None
            if check and self._failure:
                raise self._failure[0]

    def _run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=0.5)
            except queue.Empty:
                if self._closing.is_set():
                    return  # closed, and its end marker never came
                continue
            if item is None:
                return
            if self._failure:
                continue  # the caller raises it at its next file: only drain until then
            relative, destination, data, member = item
            try:
                self.hashes[relative] = _write(destination, (data,), member)
            except BaseException as exc:
                self._failure.append(exc)


def _make_folder(path: str, made: set[str]) -> None:
    if path not in made:
        os.makedirs(path, mode=0o755, exist_ok=True)
        made.add(path)


def _write(destination: str, blocks: Iterable[bytes], member: tarfile.TarInfo) -> str:
    """A member's bytes into a new file (a name already there: ``FileExistsError``), with its modification
    time: a module's ``.pyc`` names its source's, and a later one would make every import compile again."""
    digest = hashlib.sha256()
    # What tarfile's "data" filter keeps: rw for the owner, read (and execute, if the owner's is set) for all.
    mode = 0o755 if member.mode & 0o100 else 0o644
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    with open(os.open(destination, flags, mode), "wb") as out:
        for block in blocks:
            digest.update(block)
            out.write(block)
        out.flush()
        os.fchmod(out.fileno(), mode)  # as given, whatever this process's umask
        os.utime(out.fileno(), (member.mtime, member.mtime))
    return "sha256=" + base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def _refuse_unsafe(member: tarfile.TarInfo, root: str) -> str:
    """Where ``member`` lands under ``root``, if it may: ``RemoteCacheError`` if not."""
    name = member.name
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or os.path.isabs(name) or ".." in parts or "\0" in name:
        raise RemoteCacheError(f"the archive holds {name[:200]!r}, outside the generation")
    if not (member.isreg() or member.isdir()) or member.issparse():  # sparse: its holes would be written out
        raise RemoteCacheError(f"the archive holds {name[:200]!r}, a link or special file")
    # No link is ever unpacked (refused above), so the name alone says where it lands: no realpath per member.
    destination = os.path.normpath(os.path.join(root, name))
    if not destination.startswith(root + os.sep) and not (destination == root and member.isdir()):
        raise RemoteCacheError(f"the archive holds {name[:200]!r}, outside the generation")
    return destination
