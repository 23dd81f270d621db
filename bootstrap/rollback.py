"""Roll back: publish an earlier generation again (they are kept for this).

A generation is never modified, so rolling back is only a new manifest that
points at an older folder. It holds until the requirements file (or its
lock) changes: the rolled-back manifest records the inputs as they are now,
so start-up keeps serving it instead of rebuilding what was just rolled back.
"""

from __future__ import annotations

import logging
from typing import Any

from bootstrap import install, manifest, verify
from bootstrap._fs import file_sha256
from bootstrap.errors import BootstrapError
from bootstrap.layout import Layout
from bootstrap.settings import Settings
from bootstrap.sync import build_lock

log = logging.getLogger("bootstrap")


class RollbackError(BootstrapError):
    stage = "rollback"


def candidates(layout: Layout, active: str | None) -> list[str]:
    """Complete generations other than the active one, usable by this interpreter, newest first."""
    if not layout.generations.is_dir():
        return []
    found = []
    for path in sorted(layout.generations.iterdir(), reverse=True):
        record = install.read_generation(path)
        if path.name == active or record is None:
            continue
        if manifest.built_for_this_interpreter(record.get("python")):
            found.append(path.name)
    return found


def rollback(settings: Settings, to: str | None = None) -> dict[str, Any]:
    """Make ``to`` (default: the newest generation before the active one) active again; return the manifest."""
    layout = Layout(settings.packages_dir)
    with build_lock(layout, settings.lock_timeout):
        current = manifest.read(layout.manifest)
        active = current.get("generation") if current else None
        usable = candidates(layout, active)
        if to is None:
            older = [generation for generation in usable if active is None or generation < active]
            if not older:
                raise RollbackError(
                    f"no earlier generation to roll back to in {layout.generations} "
                    f"(BOOTSTRAP_GENERATIONS_KEPT={settings.generations_kept} keeps that many)"
                )
            to = older[0]
        elif to not in usable:
            raise RollbackError(f"{to} is not a complete generation for this interpreter; `status` lists them")
        target = layout.generation(to)
        site_dir = target / install.SITE_DIR
        missing = verify.missing_files(site_dir, verify.installed(site_dir))
        if missing:
            raise RollbackError(f"generation {to} is damaged ({missing[0]} is missing); pick another")
        record = install.read_generation(target) or {}
        inputs = {
            str(path): file_sha256(path)
            for path in (settings.requirements_file, settings.committed_lock_file, layout.runtime_requirements)
        }
        rolled_back = {
            "schema_version": manifest.SCHEMA_VERSION,
            "status": "ok",
            "generation": to,
            "site_dir": str(site_dir),
            "requirements_file": str(settings.requirements_file),
            "requirements_sha256": inputs[str(settings.requirements_file)],
            "lock_file": None,
            "lock_sha256": record.get("lock_sha256"),
            "lock_source": "rollback",
            "inputs": inputs,
            "packages": record.get("packages", []),
            "python": record.get("python"),
            "updated_at": manifest.now_iso(),
            "error": None,
            "overrides": record.get("overrides", []),
        }
        manifest.write(layout.manifest, rolled_back)
        log.info("rolled back from %s to %s; it serves until the requirements file changes", active, to)
        return rolled_back
