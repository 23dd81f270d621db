"""The one module that imports the Azure SDK: a tiny client of one container (``BOOTSTRAP_REMOTE_CACHE``).

Credentials as Azure SDK users give them: ``AZURE_STORAGE_CONNECTION_STRING``, else the account URL
(``BOOTSTRAP_REMOTE_CACHE_ACCOUNT_URL``) with azure-identity's ``DefaultAzureCredential`` (a managed
identity on the platform). They come from the environment only, never from argv, and no message carries
them: every failure is a ``RemoteCacheError`` of one redacted line.

Imported only when the setting is on, and never on the start-up fast path.
"""

from __future__ import annotations

import base64
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
)
from azure.storage.blob import BlobServiceClient, ContainerClient, ExponentialRetry

from bootstrap.errors import RemoteCacheError, SettingsError, redact
from bootstrap.settings import REMOTE_CACHE_URL, Settings

CONNECTION_STRING = "AZURE_STORAGE_CONNECTION_STRING"
BLOCK_SIZE = 4 << 20  # an archive goes up in blocks this size, committed at the end: never half-visible
# Test hook (no setting): seconds to pause after each block of an archive, so a test can kill an uploader mid-way.
_PAUSE_VARIABLE = "_BOOTSTRAP_REMOTE_BLOCK_PAUSE"
# The SDK's default retries back off 15 s, then 45 s: a sync that cannot reach the cache would wait minutes
# before building. One quick retry; then (``_down``) this process does not try that account again for a while.
_CLIENT_OPTIONS: dict[str, Any] = {"connection_timeout": 10, "read_timeout": 60}
_DOWN_SECONDS = 60.0
_down: dict[str, float] = {}  # the account's endpoint: until when it counts as unreachable


@dataclass(frozen=True)
class Where:
    container: str
    prefix: str  # "" or "a/b/" (ends in "/")


def parse(url: str) -> Where:
    match = REMOTE_CACHE_URL.fullmatch(url)
    if match is None:
        raise SettingsError("BOOTSTRAP_REMOTE_CACHE: not azure-blob://<container>[/<prefix>]")
    prefix = (match.group("prefix") or "").strip("/")
    return Where(match.group("container"), f"{prefix}/" if prefix else "")


def _failure(what: str, exc: BaseException, endpoint: str = "") -> RemoteCacheError:
    if isinstance(exc, ServiceRequestError) and endpoint:  # no answer at all: not again soon
        _down[endpoint] = time.monotonic() + _DOWN_SECONDS
    reason = getattr(exc, "reason", None) or getattr(exc, "message", None) or str(exc) or type(exc).__name__
    first = " ".join(str(reason).split("\n")[0].split())[:300]
    return RemoteCacheError(redact(f"the remote cache could not {what}: {first}"))


