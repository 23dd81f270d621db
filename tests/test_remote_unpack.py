"""Unpacking a remote cache archive (``remote.archive``): its own writer, hashing as it writes.

The files it writes are checked against their RECORDs from the hashes it took while writing them
(``records.changed_files(hashed=...)``): these tests hold that those hashes, names, modes and times are the
ones in the archive, and that anything an archive could use to write one file twice or swell in memory is
refused.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootstrap.errors import RemoteCacheError
from bootstrap.pipeline.sync import sync
from bootstrap.remote import archive, cache
from bootstrap.store import records
from tests.conftest import Repo
from tests.test_remote_cache import (  # noqa: F401 (fixtures)
    azurite,
    instance_b,
    published_and_uploaded,
    remote,
    replace_archive,
)


def tar_of(members: list[tuple[str, bytes]]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return raw.getvalue()


def test_a_name_that_comes_twice_is_refused(tmp_path: Path) -> None:
    # tarfile.extract writes the second over the first: the file on disk would not be the one hashed first.
    data = tar_of([("site/m.py", b"x = 1\n"), ("site/m.py", b"import os; os.system('id')\n")])
    with pytest.raises(RemoteCacheError, match="FileExistsError"):
        archive.unpack(io.BytesIO(data), tmp_path)
    assert (tmp_path / "site" / "m.py").read_bytes() == b"x = 1\n"


@pytest.fixture
def strict_umask() -> Iterator[None]:
    before = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(before)


def test_files_keep_their_bytes_times_and_modes_whatever_the_umask(tmp_path: Path, strict_umask: None) -> None:
    folder = tmp_path / "g"
    (folder / "site" / "pkg").mkdir(parents=True)
    small, large = folder / "site" / "pkg" / "__init__.py", folder / "site" / "pkg" / "big.so"
    small.write_text("x = 1\n")
    large.write_bytes(os.urandom(3 << 20))  # above the writer thread's size: written in blocks, here
    large.chmod(0o755)
    os.utime(small, (1_600_000_000.75, 1_600_000_000.75))
    packed = io.BytesIO()
    archive.pack(folder, packed)
    target = tmp_path / "u"
    target.mkdir()
    hashes = archive.unpack(io.BytesIO(packed.getvalue()), target)
    for path in (small, large):
        relative = path.relative_to(folder).as_posix()
        written = target / relative
        assert written.read_bytes() == path.read_bytes()
        digest = hashlib.sha256(path.read_bytes()).digest()
        assert hashes[relative] == "sha256=" + records.base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        assert written.stat().st_mode & 0o777 == (0o755 if path == large else 0o644)
    # A .pyc holds its source's time in whole seconds: the source keeps it, so the .pyc stays valid.
    assert (target / "site" / "pkg" / "__init__.py").stat().st_mtime == 1_600_000_000
    assert set(hashes) == {"site/pkg/__init__.py", "site/pkg/big.so"}


def test_a_member_is_one_tar_header_not_two(tmp_path: Path) -> None:
    # A fractional time needs a pax header per member in front of it: twice the headers to parse.
    (tmp_path / "g" / "site").mkdir(parents=True)
    (tmp_path / "g" / "site" / "m.py").write_text("x = 1\n")
    os.utime(tmp_path / "g" / "site" / "m.py", (1_600_000_000.5, 1_600_000_000.5))
    packed = io.BytesIO()
    archive.pack(tmp_path / "g", packed)
    raw = gzip.decompress(packed.getvalue())
    assert raw[156:157] != tarfile.XHDTYPE and b"mtime=" not in raw


def test_a_small_archive_never_inflates_into_a_large_piece() -> None:
    bomb = zlib.compressobj(9, zlib.DEFLATED, 31)
    data = bomb.compress(bytes(64 << 20)) + bomb.flush()
    assert len(data) < 100_000
    inflater = archive.Inflater()
    pieces = list(inflater.feed(data))
    inflater.end()
    assert sum(map(len, pieces)) == 64 << 20 and max(map(len, pieces)) <= 1 << 20


def test_an_archive_cut_short_or_not_gzip_does_not_inflate() -> None:
    whole = gzip.compress(b"x" * 100_000)
    cut = archive.Inflater()
    list(cut.feed(whole[: len(whole) // 2]))
    with pytest.raises(RemoteCacheError, match="ends early"):
        cut.end()
    with pytest.raises(RemoteCacheError, match="gzip"):
        list(archive.Inflater().feed(b"not gzip at all, but long enough to have a header"))


def test_a_file_that_differs_from_its_record_is_found_from_the_hash_taken_while_writing(tmp_path: Path) -> None:
    site = tmp_path / "site"
    info = site / "demo-1.0.dist-info"
    info.mkdir(parents=True)
    (site / "demo.py").write_text("x = 1\n")
    right = "sha256=" + records.base64.urlsafe_b64encode(hashlib.sha256(b"x = 1\n").digest()).rstrip(b"=").decode()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n")
    (info / "RECORD").write_text(f"demo.py,{right},6\ndemo-1.0.dist-info/METADATA,,\ndemo-1.0.dist-info/RECORD,,\n")
    dists = records.installed(site)
    assert records.changed_files(site, dists, hashed={"demo.py": right}) == []
    # What the writer hashed is what counts: the file on disk is not read again.
    wrong = "sha256=" + "A" * 43
    assert records.changed_files(site, dists, hashed={"demo.py": wrong}) == ["changed: demo 1.0: demo.py"]
    with pytest.raises(cache.Damaged, match=r"changed: demo 1\.0: demo\.py"):
        cache.check_unpacked("v1/generations/g/", site, {"demo.py": wrong})


@pytest.mark.slow
def test_a_consistent_entry_whose_archive_is_not_gzip_is_refused_and_the_sync_builds(
    repo: Repo,
    remote: str,  # noqa: F811
    azurite: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    repo.write("bsf-alpha")
    generation = published_and_uploaded(repo, azurite, remote)
    replace_archive(azurite, remote, generation, b"\x1f\x8b" + os.urandom(4096))  # a gzip's magic, then noise
    b = instance_b(tmp_path, monkeypatch)
    with caplog.at_level(logging.INFO, logger="bootstrap"):
        sync(b.settings())
    key = f"v1/generations/{generation}/"
    named = [r.getMessage() for r in caplog.records if key in r.getMessage() and r.levelno >= logging.WARNING]
    assert len(named) == 1 and "is damaged" in named[0] and "gzip" in named[0], named
    assert b.manifest()["origin"] == "built" and b.installed() == repo.installed()
    assert not any((b.packages_dir / "staging").iterdir())


def test_a_writer_whose_end_marker_never_came_still_ends() -> None:
    # A Ctrl-C in close() while its queue is full: the end marker is never queued, and the thread must not wait
    # for it forever (it would keep a long-running host's sync thread, or the interpreter at exit).
    writer = archive._Writer()
    thread = writer._thread
    assert thread is not None
    writer._closing.set()  # what close() does first, before the put a Ctrl-C would interrupt
    thread.join(timeout=5)
    assert not thread.is_alive() and thread.daemon
