"""One sync: make the packages folder hold exactly what the requirements file asks for.

read + validate -> same as active? -> resolve -> build in staging -> verify
-> publish -> manifest -> gc. One builder at a time (an inter-process lock
beside the manifest); a waiter re-reads the manifest once it has the lock,
since the work is often done by then. Any failure is recorded in the
manifest beside the generation that keeps serving.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from bootstrap import _subprocess, bytecode, host, install, manifest, requirements, resolve, reuse, safety, verify
from bootstrap._fs import atomic_write_text, file_sha256, text_sha256
from bootstrap._pipout import redact
from bootstrap.activation import stale_reason
from bootstrap.backend import backend_for
from bootstrap.errors import BootstrapError, LockTimeoutError, RecordedFailure, SettingsError, StorageError
from bootstrap.layout import Layout
from bootstrap.settings import Settings

log = logging.getLogger("bootstrap")


@dataclass(frozen=True)
class SyncResult:
    changed: bool  # a new generation was published
    manifest: dict[str, Any]


@dataclass(frozen=True)
class RuntimeChange:
    """An add or remove of a runtime package, in progress: the overlay as it is to be.

    The sync builds from ``overlay`` and writes it to disk only once the result is
    published (with the build lock held), so the overlay on disk only ever holds
    what a published generation serves: a process killed mid-add leaves nothing
    behind, and the health of other instances never sees a half-done request. A
    failure is not recorded in the manifest: the request is refused, nothing changed.
    ``rebuild``: build even if the inputs look served (after a rollback, say).
    """

    overlay: str
    rebuild: bool = False


def sync(settings: Settings, change: RuntimeChange | None = None) -> SyncResult:
    """Converge the packages folder on the requirements file; raise ``BootstrapError`` if that fails."""
    layout = Layout(settings.packages_dir)
    current = manifest.read(layout.manifest)
    if change is None and current is not None and current.get("status") == "ok" and _is_current(current, settings):
        log.info("up to date: generation %s serves %s", current.get("generation"), settings.requirements_file)
        return SyncResult(changed=False, manifest=current)
    waiting_since = manifest.now_iso()
    try:
        prepare_folder(layout, settings)
        with build_lock(layout, settings.lock_timeout) as waited:
            return _sync_recording_failures(settings, layout, waiting_since if waited else None, change)
    except OSError as exc:  # creating the folder or taking the lock: the machine, not a bug
        raise StorageError.from_os_error(exc) from exc


def _sync_recording_failures(
    settings: Settings, layout: Layout, waiting_since: str | None, change: RuntimeChange | None
) -> SyncResult:
    """With the lock held: sync, and record any failure in the manifest beside the serving generation."""
    current, damage = manifest.load(layout.manifest)
    if damage:
        log.warning("%s: it will be rewritten", damage)
    try:
        try:
            return _sync_locked(settings, layout, current, waiting_since, change)
        except OSError as exc:  # disk full, permissions: the environment, not a bug
            install.clean_staging(layout, why="this sync failed")
            raise StorageError.from_os_error(exc) from exc
    except BootstrapError as exc:
        if change is None:  # a refused runtime request changed nothing: nothing to record
            _record_failure(settings, layout, current, exc)
        raise


def _sync_locked(
    settings: Settings,
    layout: Layout,
    current: dict[str, Any] | None,
    waiting_since: str | None,
    change: RuntimeChange | None = None,
) -> SyncResult:
    started = time.monotonic()
    overlay_unchanged = change is None or (
        not change.rebuild and change.overlay == _read_text(layout.runtime_requirements)
    )
    if current is not None and overlay_unchanged and _is_current(current, settings):
        if current.get("status") != "ok":  # the file is back to what the active generation serves
            current = {**current, "status": "ok", "error": None, "updated_at": manifest.now_iso()}
            manifest.write(layout.manifest, current)
            log.info("up to date again: generation %s serves the file as it is now", current.get("generation"))
        else:
            log.info("up to date: generation %s (synced by another process)", current.get("generation"))
        return SyncResult(changed=False, manifest=current)
    recorded = _failed_while_waiting(current, settings, waiting_since) if waiting_since and not change else None
    if recorded is not None:
        raise recorded
    desired, host_dists = read_desired(settings, overlay=change.overlay if change else None)
    inputs = {**desired.inputs, str(settings.committed_lock_file): file_sha256(settings.committed_lock_file)}
    install.clean_staging(layout)
    lock, staging = _resolve(settings, layout, desired, seed=_active_lock_text(current), provided=host_dists)
    origin = str(lock.committed_file or "the lock")
    host.check_pins([(pin.name, pin.version) for pin in lock.pins], host_dists, settings.host_overrides, origin)
    overrides = {canonicalize_name(name) for name in settings.host_overrides}
    provided = {
        pin.name: pin.version
        for pin in lock.pins
        if pin.version is not None and host_dists.get(pin.name) == pin.version and pin.name not in overrides
    }
    to_install = dataclasses.replace(lock, pins=tuple(pin for pin in lock.pins if pin.name not in provided))
    fields = {
        "requirements_file": str(settings.requirements_file),
        "requirements_sha256": inputs[str(settings.requirements_file)],
        "lock_file": str(lock.committed_file) if lock.committed_file else None,
        "lock_sha256": lock.sha256,
        "lock_source": lock.source,
        "inputs": inputs,
        "status": "ok",
        "error": None,
        "updated_at": manifest.now_iso(),
    }
    if _serves_lock(current, lock):
        assert current is not None
        log.info(
            "the pins are unchanged (%d packages): generation %s stays active", len(lock.pins), current["generation"]
        )
        packages = [  # the same pins, but what is named in the file (or the overlay) may have changed
            {
                **package,
                "requested": canonicalize_name(package["name"]) in desired.requested,
                "source": desired.source(canonicalize_name(package["name"])),
            }
            for package in current.get("packages", [])
        ]
        updated = {**current, **fields, "packages": packages}
        manifest.write(layout.manifest, updated)
        _commit_overlay(layout, change)
        return SyncResult(changed=False, manifest=updated)

    carried: frozenset[str] = frozenset()
    try:
        if staging is None:
            reusable = reuse.reusable(_reusable_site(current), to_install.pins)
            carried = frozenset(dist.name for dist in reusable)
            staging = install.build(
                layout,
                to_install,
                timeout=settings.install_timeout,
                tools=backend_for(settings),
                index_args=desired.pip_args(),
                reuse_from=_reusable_site(current),
                compile_bytecode=settings.compile_bytecode,
                carried=reusable,
            )
        dists = verify.verify_generation(
            staging / install.SITE_DIR,
            {pin.name: pin.version for pin in to_install.pins},
            skip=frozenset(settings.skip_import_check),
            timeout=settings.import_check_timeout,
            provided=host_dists,
            carried=carried,
        )
        packages = sorted(
            [
                {
                    "name": d.display_name,
                    "version": d.version,
                    "requested": d.name in desired.requested,
                    "provided_by": "generation",
                    "source": desired.source(d.name),
                }
                for d in dists
            ]
            + [
                {
                    "name": name,
                    "version": version,
                    "requested": name in desired.requested,
                    "provided_by": "host",
                    "source": desired.source(name),
                }
                for name, version in provided.items()
            ],
            key=lambda package: canonicalize_name(str(package["name"])),
        )
        generation_id = staging.name
        metadata = {
            "generation": generation_id,
            "created_at": manifest.now_iso(),
            "packages": packages,
            "python": manifest.interpreter(),
            "requirements_file": fields["requirements_file"],
            "requirements_sha256": fields["requirements_sha256"],
            "lock_sha256": lock.sha256,
            "overrides": sorted(name for name in overrides if name in host_dists and name in {d.name for d in dists}),
        }
        site_dir = install.publish(layout, staging, metadata)
    except BaseException:
        install.clean_staging(layout, why="this sync failed")
        raise
    new = {
        "schema_version": manifest.SCHEMA_VERSION,
        "generation": generation_id,
        "site_dir": str(site_dir),
        "packages": packages,
        "python": manifest.interpreter(),
        # Host packages this generation overrides: it must then come before the host's site-packages.
        "overrides": metadata["overrides"],
        **fields,
    }
    manifest.write(layout.manifest, {key: new[key] for key in manifest.MANIFEST_KEYS})
    _commit_overlay(layout, change)
    # Published: from here on nothing may fail the sync (or roll the manifest back).
    try:
        from bootstrap.live import generations_in_use

        in_use = generations_in_use(layout)
        install.collect_garbage(layout, active=generation_id, keep=settings.generations_kept, in_use=in_use)
    except OSError as exc:
        log.warning("could not remove old generations (%s); the next sync tries again", exc)
    log.info(
        "published generation %s: %d package%s in %.1fs",
        generation_id,
        len(packages),
        "" if len(packages) == 1 else "s",
        time.monotonic() - started,
    )
    return SyncResult(changed=True, manifest=new)


def _failed_while_waiting(
    current: dict[str, Any] | None, settings: Settings, waiting_since: str
) -> RecordedFailure | None:
    """The failure another process recorded for these very inputs while we waited: no point repeating it."""
    error = current.get("error") if current else None
    if not current or current.get("status") != "failed" or not isinstance(error, dict):
        return None
    if str(error.get("at", "")) < waiting_since or error.get("inputs") != _input_hashes(settings):
        return None
    log.info("another process just failed on the same inputs: not repeating it")
    return RecordedFailure(str(error.get("message")), str(error.get("stage")))


def _input_hashes(settings: Settings) -> dict[str, str | None]:
    runtime_file = Layout(settings.packages_dir).runtime_requirements
    paths = (settings.requirements_file, settings.committed_lock_file, runtime_file)
    return {str(path): file_sha256(path) for path in paths}


def policy_for(settings: Settings) -> requirements.Policy:
    """What the operator allows a requirements file (committed, or the runtime overlay) to say."""
    return requirements.Policy(
        allow_index_options=settings.allow_index_options,
        allow_direct_references=settings.allow_direct_references,
        allow_outside_includes=settings.allow_outside_includes,
    )


def _commit_overlay(layout: Layout, change: RuntimeChange | None) -> None:
    """The runtime change is published: its overlay becomes the one on disk (the manifest records its hash)."""
    if change is not None:
        atomic_write_text(layout.runtime_requirements, change.overlay)


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def read_desired(
    settings: Settings, *, runtime: bool = True, overlay: str | None = None
) -> tuple[requirements.Desired, dict[str, str]]:
    """The committed file (and, with ``runtime``, the packages added at run time: ``overlay``, or else the
    overlay on disk) read under the operator's policy, checked against the host's own packages."""
    from bootstrap.runtime import merge, parse_overlay, read_overlay

    policy = policy_for(settings)
    desired = requirements.read(settings.requirements_file, policy)
    if runtime:
        overlay_file = Layout(settings.packages_dir).runtime_requirements
        if overlay is None:
            merge(desired, read_overlay(overlay_file, policy))
            desired.inputs[str(overlay_file)] = file_sha256(overlay_file)
        else:
            merge(desired, parse_overlay(overlay_file, overlay, policy))
            desired.inputs[str(overlay_file)] = text_sha256(overlay)
    host_dists = host.host_distributions(settings.packages_dir)
    host.check_requirements(desired, host_dists, settings.host_overrides)
    desired.host_constraints = host.constraints_text(host_dists, settings.host_overrides)
    desired.require_hashes = settings.require_hashes
    return desired, host_dists


def _resolve(
    settings: Settings,
    layout: Layout,
    desired: requirements.Desired,
    *,
    seed: str | None,
    provided: dict[str, str],
) -> tuple[resolve.Lock, Path | None]:
    """The lock, and a staging folder already holding it when one could be built while resolving.

    A cold resolution (no committed, cached or active pins to honour, no
    hashes to check) runs pip-compile and a speculative ``pip install`` side
    by side; the install is kept only if it matches pip-compile's pins exactly.
    """
    reused = resolve.reuse(settings, layout, desired)
    if reused is not None:
        return reused, None
    # uv resolves in a fraction of an install: nothing to win by guessing beside it.
    if seed is not None or desired.has_hashes or settings.backend == "uv":
        return resolve.compile_and_cache(settings, layout, desired, seed=seed), None
    outcome: dict[str, Any] = {}

    processes: list[subprocess.Popen[str]] = []

    def started(process: subprocess.Popen[str]) -> None:
        processes.append(process)
        if cancelled.is_set():  # started after resolution failed and the others were stopped
            _subprocess.kill(process)

    def speculate() -> None:
        try:
            staging = install.build_speculatively(
                layout,
                desired,
                timeout=settings.install_timeout,
                on_start=started,
                tools=backend_for(settings),
            )
            outcome["staging"] = staging
            # pip-compile is usually still at work: compile meanwhile (unless resolution already failed).
            if settings.compile_bytecode and not cancelled.is_set():
                bytecode.compile_tree(staging / install.SITE_DIR, timeout=settings.install_timeout, on_start=started)
                outcome["compiled"] = True
        except Exception as exc:  # it is only a guess: any failure just means "not kept"
            outcome["error"] = exc

    cancelled = threading.Event()
    worker = threading.Thread(target=speculate, name="bootstrap-speculative-install", daemon=True)
    worker.start()
    try:
        lock = resolve.compile_and_cache(settings, layout, desired, seed=None)
    except BaseException:
        cancelled.set()
        for process in processes:  # resolution failed: the guess is moot, do not wait for it
            _subprocess.kill(process)
        worker.join()
        install.clean_staging(layout, why="resolution failed")
        raise
    worker.join()
    staging: Path | None = outcome.get("staging")
    if staging is not None and install.adopt(staging, lock, provided):
        log.info("the install made while resolving matches the lock: kept")
        if settings.compile_bytecode and not outcome.get("compiled"):
            bytecode.compile_tree(staging / install.SITE_DIR, timeout=settings.install_timeout)
        return lock, staging
    why = f"it failed: {outcome['error']}" if "error" in outcome else "it does not match the lock"
    log.info("not keeping the install made while resolving (%s): installing from the lock", why)
    install.clean_staging(layout, why="the speculative install was discarded")
    return lock, None


def _is_current(current: dict[str, Any], settings: Settings) -> bool:
    """The active generation serves the file as it is now, and none of its files went missing."""
    runtime_file = Layout(settings.packages_dir).runtime_requirements
    return stale_reason(
        current, settings.requirements_file, settings.committed_lock_file, runtime_file
    ) is None and _intact(current)


def _intact(current: dict[str, Any]) -> bool:
    """Every file the active generation's RECORDs list is there (a stat each: not for the start-up fast path)."""
    site_dir = Path(current["site_dir"]) if current.get("site_dir") else None
    if site_dir is None or not site_dir.is_dir():
        return False
    try:
        return not verify.missing_files(site_dir, verify.installed(site_dir))
    except BootstrapError:  # a dist-info lost its METADATA or RECORD
        return False


