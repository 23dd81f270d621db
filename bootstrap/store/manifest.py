"""The manifest: a versioned JSON contract, written atomically, read tolerantly.

``<packages_dir>/manifest.json`` is the pointer to the active generation and
the record of the last failure. Workflows, health checks and other tools read
it; ``MANIFEST_KEYS`` is the promise (a test pins it, the README documents
each key). Every manifest is made by one of the constructors below
(``blank``, ``published``, ``refreshed``, ``ok_again``, ``rolled_back``,
``failed``), never as a dict literal elsewhere, so the keys cannot drift.

``generation.json`` inside each published generation is its own record
(``GenerationRecord``): what it holds and how it was built; a rollback reads it.

This module is on the start-up fast path: json, os and sys only (no pathlib,
typing or sysconfig at run time). The types exist for mypy alone.
"""

from __future__ import annotations

import json
import os
import sys
import time

from bootstrap.store.fs import atomic_write_text
from bootstrap.store.paths import relative_site

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays off the fast path: these names exist for the type checker only
    from typing import Literal, NotRequired, TypedDict

    LockSource = Literal["committed", "cache", "resolved", "empty", "rollback", "remote-cache"]
    #: where a generation's files came from: built here, or taken from the remote cache (``bootstrap.remote``)
    Origin = Literal["built", "remote-cache"]
    #: {path: sha256 of its bytes, or None when there is no such file}; in ``relative_inputs`` the path is
    #: ``@lock/<name>``, ``@state/<path>``, ``@requirements/<path>`` or absolute (``store.freshness.relative_inputs``)
    Inputs = dict[str, str | None]

    class PythonInfo(TypedDict):
        version: str
        implementation: str
        tag: str
        platform: str

    class PackageEntry(TypedDict):
        name: str
        version: str
        requested: bool  # named in the committed file or added at run time (not a mere dependency)
        provided_by: Literal["generation", "host"]
        source: Literal["repo", "runtime", "workspace"] | None

    class ErrorRecord(TypedDict):
        message: str
        stage: str
        at: str
        inputs: Inputs  # the three key files as they were when it failed: a waiter does not repeat the failure
        relative_inputs: Inputs  # the same, as every instance reads them (``Provenance.relative_inputs``)

    class Provenance(TypedDict):
        """How the active generation came to be: what it was built from."""

        requirements_file: str
        requirements_sha256: str | None
        lock_file: str | None
        lock_sha256: str | None
        lock_source: LockSource | None
        inputs: Inputs
        # ``inputs`` by role, or relative to the folder they lie in: what freshness judges by, alike on every
        # instance, wherever it sees the share, its checkout and its state folder
        relative_inputs: Inputs

    class Manifest(Provenance):
        schema_version: int
        status: Literal["ok", "failed"]
        generation: str | None
        site_dir: str | None  # as the instance that wrote it saw it: readers serve ``site`` in their own folder
        site: str | None
        packages: list[PackageEntry]
        python: PythonInfo
        updated_at: str
        error: ErrorRecord | None
        overrides: list[str]
        rolled_back_from: RolledBackFrom | None
        history: list[str]
        origin: Origin | None

    class OrgManifest(Manifest):
        """An organisation's manifest (``<packages>/orgs/<org-id>/manifest.json``): ORG_MANIFEST_KEYS too."""

        org: str
        workspace: WorkspaceSet | None  # None in a failure recorded before any set was built
        isolation: Isolation | None

    class WorkspaceSet(TypedDict):
        """The workspace set an organisation's generation was built on."""

        generation: str | None
        lock_sha256: str | None

    class Isolation(TypedDict):
        """How an organisation's set can share a host process with the workspace's (``pipeline.org_sets``)."""

        mode: Literal["in-process", "process"]
        private: dict[str, str]  # name: version, only the organisation has them
        differs: dict[str, dict[str, str]]  # name: {"org": version, "workspace": version}
        reason: str | None

    class RolledBackFrom(TypedDict):
        """What the active generation was rolled back from: what the files asked for then (and still do)."""

        generation: str | None
        pins: list[str]  # "name==version", sorted

    class GenerationRecord(TypedDict):
        generation: str
        created_at: str
        packages: list[PackageEntry]
        python: PythonInfo
        requirements_file: str
        requirements_sha256: str | None
        lock_sha256: str | None
        overrides: list[str]
        created_stamp: str
        origin: NotRequired[Origin]  # absent in a generation from before the remote cache: "built"


SCHEMA_VERSION = 1

