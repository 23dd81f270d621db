"""A generation folder as one tar + gzip archive, and back, safely.

Packing takes regular files and folders only (a generation with a link in it is not packed: an
organisation's, whose folders link into the workspace's). Unpacking refuses, before anything of a member
is written, an absolute name, a ``..``, a link, a device or FIFO, and anything that would land outside
the target; ``tarfile``'s ``data`` filter checks the same again.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bootstrap.errors import RemoteCacheError

FORMAT = "tar+gzip"
# gzip's 9 packs set M (200 MB) in 38 s on one core for 64 MB; 6 is about a third of that for a few MB more.
# Unpacking takes the same time either way.
COMPRESS_LEVEL = 6


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


def unpack(source: IO[bytes], target: Path) -> int:
    """Unpack a tar + gzip stream into the existing folder ``target``; the number of files. ``RemoteCacheError``
    (with nothing of the offending member written) for a member that is not a plain file or folder inside it."""
    root = os.path.realpath(target)
    count = 0
    try:
        with tarfile.open(fileobj=source, mode="r|gz") as tar:
            for member in tar:
                _refuse_unsafe(member, root)
                tar.extract(member, target, filter="data")
                count += member.isfile()
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise RemoteCacheError(f"the archive cannot be unpacked ({type(exc).__name__}: {exc})") from None
    return count


def _refuse_unsafe(member: tarfile.TarInfo, root: str) -> None:
    name = member.name
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\")) or os.path.isabs(name) or ".." in parts or "\0" in name:
        raise RemoteCacheError(f"the archive holds {name[:200]!r}, outside the generation")
    if not (member.isreg() or member.isdir()):
        raise RemoteCacheError(f"the archive holds {name[:200]!r}, a link or special file")
    # No link is ever unpacked (refused above), so the name alone says where it lands: no realpath per member.
    destination = os.path.normpath(os.path.join(root, name))
    if destination != root and not destination.startswith(root + os.sep):
        raise RemoteCacheError(f"the archive holds {name[:200]!r}, outside the generation")
