"""Review of the remote cache's own unpacker (``remote.archive.unpack``, ``cache._unpack_while_downloading``):
what a hostile archive, consistent with its meta.json, must not be able to do."""

from __future__ import annotations

import io
import tarfile
import zlib
from pathlib import Path

import pytest

from bootstrap.errors import RemoteCacheError
from bootstrap.remote import archive


def _tar(members: list[tarfile.TarInfo | tuple[str, bytes]], *, trailing: bytes = b"") -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member, io.BytesIO(b"\0" * member.size))
            else:
                info = tarfile.TarInfo(member[0])
                info.size = len(member[1])
                tar.addfile(info, io.BytesIO(member[1]))
    return raw.getvalue() + trailing


def _gzip(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    return packer.compress(data) + packer.flush()


def test_a_refused_member_after_a_failed_write_is_still_one_remote_cache_error(tmp_path: Path) -> None:
    # The writer thread fails on the second m.py; then the link is refused: unpack must not let the writer's
    # raw FileExistsError escape (fetch_generation's caller falls back on RemoteCacheError only).
    link = tarfile.TarInfo("site/l")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    data = _gzip(_tar([("site/m.py", b"x = 1\n"), ("site/m.py", b"y = 2\n"), link]))
    with pytest.raises(RemoteCacheError):
        archive.unpack(io.BytesIO(data), tmp_path)