class Container:
    """One container of blobs, under the setting's prefix: every name given here is relative to it."""

    def __init__(self, client: ContainerClient, prefix: str) -> None:
        self._client = client
        self.prefix = prefix
        self._endpoint = str(client.url).split("?")[0]

    def _blob(self, name: str) -> Any:
        self._refuse_if_down()
        return self._client.get_blob_client(self.prefix + name)

    def _refuse_if_down(self) -> None:
        if _down.get(self._endpoint, 0.0) > time.monotonic():
            message = f"the remote cache could not be reached a moment ago ({self._endpoint})"
            raise RemoteCacheError(redact(message), repeated=True)

    def exists(self, name: str) -> bool:
        try:
            return bool(self._blob(name).exists())
        except AzureError as exc:
            raise _failure(f"look up {name}", exc, self._endpoint) from None

    def get(self, name: str, limit: int = 1 << 20) -> bytes | None:
        """A small blob's bytes (at most ``limit``), or None when it does not exist (nor its container)."""
        try:
            downloader = self._blob(name).download_blob()
            if downloader.size > limit:
                raise RemoteCacheError(f"the remote cache's {name} is {downloader.size} bytes, more than {limit}")
            return bytes(downloader.readall())
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise _failure(f"read {name}", exc, self._endpoint) from None

    def stream(self, name: str) -> tuple[int, Iterator[bytes]]:
        """A blob's size and its bytes in chunks; ``RemoteCacheError`` if it is not there."""
        try:
            downloader = self._blob(name).download_blob()
        except AzureError as exc:
            raise _failure(f"read {name}", exc, self._endpoint) from None

        def chunks() -> Iterator[bytes]:
            try:
                yield from downloader.chunks()
            except AzureError as exc:
                raise _failure(f"read {name}", exc, self._endpoint) from None

        return int(downloader.size), chunks()

    def put_new(self, name: str, data: bytes) -> bool:
        """Write ``name`` only if it does not exist (If-None-Match: *); False when it did (nothing written)."""
        self._ensure_container()
        try:
            self._blob(name).upload_blob(data, overwrite=False)
        except ResourceExistsError:
            return False
        except HttpResponseError as exc:
            if exc.status_code in (409, 412):
                return False
            raise _failure(f"write {name}", exc, self._endpoint) from None
        except AzureError as exc:
            raise _failure(f"write {name}", exc, self._endpoint) from None
        return True

    def put(self, name: str, data: bytes) -> None:
        """Write (or replace) a small blob."""
        self._ensure_container()
        try:
            self._blob(name).upload_blob(data, overwrite=True)
        except AzureError as exc:
            raise _failure(f"write {name}", exc, self._endpoint) from None

    def put_file(self, name: str, handle: IO[bytes], on_block: Callable[[], None] | None = None) -> None:
        """Upload a file in blocks, committed in one step at the end: until then ``name`` holds what it held."""
        self._ensure_container()
        blob = self._blob(name)
        pause = float(os.environ.get(_PAUSE_VARIABLE) or 0)
        size = BLOCK_SIZE if not pause else 64 << 10
        ids: list[str] = []
        try:
            while block := handle.read(size):
                block_id = base64.b64encode(f"{len(ids):08d}".encode()).decode()
                blob.stage_block(block_id, block, length=len(block))
                ids.append(block_id)
                if on_block is not None:
                    on_block()
                if pause:
                    time.sleep(pause)
            blob.commit_block_list(ids)
        except AzureError as exc:
            raise _failure(f"write {name}", exc, self._endpoint) from None

    def names(self, under: str) -> list[str]:
        try:
            return [str(item.name)[len(self.prefix) :] for item in self._client.list_blobs(self.prefix + under)]
        except ResourceNotFoundError:
            return []
        except AzureError as exc:
            raise _failure(f"list {under}", exc, self._endpoint) from None

    @contextlib.contextmanager
    def claim(self, name: str, seconds: int = 60) -> Iterator[Callable[[], None] | None]:
        """Hold a lease on the claim blob ``name`` (made if absent); yields its renewal, or None when another
        process holds it. Released on the way out (a holder that dies loses it after ``seconds``)."""
        self._ensure_container()
        blob = self._blob(name)
        try:
            with contextlib.suppress(ResourceExistsError, HttpResponseError):
                blob.upload_blob(b"", overwrite=False)
            lease = blob.acquire_lease(lease_duration=seconds)
        except HttpResponseError as exc:
            if exc.status_code == 409:  # LeaseAlreadyPresent
                yield None
                return
            raise _failure(f"claim {name}", exc, self._endpoint) from None
        except AzureError as exc:
            raise _failure(f"claim {name}", exc, self._endpoint) from None
        renewed = [time.monotonic()]

        def renew() -> None:  # at most every quarter of the lease
            if time.monotonic() - renewed[0] > seconds / 4:
                try:
                    lease.renew()
                except AzureError as exc:  # raw, its message names the request (a SAS with it)
                    raise _failure(f"renew its claim on {name}", exc, self._endpoint) from None
                renewed[0] = time.monotonic()

        try:
            yield renew
        finally:
            with contextlib.suppress(AzureError):
                lease.release()

    def _ensure_container(self) -> None:
        self._refuse_if_down()
        try:
            self._client.create_container()
        except ResourceExistsError:
            pass
        except HttpResponseError as exc:
            # 403: a credential for this one container (a container SAS, a role scoped to it) may not create
            # containers; the write that follows says whether it may write there.
            if exc.status_code not in (403, 409):
                raise _failure("create its container", exc, self._endpoint) from None
        except AzureError as exc:
            raise _failure("create its container", exc, self._endpoint) from None


def _retry() -> ExponentialRetry:
    return ExponentialRetry(initial_backoff=1, increment_base=2, retry_total=1, random_jitter_range=1)


def connect(settings: Settings) -> Container:
    """The container the settings name, signed in as the environment says; ``SettingsError`` without credentials."""
    assert settings.remote_cache is not None
    where = parse(settings.remote_cache)
    connection = os.environ.get(CONNECTION_STRING)
    try:
        if connection:
            service = BlobServiceClient.from_connection_string(connection, retry_policy=_retry(), **_CLIENT_OPTIONS)
        elif settings.remote_cache_account_url:
            from azure.identity import DefaultAzureCredential  # slow path: only without a connection string

            service = BlobServiceClient(
                settings.remote_cache_account_url,
                credential=DefaultAzureCredential(),
                retry_policy=_retry(),
                **_CLIENT_OPTIONS,
            )
        else:
            raise SettingsError(
                f"BOOTSTRAP_REMOTE_CACHE is set but no credentials are: set {CONNECTION_STRING}, or "
                "BOOTSTRAP_REMOTE_CACHE_ACCOUNT_URL (signed in with DefaultAzureCredential)"
            )
    except ImportError:
        raise SettingsError(
            "BOOTSTRAP_REMOTE_CACHE_ACCOUNT_URL needs azure-identity: pip install 'bootstrap-packages[azure-blob]'"
        ) from None
    except ValueError as exc:  # a malformed connection string or URL: its text is not repeated (it may hold a key)
        raise SettingsError(
            f"BOOTSTRAP_REMOTE_CACHE: {CONNECTION_STRING} or BOOTSTRAP_REMOTE_CACHE_ACCOUNT_URL is malformed "
            f"({type(exc).__name__})"
        ) from None
    return Container(service.get_container_client(where.container), where.prefix)