MANIFEST_KEYS = (
    "schema_version",  # int, bumped on an incompatible change
    "status",  # "ok", or "failed" while the last attempt failed
    "generation",  # id of the active generation, or null
    "site_dir",  # absolute path of the active generation, as the instance that wrote the manifest saw it
    "site",  # "generations/<id>/site": the sys.path entry, relative to the packages folder (what hosts serve)
    "requirements_file",  # the file the active generation was built from
    "requirements_sha256",  # sha256 of that file's bytes when it was built
    "lock_file",  # the committed lock that was honoured, or null
    "lock_sha256",  # sha256 of the exact pins installed
    "lock_source",  # "committed", "cache", "resolved", "empty", "rollback" or "remote-cache"
    "inputs",  # {path: sha256 or null}: every file the result depends on
    "relative_inputs",  # the same, by role or relative path: "@lock/<name>", "@state/...", "@requirements/..."
    "packages",  # [PACKAGE_KEYS]
    "python",  # the interpreter it was built for: version, implementation, tag, platform
    "updated_at",  # ISO 8601, UTC
    "error",  # null, or ERROR_KEYS: the last failure
    "overrides",  # host packages the generation overrides (then it goes first on sys.path)
    "rolled_back_from",  # null, or what `rollback` moved away from: {"generation", "pins"}
    "history",  # the generations syncs made active, most recent first (at most 20): gc and rollback's order
    # "built" (here, or on an instance of the same shared folder) or "remote-cache" (unpacked from the remote
    # cache, BOOTSTRAP_REMOTE_CACHE); null before any generation (and in a manifest from before the key)
    "origin",
)
# An organisation's manifest has these too: its id, the workspace set it was built on ({"generation",
# "lock_sha256"}), and how it can share a host process ({"mode": "in-process" | "process", "private", "differs",
# "reason"}).
ORG_MANIFEST_KEYS = ("org", "workspace", "isolation")
PACKAGE_KEYS = ("name", "version", "requested", "provided_by", "source")
ERROR_KEYS = ("message", "stage", "at", "inputs", "relative_inputs")


def interpreter() -> PythonInfo:
    """The running interpreter, as far as installed packages care."""
    return {
        "version": ".".join(str(part) for part in sys.version_info[:3]),
        "implementation": sys.implementation.name,
        "tag": f"{sys.implementation.cache_tag}{sys.abiflags}",
        "platform": platform_tag(),
    }


def platform_tag() -> str:
    """``linux-x86_64`` and the like: what sysconfig.get_platform() says, without importing sysconfig on Unix."""
    if hasattr(os, "uname") and sys.platform.startswith("linux"):
        return f"linux-{os.uname().machine}"
    import sysconfig

    return sysconfig.get_platform()


def built_for_this_interpreter(python: object) -> bool:
    """A generation is only usable by the interpreter kind (ABI and platform) it was built for."""
    if not isinstance(python, dict):
        return False
    running = interpreter()
    return python.get("tag") == running["tag"] and python.get("platform") == running["platform"]


def now_iso() -> str:
    from datetime import UTC, datetime  # here, not at the top: datetime is not on the fast path

    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# Reading


def load(path: str | os.PathLike[str]) -> tuple[Manifest | None, str | None]:
    """Read a manifest: ``(manifest, None)``, ``(None, None)`` if absent, ``(None, why)`` if damaged."""
    path = os.fspath(path)
    data, why, transient = _read_json(path)
    for attempt, delay in enumerate(_READ_RETRIES):  # a share mid-replace (see _READ_RETRIES): read again
        if not transient or (why == _ABSENT and not os.path.isdir(os.path.join(os.path.dirname(path), "generations"))):
            break
        if why is not None and why.endswith(_DAMAGED) and attempt >= 2:  # not a moment's glitch: damaged
            break
        time.sleep(delay)
        data, why, transient = _read_json(path)
    if why == _ABSENT:
        return None, None
    if why is not None:
        return None, why
    if not isinstance(data, dict) or not isinstance(data.get("schema_version"), int):
        return None, f"{path} is not a bootstrap manifest"
    if data["schema_version"] > SCHEMA_VERSION:
        return None, f"{path} has schema_version {data['schema_version']}, newer than this bootstrap understands"
    for key, value in _ADDED_KEYS.items():  # a manifest from before a key was added reads as if it had it
        data.setdefault(key, value)
    manifest: Manifest = data  # type: ignore[assignment]  # checked as far as the fast path affords
    return manifest, None


