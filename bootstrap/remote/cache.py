"""The remote cache of published generations (``BOOTSTRAP_REMOTE_CACHE``): what goes up, what comes down.

Under the setting's prefix, keyed on content (``ARCHIVE_VERSION`` first, so a new archive format gets new keys):

    v1/generations/<generation-id>/archive.tar.gz   the generation folder (site with bytecode, lock, record)
    v1/generations/<generation-id>/meta.json        its sha256 and size, the lock, the packages: written LAST,
                                                    If-None-Match: *; the generation is there only if this is
    v1/generations/<generation-id>/claim            a blob whose lease an uploader holds while it uploads
    v1/locks/<resolution key>.txt                   a resolution of loose pins, taken by every new instance
    v1/state/runtime-requirements.txt, adopted.json the runtime additions and the adopted legacy set

The generation id is already the hash of the pins, what was installed, the interpreter, platform, libc,
the bytecode flag, the overrides and the generation format (``pipeline.publish.generation_id``).
What comes down is checked: the archive's size and sha256 against meta.json, then (``check_unpacked``)
every file against its RECORD, and no file that none lists. Only the workspace's generations go up:
an organisation's link into the workspace's.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import BinaryIO, TypedDict

from bootstrap.errors import RemoteCacheError, VerificationError, redact
from bootstrap.remote import archive
from bootstrap.settings import Settings
from bootstrap.store import manifest, records
from bootstrap.store.fs import atomic_write_text, human_size
from bootstrap.store.layout import GENERATION_FILE, LOCK_FILE, SITE_DIR

TYPE_CHECKING = False
if TYPE_CHECKING:
    from bootstrap.remote.azure_blob import Container
    from bootstrap.store.manifest import PackageEntry

log = logging.getLogger("bootstrap")

ARCHIVE_VERSION = 1  # part of every key: v1/...
ARCHIVE_NAME = "archive.tar.gz"
META_NAME = "meta.json"
CLAIM_NAME = "claim"
STATE_FILES = ("runtime-requirements.txt", "adopted.json")  # the state folder's names (store.paths)
CLAIM_SECONDS = 60  # a lease's length (Azure allows 15 to 60 s): renewed after each block
_WAIT_STEP = 1.0
_PIPE_SIZE = 1 << 20


class BuiltBy(TypedDict):
    host: str
    pid: int
    bootstrap: str


class Meta(TypedDict):
    """``meta.json``: what makes a generation present in the remote cache."""

    format: int  # ARCHIVE_VERSION
    archive: str  # "tar+gzip"
    generation: str
    sha256: str  # of the archive's bytes
    size: int
    lock: str  # the pins installed (the generation's lock.txt)
    packages: list[PackageEntry]
    built_by: BuiltBy
    built_at: str


class Damaged(RemoteCacheError):
    """An entry whose archive does not match its meta.json, or whose files do not match their RECORDs."""

    def __init__(self, key: str, why: str) -> None:
        super().__init__(f"the remote cache's {key} is damaged ({why}): building it instead")
        self.key = key


def generation_key(generation: str) -> str:
    return f"v{ARCHIVE_VERSION}/generations/{generation}/"


def lock_key(resolution_key: str) -> str:
    return f"v{ARCHIVE_VERSION}/locks/{resolution_key}.txt"


def state_key(name: str) -> str:
    return f"v{ARCHIVE_VERSION}/state/{name}"


def connect(settings: Settings) -> Container:
    from bootstrap.remote import azure_blob  # slow path: the Azure SDK only when the setting is on

    return azure_blob.connect(settings)


def _bootstrap_version() -> str:
    try:
        return version("bootstrap-packages")
    except PackageNotFoundError:
        return "unknown"


# Publishing


def upload_generation(settings: Settings, generation: str) -> str:
    """Upload a published generation (archive, then meta.json) unless the remote cache has it; what happened.

    Another uploader holding the key's claim: wait for its meta.json (up to the lock timeout), taking the
    claim over if its holder died (its lease runs out)."""
    folder = settings.layout.generation(generation)
    record = manifest.read_generation_record(folder / GENERATION_FILE)
    if record is None:
        raise RemoteCacheError(f"generation {generation} is not published in {settings.layout.generations}")
    linked = archive.linked_entries(folder)
    if linked:
        return f"generation {generation} holds links ({linked[0]}, ...): not uploaded"
    store = connect(settings)
    key = generation_key(generation)
    deadline = time.monotonic() + settings.lock_timeout
    while True:
        if store.exists(key + META_NAME):
            return f"the remote cache has {key} already"
        with store.claim(key + CLAIM_NAME, CLAIM_SECONDS) as renew:
            if renew is not None:
                if store.exists(key + META_NAME):  # finished while we took the claim
                    return f"the remote cache has {key} already"
                return _upload(settings, store, key, folder, record.get("packages", []), renew)
        if time.monotonic() > deadline:
            return f"another uploader holds {key}'s claim and did not finish within {settings.lock_timeout:.0f}s"
        time.sleep(_WAIT_STEP)


def _upload(
    settings: Settings,
    store: Container,
    key: str,
    folder: Path,
    packages: list[PackageEntry],
    renew: Callable[[], None],
) -> str:
    """With the claim held: the archive in blocks (committed at once), then meta.json, If-None-Match: *."""
    started = time.monotonic()
    with tempfile.TemporaryFile(dir=settings.layout.staging if settings.layout.staging.is_dir() else None) as tmp:
        packed = archive.pack(folder, tmp)
        tmp.seek(0)
        log.info("uploading %s to the remote cache (%s)", key + ARCHIVE_NAME, human_size(packed.size))
        store.put_file(key + ARCHIVE_NAME, tmp, on_block=renew)
    lock = folder / LOCK_FILE
    meta: Meta = {
        "format": ARCHIVE_VERSION,
        "archive": archive.FORMAT,
        "generation": folder.name,
        "sha256": packed.sha256,
        "size": packed.size,
        "lock": lock.read_text(encoding="utf-8") if lock.is_file() else "",
        "packages": packages,
        "built_by": {"host": socket.gethostname(), "pid": os.getpid(), "bootstrap": _bootstrap_version()},
        "built_at": manifest.now_iso(),
    }
    renew()
    if not store.put_new(key + META_NAME, (json.dumps(meta, indent=2) + "\n").encode()):
        return f"the remote cache has {key} already (another uploader finished first)"
    return f"uploaded {key} ({human_size(packed.size)}) in {time.monotonic() - started:.1f}s"


def upload_state(settings: Settings) -> None:
    """The runtime additions and the adopted legacy set, as the state folder holds them now."""
    store = connect(settings)
    for name in STATE_FILES:
        path = settings.layout.state / name
        if path.is_file():
            store.put(state_key(name), path.read_bytes())


def upload_lock(settings: Settings, resolution_key: str, text: str) -> None:
    """A resolution, for every instance with the same inputs to take (the first one stays: If-None-Match)."""
    try:
        if connect(settings).put_new(lock_key(resolution_key), text.encode()):
            log.info("the resolution went to the remote cache: %s", lock_key(resolution_key))
    except RemoteCacheError as exc:
        log.log(
            logging.DEBUG if exc.repeated else logging.WARNING, "%s: the resolution stays on this instance only", exc
        )


# Consuming


def fetch_lock(settings: Settings, resolution_key: str) -> str | None:
    """The lock another instance resolved from these very inputs, or None (a network error: a warning)."""
    try:
        raw = connect(settings).get(lock_key(resolution_key))
    except RemoteCacheError as exc:
        log.log(logging.DEBUG if exc.repeated else logging.WARNING, "%s: resolving here instead", exc)
        return None
    return raw.decode("utf-8", errors="replace") if raw is not None else None


def fetch_state(settings: Settings) -> None:
    """A fresh state folder (no overlay file) gets the runtime additions and adopted set the remote cache has."""
    layout = settings.layout
    if (layout.state / STATE_FILES[0]).exists():
        return
    try:
        store = connect(settings)
        found = {name: store.get(state_key(name)) for name in STATE_FILES}
    except RemoteCacheError as exc:
        log.log(
            logging.DEBUG if exc.repeated else logging.WARNING,
            "%s: the runtime additions are this instance's alone",
            exc,
        )
        return
    for name, raw in found.items():
        if raw is not None and not (layout.state / name).exists():
            layout.state.mkdir(parents=True, exist_ok=True)
            atomic_write_text(layout.state / name, raw.decode("utf-8", errors="replace"))
            log.info("%s came from the remote cache", name)


def fetch_generation(settings: Settings, generation: str, staging: Path) -> Meta | None:
    """Unpack the remote cache's ``generation`` into ``staging`` (empty but for its ``site``), checked against
    its meta.json and every RECORD; None when the remote cache has no such generation.

    ``Damaged`` for an entry that does not match; ``RemoteCacheError`` when the cache cannot be read."""
    store = connect(settings)
    key = generation_key(generation)
    raw = store.get(key + META_NAME)
    if raw is None:
        return None
    meta = _parse_meta(key, raw, generation)
    log.info("downloading %s from the remote cache (%s)", key + ARCHIVE_NAME, human_size(meta["size"]))
    started = time.monotonic()
    _, chunks = store.stream(key + ARCHIVE_NAME)
    hashes = _unpack_while_downloading(key, chunks, meta, staging)
    log.info("unpacked %s (%d files) in %.1fs", key, len(hashes), time.monotonic() - started)
    extra = sorted(set(os.listdir(staging)) - {SITE_DIR, LOCK_FILE, GENERATION_FILE})
    if extra:  # only the site is checked (RECORDs); nothing else of an archive is published unchecked
        raise Damaged(key, f"it holds {extra[0][:200]!r} beside its {SITE_DIR} folder")
    prefix = SITE_DIR + "/"
    check_unpacked(key, staging / SITE_DIR, {k[len(prefix) :]: v for k, v in hashes.items() if k.startswith(prefix)})
    return meta


def _unpack_while_downloading(key: str, chunks: Iterator[bytes], meta: Meta, staging: Path) -> dict[str, str]:
    """Unpack the archive as its bytes arrive: a thread downloads, hashes and inflates them into a pipe, this
    one parses the tar and hands files to a writer (``archive.unpack``): network, zlib and disk work at once.
    What is unpacked is staging only, nothing serves it: the archive's size and sha256 are checked once its
    last byte has arrived, then every file against its RECORD (``check_unpacked``); a mismatch is ``Damaged``
    and the caller removes the staging folder. Each file's hash, as it was written."""
    digest, received = hashlib.sha256(), [0]
    failure: list[BaseException] = []
    broken: list[RemoteCacheError] = []  # the bytes do not inflate: whose fault the hash says, below
    stop = threading.Event()  # this sync is interrupted (Ctrl-C, a stop): the download ends at its next chunk
    read_end, write_end = os.pipe()
    with contextlib.suppress(OSError, AttributeError):  # Linux: a MiB at a time, not 64 KiB (a switch each)
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)

    def download() -> None:
        pipe: BinaryIO | None = open(write_end, "wb")  # noqa: SIM115 (closed below, or when unpacking stopped)
        inflater = archive.Inflater()
        try:
            for chunk in chunks:
                if stop.is_set():
                    break
                digest.update(chunk)
                received[0] += len(chunk)
                if received[0] > meta["size"]:
                    break  # more than meta.json says: refused below, whatever the rest holds
                if pipe is not None:
                    pipe = _inflate_into(pipe, inflater, chunk, broken)
            if pipe is not None and not stop.is_set() and received[0] == meta["size"]:
                inflater.end()
        except RemoteCacheError as exc:
            broken.append(exc)
        except BaseException as exc:  # a network error: reported once unpacking has seen the stream end
            failure.append(exc)
        finally:
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    reader = open(read_end, "rb", buffering=_PIPE_SIZE)  # noqa: SIM115 (before the thread: never a pipe nobody reads)
    thread = threading.Thread(target=download, name="bootstrap-remote-download", daemon=True)
    thread.start()
    try:
        with reader as pipe:
            hashes, unpacked = _unpack_from(pipe, staging)
    except BaseException:
        stop.set()
        raise
    finally:
        thread.join()
    if failure:
        raise failure[0] if isinstance(failure[0], RemoteCacheError) else RemoteCacheError(str(failure[0]))
    _refuse_unless_described(key, meta, digest.hexdigest(), received[0], broken[0] if broken else unpacked)
    return hashes