def _serves_lock(current: dict[str, Any] | None, lock: resolve.Lock) -> bool:
    """True when the active generation already holds exactly these pins, intact, for this interpreter."""
    if current is None or current.get("lock_sha256") != lock.sha256:
        return False
    return manifest.built_for_this_interpreter(current.get("python")) and _intact(current)


def _reusable_site(current: dict[str, Any] | None) -> Path | None:
    """The active generation's site folder, if its distributions may be carried over (same interpreter)."""
    if current is None or not current.get("site_dir") or not manifest.built_for_this_interpreter(current.get("python")):
        return None
    return Path(current["site_dir"])


def _active_lock_text(current: dict[str, Any] | None) -> str | None:
    if current is None or not current.get("site_dir"):
        return None
    try:
        return (Path(current["site_dir"]).parent / install.LOCK_FILE).read_text(encoding="utf-8")
    except OSError:
        return None


def _record_failure(settings: Settings, layout: Layout, current: dict[str, Any] | None, exc: BootstrapError) -> None:
    """Write the failure into the manifest beside the generation that keeps serving; never raise."""
    try:
        base = current if current is not None else manifest.blank(settings.requirements_file)
        now = manifest.now_iso()
        error = {"message": redact(exc.message), "stage": exc.stage, "at": now, "inputs": _input_hashes(settings)}
        manifest.write(layout.manifest, {**base, "status": "failed", "updated_at": now, "error": error})
    except Exception as write_error:  # the original error matters more than this one
        log.error("could not record the failure in %s: %s", layout.manifest, write_error)


