"""The sync's side of the remote cache (``BOOTSTRAP_REMOTE_CACHE``, ``bootstrap.remote``).

Before building a generation, a sync takes it from the remote cache if it is there: unpacked into a new
staging folder, checked (archive hash, every RECORD, no unlisted file, exactly the lock's set), then
published like a built one. Anything wrong with the entry or the network is one warning line, and the
sync builds instead. After publishing, the upload runs in a detached child (``python -m bootstrap upload``):
the sync never waits for it. Organisations' sets are neither taken nor uploaded (their generations link
into the workspace's).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path

from bootstrap.errors import RemoteCacheError, VerificationError, redact
from bootstrap.pipeline import build, publish, verify
from bootstrap.settings import Settings
from bootstrap.store import records
from bootstrap.store.layout import SITE_DIR, Layout
from bootstrap.store.records import Distribution
from bootstrap.tools import runner

TYPE_CHECKING = False
if TYPE_CHECKING:
    from bootstrap.store.manifest import Manifest

log = logging.getLogger("bootstrap")

UPLOAD_LOG = "remote-upload.log"  # in the state folder: the background uploads' output


def wanted(settings: Settings) -> bool:
    return settings.remote_cache is not None and settings.org is None


def fetch(
    settings: Settings, layout: Layout, generation: str, expected: Mapping[str, str | None]
) -> tuple[Path, list[Distribution]] | None:
    """A staging folder holding ``generation`` from the remote cache, checked, and its distributions; None
    when the cache has no such entry, or it was refused (one warning line: the sync builds instead)."""
    from bootstrap.remote import cache  # slow path: the Azure SDK only when the setting is on

    staging = build.new_staging(layout)
    try:
        meta = cache.fetch_generation(settings, generation, staging)
        if meta is None:
            log.info("the remote cache has no generation %s: building it", generation)
            publish.clean_staging(layout, why="the remote cache has no such generation")
            return None
        dists = records.installed(staging / SITE_DIR)
        verify.check_set(dists, expected)  # exactly the lock's set (the key says so; this checks it)
        verify.check_shared_files(dists)
    except VerificationError as exc:
        log.warning(
            "the remote cache's %s is damaged (%s): building it instead",
            cache.generation_key(generation),
            redact(str(exc))[:300],
        )
        publish.clean_staging(layout, why="the remote cache's entry was refused")
        return None
    except RemoteCacheError as exc:  # Damaged says so itself; a network error: the same fallback
        level = logging.DEBUG if exc.repeated else logging.WARNING
        log.log(level, "%s", exc if isinstance(exc, cache.Damaged) else f"{exc}: building it instead")
        publish.clean_staging(layout, why="the remote cache's entry was refused")
        return None
    except BaseException:
        publish.clean_staging(layout, why="this sync failed")
        raise
    log.info(
        "generation %s came from the remote cache; its import check is skipped (its builder ran it on this very "
        "interpreter and platform: the key says so)",
        generation,
    )
    return staging, dists


def after_publishing(settings: Settings, new: Manifest, *, built_here: bool, change: bool) -> None:
    """A generation built here goes up (one from the remote cache is there already); a runtime change's
    overlay too (``change``), for fresh instances. Only then: a sync without a change must not put back
    this instance's runtime additions over newer ones another instance uploaded since."""
    generation = new.get("generation") if built_here and new.get("origin") != "remote-cache" else None
    if generation is not None or change:
        start_upload(settings, generation, state=change)


def start_upload(settings: Settings, generation: str | None, *, state: bool = True) -> None:
    """Upload ``generation`` and (``state``) the state folder's runtime additions in a detached child; no
    generation: the state alone. The child's argv holds no secret: it reads its credentials from the
    environment, as this process did."""
    if not wanted(settings):
        return
    argv = [sys.executable, "-m", "bootstrap", "upload"] + (["--generation", generation] if generation else [])
    argv += ["--state"] if state and generation else []
    try:
        layout = settings.layout
        layout.state.mkdir(parents=True, exist_ok=True)
        pid = runner.start_detached(argv, log_file=layout.state / UPLOAD_LOG, env=settings.as_environment())
    except OSError as exc:
        log.warning("could not start the upload to the remote cache (%s): the next sync tries again", exc)
        return
    log.info("uploading to the remote cache in the background (pid %d, its log: %s)", pid, UPLOAD_LOG)


def fetch_state(settings: Settings) -> None:
    """A state folder without runtime additions (a fresh instance) gets those the remote cache keeps."""
    if not wanted(settings) or settings.layout.runtime_requirements.exists():
        return
    from bootstrap.remote import cache  # slow path: the Azure SDK only when the setting is on

    cache.fetch_state(settings)
