"""Build a generation in staging, publish it in one atomic step, collect old ones.

``pip install --target`` is only safe into a new, empty folder (pypa/pip#11645,
#13763, #10629), so every generation is a new folder: pip installs the exact
pins (``--no-deps``: the lock is complete) into ``staging/<id>/site``; after
verification the whole folder is renamed into ``generations/``. A published
generation is never modified.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bootstrap import _subprocess, safety
from bootstrap._fs import atomic_write_text, remove_tree
from bootstrap._pipout import indexes, last_error, redact, uv_error, uv_places
from bootstrap.backend import Backend
from bootstrap.bytecode import compile_tree
from bootstrap.errors import CommandError, InstallError, PublishError
from bootstrap.layout import Layout
from bootstrap.requirements import Desired
from bootstrap.resolve import Lock
from bootstrap.verify import Distribution

log = logging.getLogger("bootstrap")

GENERATION_FILE = "generation.json"
LOCK_FILE = "lock.txt"
SITE_DIR = "site"


def new_generation_id() -> str:
    """Sortable by creation time (to the microsecond: gc and rollback rely on it), unique across hosts."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + os.urandom(3).hex()


def _new_staging(layout: Layout) -> Path:
    staging = layout.staging / new_generation_id()
    safety.make_private_dir(staging / SITE_DIR, exist_ok=False)
    return staging


def _install(
    tools: Backend,
    site_dir: Path,
    requirements: Path,
    *,
    no_deps: bool,
    timeout: float,
    quiet: bool = False,
    on_start: Callable[[subprocess.Popen[str]], None] | None = None,
    index_args: list[str] | None = None,
) -> None:
    # index_args: the index options the operator allowed the committed file to give.
    argv, env = tools.install_command(site_dir, requirements, no_deps=no_deps, index_args=index_args or [])
    progress = _quiet_progress if quiet else _progress

    def install() -> None:
        try:
            _subprocess.run(argv, timeout=timeout, on_line=progress, on_start=on_start, env=env, cwd=site_dir)
        except CommandError as exc:
            raise InstallError(_explain(exc, tools)) from exc
        if tools.uv:
            (site_dir / ".lock").unlink(missing_ok=True)  # uv's lock on the target folder, not part of the set

    started = time.time_ns()
    install()
    if tools.uv:
        edited = _edited_in_uv_cache(site_dir, started)
        if edited:
            _clean_uv_cache(tools, edited, timeout=timeout)
            _empty(site_dir)
            started = time.time_ns()
            install()
            edited = _edited_in_uv_cache(site_dir, started)
        if edited:
            raise InstallError(
                f"uv's cache holds a file that was edited after install ({next(iter(edited.values()))}), even "
                "after cleaning it; run `uv cache clean` and sync again"
            )


def _edited_in_uv_cache(site_dir: Path, started_ns: int) -> dict[str, str]:
    """Distributions (and a file of each) that do not match their RECORD right after uv installed them.

    uv hard-links files from its cache (its default: fast, no copy). A file once edited in place
    through a generation (a platform patching certifi's CA bundle, say) is then the cache's file too:
    never build on such a file. Files uv unpacked into its cache during this install (written
    since it ``started_ns``: a cold cache) come straight from their wheel and are not read again.
    """
    from bootstrap.verify import changed_files, installed, written_since

    edited = {}
    for dist in installed(site_dir):
        changed = changed_files(site_dir, [dist], quick=written_since(started_ns))
        changed = [problem for problem in changed if problem.startswith("changed:")]
        if changed:  # (a missing file is verification's to report, not a sign of an edited cache)
            edited[dist.name] = changed[0]
    return edited


def _clean_uv_cache(tools: Backend, edited: dict[str, str], *, timeout: float) -> None:
    log.warning(
        "uv's cache holds files edited after install (%s): dropping %s from uv's cache and installing again",
        "; ".join(edited.values()),
        ", ".join(sorted(edited)),
    )
    # `uv cache clean` waits for every other uv process reading the cache: not for long.
    try:
        _subprocess.run(tools.cache_clean_argv(sorted(edited)), timeout=min(timeout, 60), env=tools.env)
    except CommandError as exc:
        why = "timed out: uv processes are using the cache" if exc.timed_out else uv_error(exc.stderr + exc.stdout)
        raise InstallError(
            f"uv's cache holds a file that was edited after install ({next(iter(edited.values()))}) and "
            f"`uv cache clean` failed ({why}); run `uv cache clean {' '.join(sorted(edited))}` and sync again"
        ) from exc


