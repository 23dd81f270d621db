"""The manifest: a versioned JSON contract, written atomically, read tolerantly.

``<packages_dir>/manifest.json`` is the pointer to the active generation and
the record of the last failure. Workflows, health checks and other tools read
it; ``MANIFEST_KEYS`` is the promise (a test pins it). This module is on the
start-up fast path: json, os and sys only (no pathlib, typing or sysconfig).
"""

from __future__ import annotations

import json
import os
import sys

from bootstrap._fs import atomic_write_text

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SCHEMA_VERSION = 1

MANIFEST_KEYS = (
    "schema_version",  # int, bumped on an incompatible change
    "status",  # "ok", or "failed" while the last attempt failed
    "generation",  # id of the active generation, or null
    "site_dir",  # absolute path of the active generation: the sys.path entry
    "requirements_file",  # the file the active generation was built from
    "requirements_sha256",  # sha256 of that file's bytes when it was built
    "lock_file",  # the committed lock that was honoured, or null
    "lock_sha256",  # sha256 of the exact pins installed
    "lock_source",  # "committed", "cache", "resolved" or "empty"
    "inputs",  # {path: sha256 or null}: every file the result depends on
    "packages",  # [{"name", "version", "requested"}]
    "python",  # the interpreter it was built for: version, implementation, tag, platform
    "updated_at",  # ISO 8601, UTC
    "error",  # null, or {"message", "stage", "at"}: the last failure
    "overrides",  # host packages the generation overrides (then it goes first on sys.path)
)

ERROR_KEYS = ("message", "stage", "at")
PACKAGE_KEYS = ("name", "version", "requested")


def interpreter() -> dict[str, str]:
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


def load(path: str | os.PathLike[str]) -> tuple[dict[str, Any] | None, str | None]:
    """Read a manifest: ``(manifest, None)``, ``(None, None)`` if absent, ``(None, why)`` if damaged."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        return None, f"{path} cannot be read ({exc.strerror})"
    try:
        data = json.loads(raw)
    except ValueError:
        return None, f"{path} is not valid JSON (truncated or damaged)"
    if not isinstance(data, dict) or not isinstance(data.get("schema_version"), int):
        return None, f"{path} is not a bootstrap manifest"
    if data["schema_version"] > SCHEMA_VERSION:
        return None, f"{path} has schema_version {data['schema_version']}, newer than this bootstrap understands"
    return data, None


def read(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest, or None when it is absent or damaged (a sync repairs it)."""
    return load(path)[0]


def blank(requirements_file: str | os.PathLike[str]) -> dict[str, Any]:
    """A manifest with no active generation (before the first successful sync)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "status": "ok",
        "generation": None,
        "site_dir": None,
        "requirements_file": os.fspath(requirements_file),
        "requirements_sha256": None,
        "lock_file": None,
        "lock_sha256": None,
        "lock_source": None,
        "inputs": {},
        "packages": [],
        "python": interpreter(),
        "updated_at": now_iso(),
        "error": None,
        "overrides": [],
    }


# Keys added after schema 1 was first written: a manifest from before gets these values.
_ADDED_KEYS: dict[str, Any] = {"overrides": []}


def write(path: str | os.PathLike[str], manifest: dict[str, Any]) -> None:
    manifest = {**_ADDED_KEYS, **manifest}
    missing = [key for key in MANIFEST_KEYS if key not in manifest]
    if missing:
        raise ValueError(f"manifest is missing keys {missing}")
    atomic_write_text(path, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
