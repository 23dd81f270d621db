"""The registry of running hosts: which generations they import from, which of their modules are stale.

A host that moved to a new generation while running leaves
``processes/<host>-<pid>.json`` in the packages folder: its restart-pending list
and the generations it still runs modules from. ``check`` shows the list for
every process on the machine; garbage collection keeps those generations.
Records of dead processes on this machine are removed when read.
"""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bootstrap.store import manifest
from bootstrap.store.fs import atomic_write_text
from bootstrap.store.layout import Layout


def record_path(layout: Layout) -> Path:
    return layout.processes / f"{socket.gethostname()}-{os.getpid()}.json"


def write_record(layout: Layout, pending: list[dict[str, Any]], generations: list[str]) -> Path:
    """Write this process's record: its restart-pending list and the generations it runs on. Raises OSError."""
    path = record_path(layout)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": manifest.now_iso(),
        "packages": pending,
        "generations": generations,
    }
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


def process_records(layout: Layout, *, include_self: bool = False) -> list[dict[str, Any]]:
    """What running hosts using ``layout`` reported: ``{"pid", "host", "since", "packages", "generations"}``.

    ``packages``: their restart-pending list; ``generations``: older generations they still run modules
    from. Records of dead processes on this machine are removed on the way.
    """
    found: list[dict[str, Any]] = []
    if not layout.processes.is_dir():
        return found
    here = socket.gethostname()
    for path in sorted(layout.processes.glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            pid, host = int(record["pid"]), str(record["host"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if host == here and not alive(pid):
            path.unlink(missing_ok=True)  # it restarted (or died): nothing is pending any more
            continue
        if host == here and pid == os.getpid() and not include_self:
            continue
        found.append(record)
    return found


def generations_in_use(layout: Layout, *, max_age_days: float = 7.0) -> frozenset[str]:
    """Older generations that running hosts still import from: garbage collection keeps them.

    A record from another machine cannot be checked for life; it counts for ``max_age_days`` after its
    last update (a host that crashed there must not pin a generation on the share for ever).
    """
    here = socket.gethostname()
    oldest = datetime.now(UTC) - timedelta(days=max_age_days)
    in_use: set[str] = set()
    for record in process_records(layout, include_self=True):
        if record.get("host") != here:
            try:
                since = datetime.fromisoformat(str(record.get("since")).replace("Z", "+00:00"))
            except ValueError:
                continue
            if since < oldest:
                continue
        in_use.update(str(generation) for generation in record.get("generations", []))
    return frozenset(in_use)


def is_this_process(record: dict[str, Any]) -> bool:
    return record.get("host") == socket.gethostname() and record.get("pid") == os.getpid()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
