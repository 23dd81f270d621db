"""The remote cache of generations (BOOTSTRAP_REMOTE_CACHE) against a real Blob endpoint: Azurite.

Azurite is the npm package (``npm install -g azurite@3.33.0``; 3.37 needs Node 22): missing, these tests
skip, and fail when ``CI`` is set (``.ci/run`` installs it). Each test uses a container of its own.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootstrap.errors import RemoteCacheError, redact
from bootstrap.pipeline.sync import sync
from bootstrap.remote import archive
from tests.conftest import Repo, python_with_bootstrap
from tests.wheels import FIXTURE_DISTS, build_wheel

ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def connection_string(port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};"
    )


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A running Azurite blob service; its connection string."""
    binary = shutil.which("azurite-blob")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("azurite-blob is missing: npm install -g azurite@3.33.0")
        pytest.skip("azurite-blob is missing (npm install -g azurite@3.33.0)")
    port = _free_port()
    folder = tmp_path_factory.mktemp("azurite")
    argv = [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence"]
    argv += ["--skipApiVersionCheck", "--loose"]
    proc = subprocess.Popen(argv, cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("Azurite did not start")
            time.sleep(0.1)
        yield connection_string(port)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


@pytest.fixture
def remote(azurite: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """BOOTSTRAP_REMOTE_CACHE on a container of this test's own; its name."""
    container = f"t{uuid.uuid4().hex[:20]}"
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite)
    monkeypatch.setenv("BOOTSTRAP_REMOTE_CACHE", f"azure-blob://{container}/apps/one")
    return container


def container_client(azurite: str, container: str):  # type: ignore[no-untyped-def]
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient.from_connection_string(azurite).get_container_client(container)


def blob_name(generation: str, name: str) -> str:
    return f"apps/one/v1/generations/{generation}/{name}"


def wait_for_blob(azurite: str, container: str, name: str, timeout: float = 60) -> bytes:
    client = container_client(azurite, container)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            return bytes(client.get_blob_client(name).download_blob().readall())
        time.sleep(0.2)
    raise AssertionError(f"{name} never appeared")


def instance_b(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str = "b") -> Repo:
    """A fresh instance: the same repo, an empty packages folder and state folder of its own."""
    packages = tmp_path / name / "packages"
    monkeypatch.setenv("BOOTSTRAP_PACKAGES_DIR", str(packages))
    monkeypatch.setenv("BOOTSTRAP_STATE_DIR", str(tmp_path / name / "state"))
    return Repo(tmp_path / "repo", packages)


def no_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)


def replace_archive(azurite: str, container: str, generation: str, data: bytes) -> None:
    """Put ``data`` in place of the entry's archive, with a meta.json that matches it: a consistent entry."""
    import hashlib

    client = container_client(azurite, container)
    client.get_blob_client(blob_name(generation, "archive.tar.gz")).upload_blob(data, overwrite=True)
    meta_blob = client.get_blob_client(blob_name(generation, "meta.json"))
    meta = json.loads(meta_blob.download_blob().readall())
    meta.update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    meta_blob.upload_blob(json.dumps(meta).encode(), overwrite=True)


def published_and_uploaded(repo: Repo, azurite: str, container: str) -> str:
    sync(repo.settings())
    generation = repo.manifest()["generation"]
    wait_for_blob(azurite, container, blob_name(generation, "meta.json"))
    return str(generation)


@pytest.mark.slow
def test_a_new_instance_with_no_index_comes_up_from_the_cache(
    repo: Repo, remote: str, azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli
) -> None:  # type: ignore[no-untyped-def]
    repo.write("bsf-beta")
    generation = published_and_uploaded(repo, azurite, remote)
    a = repo.manifest()
    assert a["origin"] == "built" and a["lock_source"] == "resolved"
    b = instance_b(tmp_path, monkeypatch)
    no_index(monkeypatch)
    sync(b.settings())
    got = b.manifest()
    assert got["generation"] == generation
    assert got["origin"] == "remote-cache" and got["lock_source"] == "remote-cache"
    assert b.installed() == repo.installed() == {"bsf-alpha": "2.0", "bsf-beta": "2.0"}
    verified = run_cli("verify")
    assert verified.code == 0, verified.err
    status = run_cli("status")
    assert "from the remote cache" in status.out
    assert json.loads(run_cli("status", "--json").out)["origin"] == "remote-cache"


@pytest.mark.slow
def test_a_tampered_archive_is_refused_by_name_and_the_sync_builds(
    repo: Repo, remote: str, azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:  # type: ignore[no-untyped-def]
    repo.write("bsf-alpha==1.0")
    generation = published_and_uploaded(repo, azurite, remote)
    blob = container_client(azurite, remote).get_blob_client(blob_name(generation, "archive.tar.gz"))
    data = bytearray(blob.download_blob().readall())
    data[len(data) // 2] ^= 0xFF
    blob.upload_blob(bytes(data), overwrite=True)
    b = instance_b(tmp_path, monkeypatch)
    with caplog.at_level(logging.INFO, logger="bootstrap"):
        sync(b.settings())
    key = f"v1/generations/{generation}/"
    named = [r.getMessage() for r in caplog.records if key in r.getMessage() and r.levelno >= logging.WARNING]
    assert len(named) == 1 and "is damaged (sha256" in named[0] and "building it instead" in named[0], named
    assert b.manifest()["origin"] == "built" and b.installed() == {"bsf-alpha": "1.0"}
    assert not any((b.packages_dir / "staging").iterdir())


def test_an_entry_whose_archive_matches_its_meta_but_leads_out_is_refused(
    repo: Repo, remote: str, azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:  # type: ignore[no-untyped-def]
    """A consistent but hostile entry (an uploader's doing): unpacked as it arrives, refused at its first member
    that leads out, the rest of the download only hashed; one line names the key, and the sync builds."""

    repo.write("bsf-alpha==1.0")
    generation = published_and_uploaded(repo, azurite, remote)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name in ("site/ok.txt", "../escape.txt"):
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"hey"))
        filler = tarfile.TarInfo("site/after.bin")  # more after the refused member: the download goes on
        filler.size = 1 << 20
        tar.addfile(filler, io.BytesIO(os.urandom(1 << 20)))
    data = raw.getvalue()
    replace_archive(azurite, remote, generation, data)
    b = instance_b(tmp_path, monkeypatch)
    with caplog.at_level(logging.INFO, logger="bootstrap"):
        sync(b.settings())
    key = f"v1/generations/{generation}/"
    named = [r.getMessage() for r in caplog.records if key in r.getMessage() and r.levelno >= logging.WARNING]
    assert len(named) == 1 and "'../escape.txt', outside the generation" in named[0], named
    assert b.manifest()["origin"] == "built" and b.installed() == {"bsf-alpha": "1.0"}
    assert not (tmp_path / "b" / "escape.txt").exists() and not any((b.packages_dir / "staging").iterdir())


def test_an_archive_with_a_way_out_is_refused(tmp_path: Path) -> None:
    for member, kind in (("../escape", tarfile.REGTYPE), ("/etc/x", tarfile.REGTYPE), ("link", tarfile.SYMTYPE)):
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w:gz") as tar:
            info = tarfile.TarInfo(member)
            info.type = kind
            info.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else ""
            tar.addfile(info, io.BytesIO(b""))
        raw.seek(0)
        target = tmp_path / uuid.uuid4().hex
        target.mkdir()
        with pytest.raises(RemoteCacheError):
            archive.unpack(raw, target)
        assert not list(target.iterdir()) and not (tmp_path / "escape").exists()


def test_the_same_folder_packs_to_the_same_bytes(tmp_path: Path) -> None:
    (tmp_path / "g" / "site").mkdir(parents=True)
    (tmp_path / "g" / "site" / "m.py").write_text("x = 1\n")
    first, second = io.BytesIO(), io.BytesIO()
    assert archive.pack(tmp_path / "g", first) == archive.pack(tmp_path / "g", second)
    assert first.getvalue() == second.getvalue()


def _uploader(generation: str, env: dict[str, str]) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "bootstrap", "upload", "--generation", generation]
    return subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_two_uploaders_of_one_key_leave_one_consistent_entry(
    repo: Repo, azurite: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo.write("bsf-alpha==1.0")
    sync(repo.settings())  # no remote cache set: nothing uploaded yet
    generation = repo.manifest()["generation"]
    container = f"t{uuid.uuid4().hex[:20]}"
    env = {**os.environ, "AZURE_STORAGE_CONNECTION_STRING": azurite}
    env["BOOTSTRAP_REMOTE_CACHE"] = f"azure-blob://{container}/apps/one"
    env["_BOOTSTRAP_REMOTE_BLOCK_PAUSE"] = "2"  # each upload takes a while: the two overlap
    both = [_uploader(generation, env), _uploader(generation, env)]
    outputs = [proc.communicate(timeout=120)[0] for proc in both]
    assert [proc.returncode for proc in both] == [0, 0], outputs
    client = container_client(azurite, container)
    meta = json.loads(client.get_blob_client(blob_name(generation, "meta.json")).download_blob().readall())
    data = client.get_blob_client(blob_name(generation, "archive.tar.gz")).download_blob().readall()
    import hashlib

    assert meta["sha256"] == hashlib.sha256(data).hexdigest() and meta["size"] == len(data)
    assert sum("uploaded" in out.splitlines()[-1] for out in outputs) == 1, outputs
    # The claim kept the other from uploading at all: it waited for the first one's meta.json.
    assert not any("finished first" in out for out in outputs), outputs


@pytest.mark.slow
def test_an_uploader_killed_mid_archive_leaves_nothing_a_consumer_takes(
    repo: Repo, remote: str, azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo.write("bsf-alpha==1.0")
    monkeypatch.delenv("BOOTSTRAP_REMOTE_CACHE")
    sync(repo.settings())
    generation = repo.manifest()["generation"]
    env = {**os.environ, "BOOTSTRAP_REMOTE_CACHE": f"azure-blob://{remote}/apps/one"}
    env["_BOOTSTRAP_REMOTE_BLOCK_PAUSE"] = "30"  # after each block of the archive: killed in the middle
    proc = _uploader(generation, env)
    claim = container_client(azurite, remote).get_blob_client(blob_name(generation, "claim"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if claim.get_blob_properties().lease.state == "leased":
                break
        time.sleep(0.1)
    time.sleep(1.5)  # packed, a block staged, pausing
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    names = [blob.name for blob in container_client(azurite, remote).list_blobs()]
    assert blob_name(generation, "meta.json") not in names and blob_name(generation, "archive.tar.gz") not in names
    b = instance_b(tmp_path, monkeypatch)
    monkeypatch.setenv("BOOTSTRAP_LOCK_TIMEOUT", "3")  # its own background upload waits on the dead claim briefly
    sync(b.settings())
    assert b.manifest()["origin"] == "built" and b.installed() == {"bsf-alpha": "1.0"}


@pytest.mark.slow
def test_the_account_key_appears_nowhere(
    repo: Repo, remote: str, azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog, run_cli
) -> None:  # type: ignore[no-untyped-def]
    repo.write("bsf-alpha==1.0")
    monkeypatch.setenv("_BOOTSTRAP_REMOTE_BLOCK_PAUSE", "3")  # the uploader lives long enough to be looked at
    with caplog.at_level(logging.DEBUG, logger="bootstrap"):
        sync(repo.settings())
    pids = [int(r.getMessage().split("pid ")[1].split(",")[0]) for r in caplog.records if "(pid " in r.getMessage()]
    assert pids
    cmdline = Path(f"/proc/{pids[0]}/cmdline").read_bytes()
    assert b"upload" in cmdline and KEY.encode() not in cmdline and b"AccountKey" not in cmdline
    generation = repo.manifest()["generation"]
    wait_for_blob(azurite, remote, blob_name(generation, "meta.json"))
    b = instance_b(tmp_path, monkeypatch)
    with caplog.at_level(logging.DEBUG, logger="bootstrap"):
        sync(b.settings())
    logged = [caplog.text]
    # An unreachable endpoint with the same key: a warning line, a build, and no key in what it says.
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection_string(_free_port()))
    c = instance_b(tmp_path, monkeypatch, "c")
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="bootstrap"):
        sync(c.settings())
    assert c.manifest()["origin"] == "built"
    unreachable = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(unreachable) == 1 and "the remote cache could not" in unreachable[0], unreachable
    status = run_cli("status", "--json")
    seen = [caplog.text, *logged, status.out, status.err, repo.manifest_path.read_text(), b.manifest_path.read_text()]
    for folder in (repo.state_dir, tmp_path / "b" / "state", tmp_path / "c" / "state", b.packages_dir):
        seen += [p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file() and p.stat().st_size < 1e6]
    for text in seen:
        assert KEY not in text and KEY[:20] not in text
    assert "AccountKey=****" in redact(connection_string(1))


@pytest.mark.slow
def test_loose_pins_agree_a_new_instance_takes_the_first_ones_lock(
    repo: Repo, remote: str, azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo.write("bsf-alpha")
    published_and_uploaded(repo, azurite, remote)
    assert repo.installed() == {"bsf-alpha": "2.0"}
    older = tmp_path / "older-wheelhouse"  # B's index offers only 1.0: left alone, it would resolve to that
    older.mkdir()
    build_wheel(next(d for d in FIXTURE_DISTS if d.name == "bsf-alpha" and d.version == "1.0"), older)
    monkeypatch.setenv("PIP_FIND_LINKS", str(older))
    b = instance_b(tmp_path, monkeypatch)
    sync(b.settings())
    assert b.installed() == {"bsf-alpha": "2.0"} and b.manifest()["lock_source"] == "remote-cache"


@pytest.mark.slow
def test_a_runtime_addition_reaches_a_fresh_instance(
    repo: Repo, remote: str, azurite: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli
) -> None:  # type: ignore[no-untyped-def]
    repo.write("bsf-alpha==1.0")
    sync(repo.settings())
    added = run_cli("add", "bsf-gamma")
    assert added.code == 0, added.err
    generation = repo.manifest()["generation"]
    wait_for_blob(azurite, remote, "apps/one/v1/state/runtime-requirements.txt")
    wait_for_blob(azurite, remote, blob_name(generation, "meta.json"))
    b = instance_b(tmp_path, monkeypatch)
    no_index(monkeypatch)
    sync(b.settings())
    assert b.installed() == {"bsf-alpha": "1.0", "bsf-gamma": "1.0"}
    assert b.manifest()["origin"] == "remote-cache"
    assert "bsf-gamma" in (tmp_path / "b" / "state" / "runtime-requirements.txt").read_text()


PROBE = "import sys, bootstrap\n{code}\nprint(sorted({{m.split('.')[0] for m in sys.modules}} & {{'azure'}}))\n"


def test_without_the_setting_azure_is_never_imported(repo: Repo) -> None:
    repo.write("bsf-alpha==1.0")
    code = (
        "from bootstrap.pipeline.sync import sync\nfrom bootstrap.settings import load_settings\nsync(load_settings())"
    )
    proc = python_with_bootstrap(PROBE.format(code=code))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert json.loads(repo.manifest_path.read_text())["origin"] == "built"
    assert not (repo.state_dir / "remote-upload.log").exists()  # no uploader was started


@pytest.mark.slow
def test_a_no_op_startup_with_the_setting_never_imports_azure(repo: Repo, remote: str, azurite: str) -> None:
    repo.write("bsf-alpha==1.0")
    published_and_uploaded(repo, azurite, remote)
    proc = python_with_bootstrap(PROBE.format(code="bootstrap.startup()"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_a_malformed_setting_or_no_credentials_is_one_line_naming_the_setting(
    repo: Repo, monkeypatch: pytest.MonkeyPatch, run_cli
) -> None:  # type: ignore[no-untyped-def]
    repo.write("bsf-alpha==1.0")
    monkeypatch.setenv("BOOTSTRAP_REMOTE_CACHE", "s3://bucket")
    bad = run_cli("sync")
    assert bad.code != 0 and "BOOTSTRAP_REMOTE_CACHE" in bad.err and len(bad.err.strip().splitlines()) == 1
    monkeypatch.setenv("BOOTSTRAP_REMOTE_CACHE", "azure-blob://some-container")
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    missing = run_cli("sync")
    assert missing.code != 0 and "BOOTSTRAP_REMOTE_CACHE" in missing.err, missing.err
    assert "AZURE_STORAGE_CONNECTION_STRING" in missing.err and len(missing.err.strip().splitlines()) == 1