# A reader on a network share may see the manifest missing (ENOENT), unreadable (EIO, EBUSY) or short
# for a moment while another client replaces it. A folder that was never synced has no generations/, so
# its missing manifest is reported at once; otherwise the read is tried again for about half a second
# (a damaged file for 0.07 s). Other errors (no permission, a folder in its place) are reported at once.
_READ_RETRIES = (0.02, 0.05, 0.1, 0.15, 0.2)
_ABSENT = "absent"
_DAMAGED = "is not valid JSON (truncated or damaged)"


def _read_json(path: str) -> tuple[object, str | None, bool]:
    """``(data, why it is not there, whether reading again may help)``."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        return None, _ABSENT, True
    except OSError as exc:
        import errno  # slow path: a read that failed

        transient = exc.errno in (errno.EIO, errno.EBUSY, errno.EAGAIN, errno.ESTALE)
        return None, f"{path} cannot be read ({exc.strerror})", transient
    try:
        return json.loads(raw), None, False
    except ValueError:
        return None, f"{path} {_DAMAGED}", True


def read(path: str | os.PathLike[str]) -> Manifest | None:
    """The manifest, or None when it is absent or damaged (a sync repairs it)."""
    return load(path)[0]


def write(path: str | os.PathLike[str], manifest: Manifest) -> None:
    """Write ``manifest`` atomically, its keys in contract order; a missing key is a bug.

    Keys this version does not know (a newer bootstrap of the same schema wrote them) are kept, after ours.
    """
    data: dict[str, object] = {**_ADDED_KEYS, **manifest}
    missing = [key for key in MANIFEST_KEYS if key not in data]
    if missing:
        raise ValueError(f"manifest is missing keys {missing}")
    ordered = {key: data[key] for key in MANIFEST_KEYS} | {k: v for k, v in data.items() if k not in MANIFEST_KEYS}
    atomic_write_text(path, json.dumps(ordered, indent=2) + "\n")


# Keys added after schema 1 was first written: a manifest from before gets these values.
# ``site`` and ``relative_inputs``: null and empty read as "not recorded" (the generation id and the absolute
# ``inputs`` are used instead).
_ADDED_KEYS: dict[str, object] = {
    "overrides": [],
    "rolled_back_from": None,
    "site": None,
    "relative_inputs": {},
    "history": [],
    "origin": None,
}
HISTORY_LENGTH = 20


def history_of(current: Manifest | None) -> list[str]:
    """The generations syncs made active, most recent first (empty for a manifest from before the key)."""
    return list(current.get("history", [])) if current is not None else []


# Constructors: the only places a manifest is made.


def blank(requirements_file: str | os.PathLike[str]) -> Manifest:
    """A manifest with no active generation (before the first successful sync)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "status": "ok",
        "generation": None,
        "site_dir": None,
        "site": None,
        "requirements_file": os.fspath(requirements_file),
        "requirements_sha256": None,
        "lock_file": None,
        "lock_sha256": None,
        "lock_source": None,
        "inputs": {},
        "relative_inputs": {},
        "packages": [],
        "python": interpreter(),
        "updated_at": now_iso(),
        "error": None,
        "overrides": [],
        "rolled_back_from": None,
        "history": [],
        "origin": None,
    }


def published(
    provenance: Provenance, record: GenerationRecord, site_dir: str | os.PathLike[str], previous: Manifest | None
) -> Manifest:
    """The manifest that makes a just-published generation active (``previous``: the one it replaces).

    Generation ids are their contents' hashes, so a set served before is served by the same generation
    again; ``history`` says which were made active when (their build times do not)."""
    # What served until now first (a rollback's generation included: a rollback records no history itself).
    active = previous.get("generation") if previous is not None else None
    serving = [active] if active else []
    earlier = list(dict.fromkeys(g for g in [*serving, *history_of(previous)] if g != record["generation"]))
    return {
        "schema_version": SCHEMA_VERSION,
        "status": "ok",
        "generation": record["generation"],
        "site_dir": os.fspath(site_dir),
        "site": relative_site(record["generation"]),
        **provenance,
        "packages": record["packages"],
        "python": record["python"],
        "updated_at": now_iso(),
        "error": None,
        # Host packages this generation overrides: it must then come before the host's site-packages.
        "overrides": record["overrides"],
        "rolled_back_from": None,
        "history": [record["generation"], *earlier][:HISTORY_LENGTH],
        "origin": record.get("origin", "built"),
    }


def refreshed(current: Manifest, provenance: Provenance, packages: list[PackageEntry]) -> Manifest:
    """The same generation, now serving other inputs that resolve to the very same pins (a rollback is over)."""
    return {
        **current,
        **provenance,
        "site": _site(current),
        "packages": packages,
        "status": "ok",
        "error": None,
        "updated_at": now_iso(),
        "rolled_back_from": None,
    }


