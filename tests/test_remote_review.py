"""Review of the remote cache (#17): bugs found, each with the test that showed it."""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from datetime import UTC
from pathlib import Path

import pytest

from bootstrap.pipeline.sync import sync
from tests.conftest import Repo
from tests.test_remote_cache import (  # noqa: F401 (fixtures)
    azurite,
    blob_name,
    container_client,
    instance_b,
    no_index,
    published_and_uploaded,
    remote,
    replace_archive,
    wait_for_blob,
)

STATE = "apps/one/v1/state/runtime-requirements.txt"


@pytest.mark.slow
def test_a_sync_without_a_runtime_change_does_not_put_back_its_stale_runtime_additions(
    repo: Repo,
    remote: str,  # noqa: F811 (the fixture)
    azurite: str,  # noqa: F811 (the fixture)
    run_cli,
    caplog: pytest.LogCaptureFixture,
) -> None:  # type: ignore[no-untyped-def]
    """An instance whose runtime additions are older than the remote cache's (another instance added a
    package since) builds a generation for a new requirement: its upload must not replace the newer state."""
    repo.write("bsf-alpha==1.0")
    added = run_cli("add", "bsf-gamma")
    assert added.code == 0, added.err
    wait_for_blob(azurite, remote, STATE)
    client = container_client(azurite, remote)
    newer = b"# another instance's, newer\nbsf-gamma\nbsf-beta\n"
    client.get_blob_client(STATE).upload_blob(newer, overwrite=True)
    repo.write("bsf-alpha==2.0")  # a deploy: a new generation built here, no runtime change
    with caplog.at_level(logging.INFO, logger="bootstrap"):
        sync(repo.settings())
    started = re.search(r"in the background \(pid (\d+)", caplog.text)
    assert started is not None, caplog.text
    wait_for_exit(int(started.group(1)))
    wait_for_blob(azurite, remote, blob_name(repo.manifest()["generation"], "meta.json"))
    assert bytes(client.get_blob_client(STATE).download_blob().readall()) == newer


def wait_for_exit(pid: int, timeout: float = 60) -> None:
    """Until the detached uploader (reaped by this process's thread) is gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise AssertionError(f"the uploader {pid} is still running")


class _FailingBlob:
    """A blob whose service stops answering: the SDK's error names the request, SAS and all."""

    def __init__(self, fail_on: str) -> None:
        self.fail_on = fail_on

    def _maybe_fail(self, what: str) -> None:
        if what == self.fail_on:
            from azure.core.exceptions import ServiceRequestError

            raise ServiceRequestError(f"Max retries exceeded with url: /c/claim?comp=lease&sv=1&sig={SECRET}")

    def upload_blob(self, *args: object, **kwargs: object) -> None:
        self._maybe_fail("upload")

    def acquire_lease(self, **kwargs: object) -> _FailingBlob:
        self._maybe_fail("acquire")
        return self

    def renew(self) -> None:
        self._maybe_fail("renew")

    def release(self) -> None:
        pass


class _Client:
    url = "http://127.0.0.1:1/devstoreaccount1/c"

    def __init__(self, blob: _FailingBlob) -> None:
        self.blob = blob

    def create_container(self) -> None:
        pass

    def get_blob_client(self, name: str) -> _FailingBlob:
        return self.blob


SECRET = "c2VjcmV0LXNpZ25hdHVyZQ%3D"


@pytest.mark.parametrize("fail_on", ["upload", "renew"])
def test_a_network_error_while_claiming_or_renewing_is_one_redacted_line(
    fail_on: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Raw, the SDK's error escaped the uploader (``claim``'s blob, the lease's renewal after the archive): a
    traceback in remote-upload.log carrying the request's URL, a SAS signature with it."""
    from azure.core.exceptions import AzureError

    from bootstrap.errors import RemoteCacheError
    from bootstrap.remote import azure_blob

    container = azure_blob.Container(_Client(_FailingBlob(fail_on)), "")  # type: ignore[arg-type]
    with pytest.raises(RemoteCacheError) as caught, container.claim("v1/generations/g/claim", 60) as renew:
        assert renew is not None
        later = time.monotonic() + 3600  # the quarter-lease wait is over: this renewal asks the service
        monkeypatch.setattr(azure_blob.time, "monotonic", lambda: later)
        renew()
    monkeypatch.undo()
    assert not isinstance(caught.value, AzureError)
    assert SECRET not in str(caught.value)
    azure_blob._down.clear()


@pytest.mark.slow
@pytest.mark.parametrize("hostile", ["lock", "extra"])
def test_what_an_archive_holds_beside_its_site_is_not_served_unchecked(
    hostile: str,
    repo: Repo,
    remote: str,  # noqa: F811 (the fixture)
    azurite: str,  # noqa: F811 (the fixture)
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only the site is checked (RECORDs): the archive's lock.txt (the next resolution's seed) and anything
    else beside the site were published as they came. A hostile but consistent entry, its site intact: its
    lock.txt naming an index (taken; the published lock is this instance's pins), or a file of its own
    at the top (refused: built here)."""
    import io

    from bootstrap.remote import archive

    repo.write("bsf-alpha==1.0")
    generation = published_and_uploaded(repo, azurite, remote)
    folder = tmp_path / "hostile"
    shutil.copytree(repo.settings().layout.generation(generation), folder)
    (folder / "generation.json").unlink()
    if hostile == "lock":
        (folder / "lock.txt").write_text("--index-url https://evil.example/simple\nbsf-alpha==1.0\n")
    else:
        (folder / "extra.pth").write_text("import os\n")
    raw = io.BytesIO()
    archive.pack(folder, raw)
    data = raw.getvalue()
    replace_archive(azurite, remote, generation, data)
    b = instance_b(tmp_path, monkeypatch)
    if hostile == "lock":
        no_index(monkeypatch)
    sync(b.settings())
    assert b.manifest()["origin"] == ("remote-cache" if hostile == "lock" else "built")
    published = b.settings().layout.generation(b.manifest()["generation"])
    assert "evil" not in (published / "lock.txt").read_text()
    assert not (published / "extra.pth").exists()


def test_a_container_scoped_sas_can_upload(azurite: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """A SAS for the one container (the least a deployment hands out) may not create containers: every write
    began with create_container, whose 403 failed the write itself."""
    import uuid
    from datetime import datetime, timedelta

    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    from bootstrap.remote import azure_blob
    from bootstrap.settings import Settings

    name = f"t{uuid.uuid4().hex[:20]}"
    container_client(azurite, name).create_container()
    fields = dict(part.split("=", 1) for part in azurite.rstrip(";").split(";"))
    sas = generate_container_sas(
        fields["AccountName"],
        name,
        account_key=fields["AccountKey"],
        permission=ContainerSasPermissions(read=True, write=True, create=True, list=True, delete=True),
        expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    monkeypatch.setenv(
        "AZURE_STORAGE_CONNECTION_STRING", f"BlobEndpoint={fields['BlobEndpoint']};SharedAccessSignature={sas}"
    )
    monkeypatch.setenv("BOOTSTRAP_REMOTE_CACHE", f"azure-blob://{name}/apps/one")
    store = azure_blob.connect(Settings())
    assert store.put_new("v1/locks/k.txt", b"x==1\n")
    assert store.get("v1/locks/k.txt") == b"x==1\n"