def _empty(folder: Path) -> None:
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def build(
    layout: Layout,
    lock: Lock,
    *,
    timeout: float,
    tools: Backend,
    index_args: list[str] | None = None,
    reuse_from: Path | None = None,
    compile_bytecode: bool = True,
    carried: list[Distribution] | None = None,
) -> Path:
    """Install exactly ``lock`` into a new staging folder; return the folder (``site/`` inside it).

    Distributions ``reuse_from`` (the active generation's site folder) already
    holds at the same pin are linked over instead of installed again, with
    their bytecode; only what pip installed is compiled (``compile_bytecode``).
    ``carried``: those distributions, if the caller already looked (``reuse.reusable``).
    """
    from bootstrap import reuse

    staging = _new_staging(layout)
    site_dir = staging / SITE_DIR
    atomic_write_text(staging / LOCK_FILE, lock.pins_text)  # pins only: whatever else a lock said never reaches pip
    if carried is None:
        carried = reuse.reusable(reuse_from, lock.pins)
    if carried:
        assert reuse_from is not None
        for dist in carried:
            reuse.link_distribution(reuse_from, site_dir, dist)
        log.info("reusing %d unchanged distribution%s", len(carried), "" if len(carried) == 1 else "s")
    names = {dist.name for dist in carried}
    rest = [pin for pin in lock.pins if pin.name not in names]
    if rest:
        count = len(rest)
        log.info("installing %d distribution%s into a new generation", count, "" if count == 1 else "s")
        pins_file = staging / "install.txt"
        atomic_write_text(pins_file, "".join(pin.line() + "\n" for pin in rest))
        # Into a folder of its own when sharing the site folder: pip --target skips existing folders.
        target = staging / "new-site" if carried else site_dir
        target.mkdir(exist_ok=True)
        _install(tools, target, pins_file, no_deps=True, timeout=timeout, index_args=index_args)
        if compile_bytecode:
            compile_tree(target, timeout=timeout)
        if carried:
            reuse.merge(target, site_dir)
        pins_file.unlink()
    return staging


def build_speculatively(
    layout: Layout,
    desired: Desired,
    *,
    timeout: float,
    on_start: Callable[[subprocess.Popen[str]], None] | None = None,
    tools: Backend,
) -> Path:
    """Install ``desired`` with pip's own resolver into a new staging folder, while pip-compile resolves.

    Only ever kept through ``adopt``, when what pip installed is exactly what
    pip-tools pinned: pip-tools stays the only source of pins, and a cold sync
    costs about one install instead of a resolution plus an install.
    """
    staging = _new_staging(layout)
    input_file = desired.write_compile_input(staging)
    log.info("installing while resolving (kept only if it matches the lock)")
    _install(tools, staging / SITE_DIR, input_file, no_deps=False, timeout=timeout, quiet=True, on_start=on_start)
    return staging


def adopt(staging: Path, lock: Lock, provided: dict[str, str] | None = None) -> bool:
    """Keep a speculative install if it holds exactly the lock's pins; record the lock in it.

    pip installs what the host already ``provided`` as well (``--target`` ignores what is
    installed): those distributions are taken out again, file by file from their RECORD.
    """
    from bootstrap.verify import installed

    site_dir = staging / SITE_DIR
    wanted = {pin.name: pin.version for pin in lock.pins if pin.name not in (provided or {})}
    for dist in installed(site_dir):
        if dist.name not in wanted and (provided or {}).get(dist.name) == dist.version:
            _remove_distribution(site_dir, dist.dist_info, dist.files)
    found = {dist.name: dist.version for dist in installed(site_dir)}
    if found != wanted:
        return False
    for scratch in ("requirements.in", "constraints.txt", "host-constraints.txt", "lock-constraints.txt"):
        (staging / scratch).unlink(missing_ok=True)
    atomic_write_text(staging / LOCK_FILE, lock.pins_text)
    return True


