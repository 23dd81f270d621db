"""One sync: make the packages folder hold exactly what the requirements file asks for.

The orchestrator only; each stage is a module of its own:

    already done? (freshness) -> read (inputs.desired) -> lock (resolve, speculate)
    -> plan (pure) -> build (reuse, build, bytecode) and verify -> package entries (pure)
    -> publish, write the manifest, gc

One builder at a time (an inter-process lock beside the manifest); a waiter
re-reads the manifest once it has the lock, since the work is often done by
then. Any failure is recorded in the manifest beside the generation that keeps
serving.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from bootstrap.errors import (
    BootstrapError,
    LockTimeoutError,
    RecordedFailure,
    RequirementsError,
    StorageError,
    redact,
)
from bootstrap.inputs import host, legacy, requirements
from bootstrap.inputs.desired import policy_for, read_desired
from bootstrap.inputs.requirements import Desired
from bootstrap.pipeline import build, org_sets, plan, publish, remote, reuse, speculate, verify
from bootstrap.pipeline.lockfile import Lock
from bootstrap.pipeline.plan import Plan
from bootstrap.settings import Settings
from bootstrap.store import freshness, layers, locks, manifest, records, registry, safety
from bootstrap.store.fs import atomic_write_text, counted
from bootstrap.store.layout import LOCK_FILE, SITE_DIR, Layout
from bootstrap.store.paths import Sources
from bootstrap.tools.backends import Tools, lazy_backend

TYPE_CHECKING = False
if TYPE_CHECKING:  # the manifest's types exist for the type checker only
    from bootstrap.store.manifest import Manifest, Provenance

log = logging.getLogger("bootstrap")
# A log record that says what a command prints as its result: the command line shows it once, on stdout.
OUTCOME = {"outcome": True}


@dataclass(frozen=True)
class SyncResult:
    changed: bool  # a new generation was published
    manifest: Manifest


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
    """Converge the packages folder on the requirements file; raise ``BootstrapError`` if that fails.

    First, once: legacy ``pip install --target`` content at the folder's top level is adopted, and an
    overlay an older bootstrap kept in the packages folder moves to the state folder (``inputs.legacy``).
    """
    legacy_work = settings.org is None and (legacy.needs_migration(settings.layout) or legacy.pending(settings.layout))
    if change is None and legacy_work:  # an organisation's folder never held `pip install --target` content
        return _sync_adopting(settings)
    return _converge(settings, change)


def _sync_adopting(settings: Settings) -> SyncResult:
    """With the overlay lock (as ``add`` takes it): move the old overlay, adopt the legacy distributions
    as runtime additions (a sync with them in the overlay), then a plain sync if that changed nothing."""
    layout = settings.layout
    try:
        safety.prepare_packages_dir(layout.root, allow_world_writable=settings.allow_world_writable)
        legacy.prepare_state_dir(settings)
        with locks.overlay_lock(layout, settings.lock_timeout):
            legacy.migrate(layout)
            result = _adopt(settings, legacy.pending(layout))
    except OSError as exc:
        raise StorageError.from_os_error(exc) from exc
    return result if result is not None else _converge(settings, None)


def _adopt(settings: Settings, found: list[legacy.LegacyDist]) -> SyncResult | None:
    """Sync with ``found`` pinned in the overlay; a pin the failure names (a local build the index lacks) is
    dropped with a warning and the rest tried again, a bounded number of times. None: nothing was adopted."""
    try:
        adoption = legacy.plan_adoption(settings, found)
    except RequirementsError:
        return None  # a damaged overlay: the plain sync records it
    result = None
    for _attempt in range(_MAX_ADOPTION_ATTEMPTS):
        if not adoption.pins:
            break
        try:
            result = _converge(settings, RuntimeChange(adoption.overlay_text()))
            break
        except BootstrapError as exc:
            named = adoption.named_in(str(exc))
            if not named:  # not theirs to answer for (the index is down, say): try them again next time
                log.warning("could not adopt the legacy packages this time: %s", redact(str(exc)))
                legacy.record(settings.layout, adoption, adopted=False)
                return None
            for dist in named:
                log.warning(
                    "%s %s (%s in %s) cannot be adopted: %s; its files stay there, unused (publish it to the "
                    "index, or fix the conflict, to have it served)",
                    dist.name,
                    dist.version,
                    dist.folder,
                    settings.layout.root,
                    redact(" ".join(str(exc).split()))[:500],
                )
            adoption.drop(named, legacy.UNAVAILABLE)
    legacy.record(settings.layout, adoption, adopted=result is not None)
    if result is not None:
        remote.start_upload(settings, None)  # adopted.json, written just now, for fresh instances
        log.info(
            "adopted %d legacy package%s of %s as runtime additions: %s",
            len(adoption.pins),
            "" if len(adoption.pins) == 1 else "s",
            settings.layout.root,
            ", ".join(dist.key for dist in adoption.pins),
        )
    return result


# Each failed attempt drops at least one pin; past this many, the rest waits for the next sync.
_MAX_ADOPTION_ATTEMPTS = 6


def _converge(settings: Settings, change: RuntimeChange | None) -> SyncResult:
    """The sync itself: the overlay on disk (or ``change``'s) and the committed file, built if not served."""
    layout = settings.layout
    current = manifest.read(layout.manifest)
    if change is None and current is not None and current.get("status") == "ok" and _up_to_date(current, settings):
        log.info(
            "up to date: generation %s serves %s", current.get("generation"), settings.requirements_file, extra=OUTCOME
        )
        _tidy(layout)
        return SyncResult(changed=False, manifest=current)
    waiting_since = manifest.now_iso()
    try:
        safety.prepare_packages_dir(layout.root, allow_world_writable=settings.allow_world_writable)
        legacy.prepare_state_dir(settings)  # there to be seen (and edited): `status` names it
        if change is None:
            _validate_before_locking(settings, layout)
        with locks.build_lock(layout, settings.lock_timeout) as waited:
            return _sync_recording_failures(settings, layout, waiting_since if waited else None, change)
    except OSError as exc:  # creating the folder or taking the lock: the machine, not a bug
        raise StorageError.from_os_error(exc) from exc


def _tidy(layout: Layout) -> None:
    """What a sync killed after publishing left (its trash in staging, its claim): removed by a sync that
    finds nothing to build, too, if no other sync holds the lock. A look at two names when there is none."""
    if not layout.build_lease.exists() and not (layout.staging.is_dir() and any(layout.staging.iterdir())):
        return
    try:
        with locks.build_lock(layout, 0):
            publish.clean_staging(layout)
    except LockTimeoutError:
        pass  # a sync under way: it cleans up after itself
    except OSError as exc:
        log.debug("could not tidy %s: %s", layout.staging, exc)


def _validate_before_locking(settings: Settings, layout: Layout) -> None:
    """Read and validate the committed file before taking the build lock: a bad file never waits for the
    lock, and holds it only as long as recording its failure takes (when another sync holds it, that sync
    reads the same file under the lock and records what it finds). Read again with the lock: that reading
    is the one built from."""
    try:
        requirements.read(settings.requirements_file, policy_for(settings))
    except RequirementsError as exc:
        try:
            with locks.build_lock(layout, 0):
                current, _ = manifest.load(layout.manifest)
                _record_failure(settings, layout, current, exc)
        except LockTimeoutError:
            log.debug("another sync holds the build lock: it records the failure")
        raise


def _up_to_date(current: Manifest, settings: Settings) -> bool:
    """Nothing for a plain sync to do: the active generation serves the files, and is not a rollback
    (hosts keep serving a rolled-back generation at start-up; ``sync`` builds what the file asks for)."""
    return current.get("rolled_back_from") is None and serves(current, settings.sources)


def serves(current: Manifest, sources: Sources) -> bool:
    """The active generation serves ``sources`` as they are now, and still holds what was verified: the
    distributions the manifest lists, every file of theirs, no ``.pth`` that no RECORD lists."""
    site_dir = freshness.active_site(current, sources.packages_dir)
    return (
        freshness.stale_reason(current, sources) is None
        and site_dir is not None
        and records.intact(Path(site_dir), current.get("packages", []))
    )


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
            publish.clean_staging(layout, why="this sync failed")
            raise StorageError.from_os_error(exc) from exc
    except BootstrapError as exc:
        if change is None:  # a refused runtime request changed nothing: nothing to record
            _record_failure(settings, layout, current, exc)
        raise


def _sync_locked(
    settings: Settings,
    layout: Layout,
    current: Manifest | None,
    waiting_since: str | None,
    change: RuntimeChange | None,
) -> SyncResult:
    """With the build lock: the stages of one sync, in order. Long because it is that order, each stage one
    call (and the remote cache's two: the state a fresh instance fetches first, the upload after publishing)."""
    started = time.monotonic()
    done = _done_meanwhile(settings, layout, current, waiting_since, change)
    if done is not None:
        return done
    if change is None:
        remote.fetch_state(settings)  # a fresh instance: the runtime additions the remote cache keeps
    desired, found = read_desired(settings, overlay_text=change.overlay if change else None)
    # What the host can provide at a pin's very version: its application's packages and bootstrap's tools alike
    # (only the application's are protected: `found.packages`).
    host_dists = {**found.tools, **found.packages}
    _refuse_a_vanished_file(desired, current)
    inputs = freshness.inputs_of(settings.sources, desired.inputs)
    publish.clean_staging(layout)
    tools = lazy_backend(settings)  # made only if a tool runs: unchanged pins need none
    seed, first_of_org = _seed(current, settings)
    lock, staging = speculate.lock_and_maybe_build(
        settings, layout, desired, tools, seed=seed, provided=host_dists, first_of_org=first_of_org
    )
    origin = str(lock.committed_file or "the lock")
    host.check_pins([(pin.name, pin.version) for pin in lock.pins], found.packages, settings.host_overrides, origin)
    the_plan = plan.plan(lock, host_dists, settings.host_overrides, _active(current, lock, settings), found.tools)
    relative = freshness.relative_inputs(inputs, settings.sources)
    provenance = plan.provenance(str(settings.requirements_file), lock, inputs, relative)
    if the_plan.keep_active:
        assert current is not None
        log.info(
            "the pins are unchanged (%s): generation %s stays active",
            counted(len(lock.pins), "package"),
            current.get("generation"),
        )
        updated = manifest.refreshed(current, provenance, plan.refreshed_entries(current.get("packages", []), desired))
        updated = _commit(settings, updated, change)
        remote.after_publishing(settings, updated, built_here=False, change=change is not None)
        return SyncResult(changed=False, manifest=updated)
    try:
        new, built = _build_and_publish(
            settings, layout, the_plan, provenance, staging, current, desired, host_dists, tools
        )
        new = _commit(settings, new, change)
    except BaseException:
        publish.clean_staging(layout, why="this sync failed")
        raise
    if built is not None:
        publish.done(layout, built)
    # Published: from here on nothing may fail the sync (or roll the manifest back).
    remote.after_publishing(settings, new, built_here=built is not None, change=change is not None)
    _collect_garbage(settings, layout, new["generation"])
    elapsed = time.monotonic() - started
    log.info(
        "published generation %s: %s in %.1fs",
        new["generation"],
        counted(len(new["packages"]), "package"),
        elapsed,
        extra=OUTCOME,
    )
    return SyncResult(changed=True, manifest=new)


def _refuse_a_vanished_file(desired: Desired, current: Manifest | None) -> None:
    """A requirements file that was there when the active generation was built, and is not now (a typo in
    the setting, a repo not checked out yet), never empties what that generation serves; an empty file
    does, a fresh folder stays empty, and a host that never had a file keeps its runtime additions."""
    vanished = current is not None and current.get("requirements_sha256") is not None and current.get("packages")
    if not desired.exists and vanished:
        assert current is not None
        raise RequirementsError(
            desired.requirements_file,
            None,
            f"does not exist, so generation {current.get('generation')} keeps serving its "
            f"{counted(len(current['packages']), 'package')}; check BOOTSTRAP_REQUIREMENTS_FILE (or that the repo "
            "is checked out), or commit an empty file to serve nothing",
        )


def _done_meanwhile(
    settings: Settings,
    layout: Layout,
    current: Manifest | None,
    waiting_since: str | None,
    change: RuntimeChange | None,
) -> SyncResult | None:
    """With the lock: the work another process did while we waited (or the failure it had), if any."""
    if change is None:
        done = current is not None and _up_to_date(current, settings)
    else:
        unchanged = not change.rebuild and change.overlay == _read_text(layout.runtime_requirements)
        done = current is not None and unchanged and serves(current, settings.sources)
    if done:
        assert current is not None
        if current.get("status") != "ok":  # the file is back to what the active generation serves
            current = org_sets.annotated(settings, manifest.ok_again(current))
            manifest.write(layout.manifest, current)
            log.info("up to date again: generation %s serves the file", current.get("generation"), extra=OUTCOME)
        else:
            log.info("up to date: generation %s (synced by another process)", current.get("generation"), extra=OUTCOME)
        return SyncResult(changed=False, manifest=current)
    recorded = _failed_while_waiting(current, settings, waiting_since) if waiting_since and not change else None
    if recorded is not None:
        raise recorded
    return None


def _build_and_publish(
    settings: Settings,
    layout: Layout,
    the_plan: Plan,
    provenance: Provenance,
    staging: Path | None,
    current: Manifest | None,
    desired: Desired,
    host_dists: dict[str, str],
    tools: Tools,
) -> tuple[Manifest, Path | None]:
    """Build (unless the speculative install already did) and verify a generation, then publish it.

    Returns the manifest and the staging folder it was built in; None in its place when the generation
    of these very contents was already published (by another instance, or before a rollback): it is used.
    """
    to_install = the_plan.to_install
    generation = publish.generation_id(
        the_plan.lock, to_install, compile_bytecode=settings.compile_bytecode, overrides=the_plan.overrides
    )
    existing = _published(settings, layout, generation, provenance, desired, current)
    if existing is not None:
        return existing, None
    key = generation  # the remote cache's: the content's id, even when this folder needs another name
    if layout.generation(generation).exists():  # damaged, or not ours to trust: a new folder beside it
        generation = f"{generation}-{build.new_generation_id()[-6:]}"
    expected = {pin.name: pin.version for pin in to_install.pins}
    fetched = remote.fetch(settings, layout, key, expected) if staging is None and remote.wanted(settings) else None
    if fetched is not None:
        staging, dists = fetched
        atomic_write_text(staging / LOCK_FILE, to_install.pins_text)  # this instance's pins, not the archive's
    else:
        staging, dists = _build_verified(settings, layout, the_plan, staging, current, desired, host_dists, tools)
    packages = plan.package_entries(dists, the_plan.provided, desired)
    record = manifest.generation_record(
        generation,
        provenance,
        packages,
        the_plan.overrides,
        stamp=staging.name,
        origin="remote-cache" if fetched is not None else "built",
    )
    site_dir = publish.publish(layout, staging, record)
    return manifest.published(provenance, record, site_dir, current), staging


def _build_verified(
    settings: Settings,
    layout: Layout,
    the_plan: Plan,
    staging: Path | None,
    current: Manifest | None,
    desired: Desired,
    host_dists: dict[str, str],
    tools: Tools,
) -> tuple[Path, list[records.Distribution]]:
    """Build the plan's set (unless the speculative install already did) and verify it: the staging folder
    and its distributions."""
    to_install = the_plan.to_install
    carried = reuse.NOTHING
    # An organisation's speculative install holds its own lines alone (``new-site``): built around, not taken.
    speculated = staging if settings.workspace is not None else None
    if staging is None or speculated is not None:
        carried = reuse.reusable_from(_carry_sources(current, settings), to_install.pins)
        staging = build.build(
            layout,
            to_install,
            tools(),
            timeout=settings.install_timeout,
            carried=carried,
            index_args=desired.pip_args(),
            compile_bytecode=settings.compile_bytecode,
            layered_on=org_sets.workspace_site(settings) if settings.workspace is not None else None,
            speculated=speculated,
            provided=host_dists,
        )
    dists = verify.verify_generation(
        staging / SITE_DIR,
        {pin.name: pin.version for pin in to_install.pins},
        skip=frozenset(settings.skip_import_check),
        timeout=settings.import_check_timeout,
        processes=verify.import_check_processes(settings.import_check_processes, compiled=settings.compile_bytecode),
        provided=host_dists,
        carried=carried.names,
        first=bool(the_plan.overrides),
        extras=desired.requested_extras,
    )
    return staging, dists


def _published(
    settings: Settings,
    layout: Layout,
    generation: str,
    provenance: Provenance,
    desired: Desired,
    current: Manifest | None,
) -> Manifest | None:
    """The manifest for ``generation`` if it is already published, intact, and usable here; else None."""
    site = publish.published_intact(layout, generation)
    record = publish.read_generation(layout.generation(generation)) if site is not None else None
    if site is None or record is None:
        return None
    if not settings.allow_world_writable and freshness.open_to_others(str(site), str(layout.root)) is not None:
        return None
    log.info("generation %s, of these very pins, is already published: using it", generation)
    publish.clean_staging(layout, why="the generation was already published")  # a speculative install of ours
    record = {**record, "packages": plan.refreshed_entries(record.get("packages", []), desired)}
    return manifest.published(provenance, record, site, current)


def _commit(settings: Settings, new: Manifest, change: RuntimeChange | None) -> Manifest:
    """Write the manifest (an organisation's says which, and on which workspace set); then a runtime change's
    overlay becomes the one on disk (the manifest records its hash). Returns what was written."""
    layout = settings.layout
    new = org_sets.annotated(settings, new)
    manifest.write(layout.manifest, new)
    if change is not None:
        atomic_write_text(layout.runtime_requirements, change.overlay)
    return new


def _collect_garbage(settings: Settings, layout: Layout, active: str | None) -> None:
    try:
        in_use = registry.generations_in_use(layout)
        built_on = None
        if settings.org is None:  # the workspace generations organisations' generations link into stay
            in_use |= layers.generations_built_on(layout.root)
            built_on = lambda: layers.generations_built_on(layout.root)  # noqa: E731 (read again at each removal)
        history = manifest.history_of(manifest.read(layout.manifest))
        publish.collect_garbage(
            layout, active=active, keep=settings.generations_kept, in_use=in_use, history=history, built_on=built_on
        )
    except OSError as exc:
        log.warning("could not remove old generations (%s); the next sync tries again", exc)


def _failed_while_waiting(current: Manifest | None, settings: Settings, waiting_since: str) -> RecordedFailure | None:
    """The failure another process recorded for these very inputs while we waited: no point repeating it."""
    error = current.get("error") if current else None
    if not current or current.get("status") != "failed" or not isinstance(error, dict):
        return None
    if str(error.get("at", "")) < waiting_since or not freshness.same_inputs(error, settings.sources):
        return None
    log.info("another process just failed on the same inputs: not repeating it")
    return RecordedFailure(str(error.get("message")), str(error.get("stage")))


def _active(current: Manifest | None, lock: Lock, settings: Settings) -> plan.Active | None:
    """The facts ``plan`` needs about the active generation (its files are only counted when its pins match)."""
    if current is None:
        return None
    site = _reusable_site(current, settings)
    same_pins = current.get("lock_sha256") == lock.sha256
    intact = bool(site and same_pins and records.intact(site, current.get("packages", [])))
    if site and same_pins and not intact:
        log.warning("generation %s no longer holds what was verified: building it again", current.get("generation"))
    return plan.Active(site, current.get("lock_sha256"), intact=intact)


def _reusable_site(current: Manifest | None, settings: Settings) -> Path | None:
    """The active generation's site folder, if this interpreter can use (and carry over) what it holds,
    and it is one of this packages folder's generations (a manifest pointing elsewhere carries nothing)
    that no other local user could have changed (one they could is rebuilt, not kept)."""
    if current is None or not manifest.built_for_this_interpreter(current.get("python")):
        return None
    root = str(settings.layout.root)
    site_dir = freshness.active_site(current, root)
    if site_dir is None:
        return None
    if not settings.allow_world_writable and freshness.open_to_others(site_dir, root) is not None:
        return None
    return Path(site_dir)


def _seed(current: Manifest | None, settings: Settings) -> tuple[str | None, bool]:
    """The pins a resolution keeps where they still fit (the active generation's, else for an organisation the
    workspace's), and whether this is an organisation's first set."""
    own = _active_lock_text(current, settings.layout)
    return own or _workspace_lock_text(settings), settings.workspace is not None and own is None


def _workspace_lock_text(settings: Settings) -> str | None:
    """An organisation's first resolution keeps the workspace's pins (they are its constraints anyway); and a
    seed means no speculative install of the whole set, of which only the organisation's part is new."""
    if settings.workspace is None:
        return None
    workspace = settings.workspace.layout
    return _active_lock_text(manifest.read(workspace.manifest), workspace)


def _carry_sources(current: Manifest | None, settings: Settings) -> list[Path]:
    """Where unchanged distributions are linked from: the active generation; for an organisation the
    workspace's first (the folders only its distributions fill become links to it: ``store.layers``), then
    its own and the other organisations' (one file on disk for every set that has a distribution)."""
    own = _reusable_site(current, settings)
    sites = [own] if own is not None else []
    if settings.workspace is not None:
        workspace = org_sets.workspace_site(settings)
        sites = [*([workspace] if workspace is not None else []), *sites, *org_sets.shared_sites(settings)]
    return list(dict.fromkeys(sites))


def _active_lock_text(current: Manifest | None, layout: Layout) -> str | None:
    site_dir = freshness.active_site(current, str(layout.root))
    if site_dir is None:
        return None
    try:
        return (Path(site_dir).parent / LOCK_FILE).read_text(encoding="utf-8")
    except OSError:
        return None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _record_failure(settings: Settings, layout: Layout, current: Manifest | None, exc: BootstrapError) -> None:
    """Write the failure into the manifest beside the generation that keeps serving; never raise."""
    try:
        base = current if current is not None else manifest.blank(settings.requirements_file)
        inputs = freshness.inputs_of(settings.sources)  # the key files as they are now
        relative = freshness.relative_inputs(inputs, settings.sources)
        failed = manifest.failed(base, redact(exc.message), exc.stage, inputs, relative)
        manifest.write(layout.manifest, org_sets.annotated(settings, failed, published=False))
    except Exception as write_error:  # the original error matters more than this one
        log.error("could not record the failure in %s: %s", layout.manifest, write_error)
