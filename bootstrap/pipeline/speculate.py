"""Resolve, and on a cold sync install beside the resolution: a cold sync costs about one install.

A cold resolution (no committed, cached or active pins to honour, no hashes
to check) runs the resolver and a speculative install with the backend's own
resolver side by side; the install is kept only if it holds exactly the pins
the lock has, so pip-tools stays the only source of pins.
"""

from __future__ import annotations

import contextvars
import logging
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from bootstrap.inputs.requirements import Desired
from bootstrap.pipeline import build, bytecode, publish, resolve
from bootstrap.pipeline.lockfile import Lock
from bootstrap.settings import Settings
from bootstrap.store.layout import SITE_DIR, Layout
from bootstrap.tools import runner
from bootstrap.tools.backends import Backend, Tools

log = logging.getLogger("bootstrap")


def lock_and_maybe_build(
    settings: Settings,
    layout: Layout,
    desired: Desired,
    make_tools: Tools,
    *,
    seed: str | None,
    provided: dict[str, str],
    first_of_org: bool = False,
) -> tuple[Lock, Path | None]:
    """The lock, and a staging folder already holding it when one could be built while resolving.

    ``first_of_org``: an organisation's first set (seeded with the workspace's pins alone): its own lines are
    installed into the staging folder's ``new-site`` while they resolve, and ``build`` keeps that install
    if it holds exactly what is not carried over (``build.adopt_beside``).
    """
    found = resolve.reuse(settings, layout, desired)
    if found.lock is not None:
        return found.lock, None
    tools = make_tools()
    if desired.has_hashes or not tools.speculates or (seed is not None and not first_of_org):
        return resolve.compile_and_cache(settings, layout, desired, tools, seed=seed, around=found.around), None
    return _side_by_side(settings, layout, desired, tools, provided, found.around, seed=seed, beside=first_of_org)


def _compile_meanwhile(
    settings: Settings, site_dir: Path, provided: dict[str, str], on_start: Callable[[subprocess.Popen[str]], None]
) -> bool:
    """The resolver is usually still at work: compile the guess meanwhile, but not what the host has at that very
    version (taken out first: ``adopt`` would anyway). Whether it compiled."""
    build.drop_provided(site_dir, provided)
    if not settings.compile_bytecode:
        return False
    bytecode.compile_tree(site_dir, timeout=settings.install_timeout, on_start=on_start)
    return True


def _side_by_side(
    settings: Settings,
    layout: Layout,
    desired: Desired,
    tools: Backend,
    provided: dict[str, str],
    around: str,
    *,
    seed: str | None = None,
    beside: bool = False,
) -> tuple[Lock, Path | None]:
    """``beside``: into ``new-site``, kept or not by ``build`` (which knows what is carried over)."""
    folder = build.NEW_SITE_DIR if beside else SITE_DIR
    outcome: dict[str, object] = {}
    processes: list[subprocess.Popen[str]] = []
    cancelled = threading.Event()

    def started(process: subprocess.Popen[str]) -> None:
        processes.append(process)
        if cancelled.is_set():  # started after resolution failed and the others were stopped
            runner.kill(process)

    def speculate() -> None:
        try:
            staging = build.build_speculatively(
                layout, desired, tools, timeout=settings.install_timeout, on_start=started, around=around, folder=folder
            )
            outcome["staging"] = staging
            site_dir, others = staging / folder, provided if not beside else {}
            outcome["compiled"] = not cancelled.is_set() and _compile_meanwhile(settings, site_dir, others, started)
        except Exception as exc:  # it is only a guess: any failure just means "not kept"
            outcome["error"] = exc

    context = contextvars.copy_context()  # its log lines are the sync's (an organisation's say so)
    worker = threading.Thread(target=context.run, args=(speculate,), name="bootstrap-speculative-install", daemon=True)
    worker.start()
    try:
        lock = resolve.compile_and_cache(settings, layout, desired, tools, seed=seed, around=around)
    except BaseException:
        cancelled.set()
        for process in processes:  # resolution failed: the guess is moot, do not wait for it
            runner.kill(process)
        worker.join()
        publish.clean_staging(layout, why="resolution failed")
        raise
    worker.join()
    staging = outcome.get("staging")
    kept = isinstance(staging, Path) and (beside or build.adopt(staging, lock, provided))
    if isinstance(staging, Path) and kept:
        if not beside:  # (an organisation's: ``build`` tells)
            log.info("the install made while resolving matches the lock: kept")
        if settings.compile_bytecode and not outcome.get("compiled"):
            bytecode.compile_tree(staging / folder, timeout=settings.install_timeout)
        return lock, staging
    why = f"it failed: {outcome['error']}" if "error" in outcome else "it does not match the lock"
    log.info("not keeping the install made while resolving (%s): installing from the lock", why)
    publish.clean_staging(layout, why="the speculative install was discarded")
    return lock, None