def _remove_distribution(site_dir: Path, dist_info: Path, files: tuple[str, ...]) -> None:
    folders: set[Path] = set()
    root = os.path.realpath(site_dir)
    for path in files:
        target = site_dir / path
        if not os.path.realpath(target).startswith(root + os.sep):  # a RECORD never reaches outside
            continue
        target.unlink(missing_ok=True)
        folders.update(parent for parent in target.parents if site_dir in parent.parents)
        if target.suffix == ".py":  # its bytecode, compiled beside it (RECORD does not list it)
            cache = target.parent / "__pycache__"
            for compiled in cache.glob(f"{target.stem}.*.pyc"):
                compiled.unlink(missing_ok=True)
            folders.add(cache)
    shutil.rmtree(dist_info, ignore_errors=True)
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):  # deepest first
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _quiet_progress(line: str) -> None:
    log.debug("pip (speculative): %s", redact(line))


def _progress(line: str) -> None:
    if line.startswith(("Collecting ", "Processing ")):  # one per distribution fetched
        what = line.split(" ", 1)[1].split(" (from ", 1)[0]
        log.info("  fetching %s", redact(os.path.basename(what)))
    elif line.startswith("Installing collected packages"):
        log.info("  %s", redact(line))
    else:
        log.debug("pip: %s", redact(line))


def _explain(exc: CommandError, tools: Backend) -> str:
    output = exc.stderr + "\n" + exc.stdout
    where = uv_places() if tools.uv else indexes(output)
    if exc.timed_out:
        return f"{tools.installer} timed out on {where}; is it reachable? (raise BOOTSTRAP_INSTALL_TIMEOUT if slow)"
    if "No space left on device" in output or "os error 28" in output:
        return "the disk is full: free space in the packages folder's filesystem and sync again"
    return f"{tools.installer} failed on {where}: {uv_error(output) if tools.uv else last_error(output)}"


def publish(layout: Layout, staging: Path, metadata: dict[str, Any]) -> Path:
    """Move a verified staging folder into ``generations/`` (one rename); return its site folder.

    The caller then writes the manifest, which is what makes it active: a
    crash between the two leaves an unreferenced generation that gc removes.
    """
    atomic_write_text(staging / GENERATION_FILE, json.dumps(metadata, indent=2) + "\n")
    final = layout.generation(staging.name)
    try:
        safety.make_private_dir(layout.generations)
        os.rename(staging, final)
    except OSError as exc:
        raise PublishError(f"cannot publish {staging.name} into {layout.generations} ({exc.strerror})") from exc
    return final / SITE_DIR


def read_generation(path: Path) -> dict[str, Any] | None:
    """A published generation's own record, or None if it is incomplete."""
    try:
        data = json.loads((path / GENERATION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def clean_staging(layout: Layout, *, why: str = "debris of an interrupted sync") -> None:
    """Empty the staging folder (call with the build lock held: then nothing in it is in use)."""
    if not layout.staging.is_dir():
        return
    for entry in layout.staging.iterdir():
        if not entry.name.startswith("trash-"):
            log.info("removing staging/%s (%s)", entry.name, why)
        shutil.rmtree(entry, ignore_errors=True)  # staging is never active: a half-deleted folder is harmless
    for folder in (layout.root, layout.lock_cache):  # atomic writes a killed process left half-done
        for stray in folder.glob(".*.tmp") if folder.is_dir() else ():
            stray.unlink(missing_ok=True)


def collect_garbage(
    layout: Layout, *, active: str | None, keep: int, in_use: frozenset[str] = frozenset()
) -> list[str]:
    """Remove generations beyond the newest ``keep`` (the active one always stays); return their ids.

    ``in_use``: generations running hosts still import from (they stay, beyond ``keep``).
    """
    if not layout.generations.is_dir():
        return []
    ids = sorted((entry.name for entry in layout.generations.iterdir() if entry.is_dir()), reverse=True)
    kept = [active] if active else []
    removed = []
    for generation_id in ids:
        if generation_id in kept:
            continue
        if generation_id in in_use:
            log.info("keeping generation %s: a running host still imports from it", generation_id)
            continue
        complete = read_generation(layout.generation(generation_id)) is not None
        if complete and len(kept) < keep:
            kept.append(generation_id)
            continue
        try:
            remove_tree(layout.generation(generation_id), layout.staging)
        except OSError as exc:  # a share refusing to rename a folder in use: try again next time
            log.warning("could not remove generation %s (%s); the next sync tries again", generation_id, exc)
            continue
        removed.append(generation_id)
    if removed:
        log.info("removed %d old generation%s", len(removed), "" if len(removed) == 1 else "s")
    return removed
