"""``bootstrap.execute(name, input_data, org=...)``: run a workflow for the workspace or for an org.

The workspace (``org=None``) runs in this process, as the Azure route always
did. An org runs in this process when its set agrees with it
(``host.isolation.admit``: every distribution it shares with what this process
can import has the same version, and its own, private ones are served only
inside its executions), else in a worker process for its generation
(``host.workers``). The result says which.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import TYPE_CHECKING, Any, TypedDict

from bootstrap.errors import WorkflowError, redact
from bootstrap.host import isolation, state
from bootstrap.host.workflows import Workflows, default_folders
from bootstrap.store import freshness, manifest, paths
from bootstrap.store.paths import Sources

if TYPE_CHECKING:
    from pathlib import Path

    from bootstrap.settings import Settings

_log = logging.getLogger("bootstrap")


class Execution(TypedDict):
    """What ``bootstrap.execute`` returns."""

    workflow: str
    org: str | None
    isolation: str  # "in-process" | "process"
    generation: str | None  # the org's; the workspace's active one for org None (None before any activation)
    result: Any  # what run() returned (through JSON, from a worker)


class Executor:
    """Runs the workflows of some folders against one packages folder (and its orgs')."""

    def __init__(self, sources: Sources, folders: list[Path]) -> None:
        self.sources = sources
        self.packages_dir = os.path.abspath(sources.packages_dir)
        self.workflows = Workflows(folders)

    def execute(self, name: str, input_data: Any, org: str | None = None) -> Execution:
        """Run workflow ``name``'s ``run(input_data)``; raise WorkflowError (``reason`` says which kind)."""
        path = self.workflows.path(name)
        if path is None:
            raise WorkflowError(f"there is no workflow named {str(name)[:100]!r}", "missing")
        if org is None:
            token = isolation.running.set(None)  # the workspace sees no org's packages, even when nested
            try:
                result = self._run_here(name, path, input_data, None)
            finally:
                isolation.running.reset(token)
            return _execution(name, None, isolation.IN_PROCESS, _workspace_generation(), result)
        if not paths.valid_org_id(org):
            raise WorkflowError(f"{str(org)[:80]!r} is not an org id: {paths.ORG_ID_RULE}", "invalid")
        org_root = paths.org_packages_dir(self.packages_dir, org)
        generation, site = _org_generation(org, self.sources.for_org(org))
        mode, why, admitted = isolation.admit(org, generation, site)
        if admitted is None:
            _log.debug("org %s runs in a worker process: %s", org, why)
            result = self._run_in_worker(name, path, input_data, org, (generation, site, org_root))
            return _execution(name, org, mode, generation, result)
        _record(org, org_root, generation)
        token = isolation.running.set(admitted)
        try:
            result = self._run_here(name, path, input_data, org)
        finally:
            isolation.running.reset(token)
        return _execution(name, org, mode, generation, result)

    def _run_here(self, name: str, path: Path, input_data: Any, org: str | None) -> Any:
        try:
            workflow = self.workflows.load(name, path, org)
        except Exception as exc:
            raise WorkflowError(f"cannot load workflow {name}: {_one_line(exc)}") from exc
        run = getattr(workflow, "run", None)
        if not callable(run):
            raise WorkflowError(f"workflow {name} has no run(input_data) function")
        try:
            return run(input_data)
        except (Exception, SystemExit) as exc:  # sys.exit() in a workflow must not take the caller down
            raise WorkflowError(f"workflow {name} failed: {_one_line(exc)}") from exc

    def _run_in_worker(self, name: str, path: Path, input_data: Any, org: str, where: tuple[str, str, str]) -> Any:
        """``where``: the org's generation, its site and the org's packages folder."""
        from bootstrap.host import workers  # slow path: subprocess, the pool's threads

        try:
            json.dumps(input_data)
        except (TypeError, ValueError) as exc:
            raise WorkflowError(f"workflow {name}: input_data is not JSON ({exc}); a worker gets it as JSON") from None
        generation, site, org_root = where
        request = {"workflow": name, "path": str(path), "input": input_data}
        return workers.POOL.execute(org, generation, site, org_root, request)


_recorded: set[tuple[str, str]] = set()  # (org folder, generation)s in this process's registry records
_recording = threading.Lock()


def _record(org: str, org_root: str, generation: str) -> None:
    """This process's registry record in the org's packages folder: gc keeps the generations it runs here."""
    if (org_root, generation) in _recorded:
        return
    from bootstrap.store import registry  # slow path: once per org generation
    from bootstrap.store.layout import Layout  # slow path: pathlib

    with _recording:  # one writer of the record at a time, naming every generation admitted so far
        _recorded.add((org_root, generation))
        try:
            registry.write_record(Layout(org_root), [], isolation.generations_admitted(org))
        except OSError as exc:
            _log.warning("org %s: cannot write this process's registry record: %s", org, exc)


def _org_generation(org: str, sources: Sources) -> tuple[str, str]:
    """The org's active generation and its site; WorkflowError (reason "org") when it has none yet, or one
    that must not be imported from (``freshness.not_served``: a folder every local user can write...)."""
    current = manifest.read(sources.manifest_file)
    generation = current.get("generation") if current is not None else None
    if current is None or not generation:
        raise WorkflowError(f"org {org} has no synced packages set: sync it (python -m bootstrap sync)", "org")
    why = freshness.not_served(current, sources)  # a misplaced id first: no path is made of it before
    if why is not None:
        raise WorkflowError(f"org {org}'s packages are not served: {' '.join(why.split())}", "org")
    return generation, paths.site_path(sources.packages_dir, generation)


def _workspace_generation() -> str | None:
    site_dir = state.current().site_dir  # .../generations/<id>/site
    return os.path.basename(os.path.dirname(site_dir)) if site_dir else None


def _execution(name: str, org: str | None, mode: str, generation: str | None, result: Any) -> Execution:
    return {"workflow": name, "org": org, "isolation": mode, "generation": generation, "result": result}


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return redact(f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__)


_executors: dict[tuple[str, str], Executor] = {}


def execute(name: str, input_data: Any, *, org: str | None = None, settings: Settings | None = None) -> Execution:
    """``bootstrap.execute``: the workflows of the requirements file's folder (else its ``workflows``
    subfolder), with the settings given, else the environment's ``BOOTSTRAP_*``. An org's settings
    (``settings.for_org(ID)``) run for that org, with its workspace's folders."""
    if settings is not None and settings.workspace is not None:
        org, settings = org or settings.org, settings.workspace
    sources = settings.sources if settings is not None else Sources.from_env()
    key = (sources.requirements_file, sources.packages_dir)
    executor = _executors.get(key)
    if executor is None:
        executor = _executors.setdefault(key, Executor(sources, default_folders(sources.requirements_file)))
    return executor.execute(name, input_data, org)