def ok_again(current: Manifest) -> Manifest:
    """The files are back to what the active generation serves: the recorded failure is over."""
    return {**current, "site": _site(current), "status": "ok", "error": None, "updated_at": now_iso()}


def _site(current: Manifest) -> str | None:
    """``site`` for the generation ``current`` names (a manifest from before ``site`` has none yet)."""
    generation = current.get("generation")
    return relative_site(generation) if isinstance(generation, str) and generation else None


def rolled_back(
    generation: str,
    record: GenerationRecord,
    site_dir: str | os.PathLike[str],
    requirements_file: str,
    inputs: Inputs,
    previous: Manifest | None,
    *,
    relative_inputs: Inputs,
) -> Manifest:
    """An earlier generation made active again; it serves while ``inputs`` (as they are now) stay the same.

    ``previous``: the manifest it replaces; what that served is what the files ask for (unless it was a
    rollback itself: then what that one was rolled back from). ``relative_inputs``: ``inputs`` as every
    instance reads them (``store.freshness.relative_inputs``)."""
    away_from = previous.get("rolled_back_from") if previous else None
    if away_from is None and previous is not None:
        pins = sorted(f"{package['name']}=={package['version']}" for package in previous.get("packages", []))
        away_from = {"generation": previous.get("generation"), "pins": pins}
    return {
        "schema_version": SCHEMA_VERSION,
        "status": "ok",
        "generation": generation,
        "site_dir": os.fspath(site_dir),
        "site": relative_site(generation),
        "requirements_file": requirements_file,
        "requirements_sha256": inputs.get(requirements_file),
        "lock_file": None,
        "lock_sha256": record.get("lock_sha256"),
        "lock_source": "rollback",
        "inputs": inputs,
        "relative_inputs": relative_inputs,
        "packages": record.get("packages", []),
        "python": record.get("python") or interpreter(),  # a candidate: built for this interpreter
        "updated_at": now_iso(),
        "error": None,
        "overrides": record.get("overrides", []),
        "rolled_back_from": away_from,
        "history": history_of(previous),  # a rollback is no sync: the order stays
        "origin": record.get("origin", "built"),
    }


def failed(base: Manifest, message: str, stage: str, inputs: Inputs, relative_inputs: Inputs) -> Manifest:
    """``base`` (the generation that keeps serving) with the failure recorded beside it; ``relative_inputs``:
    ``inputs`` as every instance reads them (``store.freshness.relative_inputs``)."""
    now = now_iso()
    error: ErrorRecord = {
        "message": message,
        "stage": stage,
        "at": now,
        "inputs": inputs,
        "relative_inputs": relative_inputs,
    }
    return {**base, "site": _site(base), "status": "failed", "updated_at": now, "error": error}


def package_entry(
    name: str, version: str, *, requested: bool, provided_by: Literal["generation", "host"], source: str | None
) -> PackageEntry:
    entry: PackageEntry = {
        "name": name,
        "version": version,
        "requested": requested,
        "provided_by": provided_by,
        "source": source,  # type: ignore[typeddict-item]  # "repo", "runtime" or None, from Desired.source
    }
    return entry


def generation_record(
    generation: str,
    provenance: Provenance,
    packages: list[PackageEntry],
    overrides: list[str],
    *,
    stamp: str,
    origin: Origin = "built",
) -> GenerationRecord:
    """What ``generation.json`` says of a generation about to be published.

    ``stamp``: when it was built, to the microsecond, sortable (``build.new_generation_id``): generation ids
    are their contents' hashes, so the newest are told by this."""
    return {
        "generation": generation,
        "created_at": now_iso(),
        "packages": packages,
        "python": interpreter(),
        "requirements_file": provenance["requirements_file"],
        "requirements_sha256": provenance["requirements_sha256"],
        "lock_sha256": provenance["lock_sha256"],
        "overrides": overrides,
        "created_stamp": stamp,
        "origin": origin,
    }


def write_generation_record(path: str | os.PathLike[str], record: GenerationRecord) -> None:
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def read_generation_record(path: str | os.PathLike[str]) -> GenerationRecord | None:
    """A published generation's ``generation.json``, or None if it is absent or damaged (incomplete)."""
    try:
        with open(path, "rb") as handle:
            data = json.loads(handle.read())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    record: GenerationRecord = data  # type: ignore[assignment]
    return record