def _refuse_unless_described(key: str, meta: Meta, sha256: str, size: int, refused: RemoteCacheError | None) -> None:
    """``Damaged`` unless the bytes that came are the archive meta.json describes, and they unpacked."""
    if size != meta["size"] or sha256 != meta["sha256"]:
        got = sha256[:16] if size == meta["size"] else f"{size} bytes or more, not {meta['size']}"
        raise Damaged(key, f"sha256 {got}..., meta.json says {meta['sha256'][:16]}...")
    if refused is not None:  # the very archive, and it does not unpack: its uploader's doing
        raise Damaged(key, str(refused))


def _unpack_from(pipe: BinaryIO, staging: Path) -> tuple[dict[str, str], RemoteCacheError | None]:
    """The files unpacked from ``pipe`` (a tar) and their hashes, or the error that refused a member."""
    try:
        hashes = archive.unpack(pipe, staging, compressed=False)
    except RemoteCacheError as exc:
        return {}, exc
    while pipe.read(_PIPE_SIZE):  # what follows the tar's end still counts for the hash: inflated, so a MiB at
        pass  # a time (a small archive's zeros would swell in one read)
    return hashes, None


def _inflate_into(
    pipe: BinaryIO, inflater: archive.Inflater, chunk: bytes, broken: list[RemoteCacheError]
) -> BinaryIO | None:
    """``chunk`` inflated into ``pipe``; None once the pipe is closed: unpacking stopped, or the bytes do not
    inflate (``broken``). Either way the rest of the download is only hashed (which is to blame?)."""
    try:
        for piece in inflater.feed(chunk):
            pipe.write(piece)
        return pipe
    except RemoteCacheError as exc:
        broken.append(exc)
    except BrokenPipeError:
        pass
    with contextlib.suppress(OSError):
        pipe.close()
    return None


