"""Review of the remote cache's own unpacker (``remote.archive.unpack``, ``cache._unpack_while_downloading``):
what a hostile archive, consistent with its meta.json, must not be able to do."""

from __future__ import annotations

import hashlib
import io
import tarfile
import tracemalloc
import zlib
from pathlib import Path

import pytest

from bootstrap.errors import RemoteCacheError
from bootstrap.remote import archive, cache


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


def test_a_sparse_member_is_refused_not_written_out_in_full(tmp_path: Path) -> None:
    # GNU sparse (pax 0.1): one byte of data, 64 MiB of holes. pack never makes one; unpacking it here writes
    # every hole as zeros (tarfile.extract made a sparse file): a few hundred bytes fill a disk.
    sparse = tarfile.TarInfo("site/hole.bin")
    sparse.size = 1
    sparse.pax_headers = {"GNU.sparse.map": "0,1", "GNU.sparse.realsize": str(64 << 20)}
    data = _gzip(_tar([sparse]))
    with pytest.raises(RemoteCacheError, match="link or special file"):
        archive.unpack(io.BytesIO(data), tmp_path)
    assert not (tmp_path / "site" / "hole.bin").exists()


def test_what_follows_the_tar_is_not_inflated_into_memory_at_once(tmp_path: Path) -> None:
    # 128 MiB of zeros after the tar's end: well under a MiB of gzip. The pipe now carries inflated bytes,
    # so draining it with one read() holds them all.
    data = _gzip(_tar([("site/m.py", b"x = 1\n")], trailing=bytes(128 << 20)))
    assert len(data) < 1 << 20
    meta = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    chunks = iter([data[i : i + (64 << 10)] for i in range(0, len(data), 64 << 10)])
    tracemalloc.start()
    try:
        hashes = cache._unpack_while_downloading("v1/generations/g/", chunks, meta, tmp_path)  # type: ignore[arg-type]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert set(hashes) == {"site/m.py"}
    assert peak < 32 << 20, peak


def test_bytes_after_the_gzip_stream_do_not_pile_up_in_the_inflater() -> None:
    # zlib keeps whatever follows a gzip stream's end in unused_data, each piece appended to the last: 64 MiB
    # of noise after a small archive would be 64 MiB of memory (and each feed copies it all again).
    inflater = archive.Inflater()
    list(inflater.feed(_gzip(_tar([("site/m.py", b"x = 1\n")]))))
    noise = bytes(1 << 20)
    tracemalloc.start()
    try:
        for _ in range(64):
            assert b"".join(inflater.feed(noise)) == b""
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    inflater.end()
    assert peak < 8 << 20, peak


@pytest.mark.parametrize("size", [3, 300 << 10])  # the writer thread's, and the caller's
def test_a_time_out_of_range_is_one_remote_cache_error(tmp_path: Path, size: int) -> None:
    # A pax mtime of 1e300: os.utime raises OverflowError, which is no OSError nor ValueError.
    member = tarfile.TarInfo("site/m.py")
    member.size = size
    member.pax_headers = {"mtime": "1e300"}
    with pytest.raises(RemoteCacheError, match="OverflowError"):
        archive.unpack(io.BytesIO(_gzip(_tar([member]))), tmp_path)