def prepare_folder(layout: Layout, settings: Settings) -> None:
    safety.check_packages_dir(layout.root, allow_world_writable=settings.allow_world_writable)
    try:
        safety.make_private_dir(layout.root)
    except OSError as exc:
        raise SettingsError(
            f"cannot create the packages folder {layout.root} ({exc.strerror}); set BOOTSTRAP_PACKAGES_DIR "
            "to a writable folder"
        ) from None
    if not os.access(layout.root, os.W_OK):
        raise SettingsError(f"the packages folder {layout.root} is not writable; set BOOTSTRAP_PACKAGES_DIR")


@contextmanager
def build_lock(layout: Layout, timeout: float) -> Iterator[bool]:
    """The inter-process build lock beside the manifest; yields whether we had to wait for it.

    The holder is named in ``.owner`` for the messages of those who wait.
    """
    from filelock import FileLock, Timeout

    lock = FileLock(str(layout.build_lock))
    waited = False
    try:
        lock.acquire(timeout=0)
    except Timeout:
        waited = True
        log.info("waiting for another sync (%s)", _owner(layout))
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise LockTimeoutError(
                f"another sync ({_owner(layout)}) has held {layout.build_lock} for over {timeout:.0f}s; "
                "if that process is gone, its lock is released by the OS; otherwise wait, or raise "
                "BOOTSTRAP_LOCK_TIMEOUT"
            ) from None
    try:
        atomic_write_text(
            layout.lock_owner,
            json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": manifest.now_iso()}) + "\n",
        )
        yield waited
    finally:
        lock.release()


def _owner(layout: Layout) -> str:
    try:
        owner = json.loads(layout.lock_owner.read_text(encoding="utf-8"))
        return f"pid {owner['pid']} on {owner['host']}, since {owner['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