def _parse_meta(key: str, raw: bytes, generation: str) -> Meta:
    try:
        meta = json.loads(raw)
        ok = (
            isinstance(meta, dict)
            and meta.get("format") == ARCHIVE_VERSION
            and meta.get("generation") == generation
            and isinstance(meta.get("sha256"), str)
            and isinstance(meta.get("size"), int)
        )
    except ValueError:
        ok = False
    if not ok:
        raise Damaged(key, "its meta.json is not one this version reads")
    return meta  # type: ignore[no-any-return]


def check_unpacked(key: str, site: Path, hashed: Mapping[str, str] | None = None) -> list[records.Distribution]:
    """Every file as its RECORD says (read and hashed, no stat shortcut; or ``hashed`` as it was written), and
    none that no RECORD lists."""
    if not site.is_dir():
        raise Damaged(key, f"the archive has no {SITE_DIR} folder")
    try:
        dists = records.installed(site)
    except VerificationError as exc:
        raise Damaged(key, str(exc)) from None
    changed = records.changed_files(site, dists, hashed=hashed)
    if changed:
        raise Damaged(key, f"{counted_problems(changed)}")
    unlisted = records.unlisted_files(site, dists)
    if unlisted:
        raise Damaged(key, f"{len(unlisted)} files no RECORD lists, such as {unlisted[0]}")
    return dists


def counted_problems(problems: list[str]) -> str:
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return redact(problems[0]) + more
