"""Azure Functions (Python v2 programming model): health and workflow routes on the host's FunctionApp.

A platform adds three lines to its ``function_app.py``::

    import azure.functions as func
    from bootstrap.azure_functions import register

    app = func.FunctionApp()
    register(app)

``register`` runs ``bootstrap.startup()`` once (sync if needed, then activate)
and adds two HTTP functions:

- ``GET /api/health``: the health report (``python -m bootstrap check --json``,
  run as a child process: the host imports none of bootstrap's tools) as JSON,
  200 when healthy, 503 otherwise. Anonymous by default, for probes.
- ``POST /api/workflows/{name}/execute`` with ``{"inputData": {...}}``: runs
  ``run(input_data)`` of ``<workflows>/<name>.py`` and answers 200 with its
  result as JSON. A function key is needed by default: it runs code and may
  install packages. 404 when there is no such workflow, 400 for a body that is
  not JSON or an ``inputData`` that is not an object, 500 (one line, the
  traceback goes to the log) when the workflow fails.

Only hosts that use Azure Functions import this module; ``bootstrap`` itself
never does (``pip install 'bootstrap-packages[azure]'``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import types
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import azure.functions as func

from bootstrap.errors import redact
from bootstrap.host import child, live
from bootstrap.host.activation import read_manifest
from bootstrap.host.startup import startup
from bootstrap.store.paths import Sources

if TYPE_CHECKING:
    from bootstrap.settings import Settings

logger = logging.getLogger("bootstrap")

# A workflow name is a file name without ".py": letters, digits, "_" and "-", never a dot or a slash;
# a leading "_" or "-" is not a workflow (helpers such as _common.py, __init__.py).
WORKFLOW_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


def register(
    app: func.FunctionApp | func.Blueprint,
    *,
    settings: Settings | None = None,
    workflows_dir: Path | None = None,
    health_auth_level: func.AuthLevel = func.AuthLevel.ANONYMOUS,
    execute_auth_level: func.AuthLevel = func.AuthLevel.FUNCTION,
    function_name_prefix: str = "bootstrap_",
) -> None:
    """Start up bootstrap once and add the health and workflow routes to ``app``.

    ``settings`` default to the environment (``BOOTSTRAP_*``; a bad value is
    logged, and the health route names it); ``workflows_dir`` defaults to ``workflows`` beside the
    requirements file. The two functions are named ``<prefix>health`` and
    ``<prefix>execute_workflow`` (function names must be unique in an app, so
    register once per app). Workflows that call ``bootstrap.ensure()`` read
    ``BOOTSTRAP_*`` from the environment: ``settings`` should agree with it.
    """
    sources = settings.sources if settings is not None else Sources.from_env()
    current = startup(settings)  # never raises: a failed sync is logged and the last good set serves
    # Through the live machinery: this host's record keeps the generations it imports from out of gc's reach,
    # and later switches (below, per request) keep its restart-pending list.
    live.switch(current, sources.packages_dir)
    folder = Path(workflows_dir) if workflows_dir is not None else Path(sources.requirements_file).parent / "workflows"
    routes = _Routes(settings, sources, Path(os.path.abspath(folder)))
    execute_route = "workflows/{name}/execute"
    _add(app, f"{function_name_prefix}health", "health", "GET", health_auth_level, routes.health)
    _add(app, f"{function_name_prefix}execute_workflow", execute_route, "POST", execute_auth_level, routes.execute)


def _add(
    app: func.FunctionApp | func.Blueprint,
    name: str,
    route: str,
    method: str,
    auth_level: func.AuthLevel,
    handler: Callable[..., func.HttpResponse],
) -> None:
    # The same as stacking @app.function_name(name) on @app.route(...): route first, then the name.
    app.function_name(name=name)(app.route(route=route, methods=[method], auth_level=auth_level)(handler))


class _Routes:
    """The two handlers, bound to the settings and the workflows folder."""

    def __init__(self, settings: Settings | None, sources: Sources, workflows_dir: Path) -> None:
        self.settings = settings
        self.sources = sources
        self.workflows_dir = workflows_dir
        self._loaded: dict[Path, tuple[tuple[int, int, int], types.ModuleType]] = {}
        self._lock = threading.Lock()

    def health(self, req: func.HttpRequest) -> func.HttpResponse:
        try:
            reports = [e["report"] for e in child.run(["check", "--json"], self.settings) if e.get("event") == "report"]
            if not reports:
                raise RuntimeError("python -m bootstrap check gave no report")
            report = reports[-1]
        except Exception as exc:  # the probe answers even when the check itself breaks
            logger.exception("the health check failed")
            report = {"healthy": False, "problems": [f"the health check failed: {_one_line(exc)}"], "notes": []}
        return _json(report, 200 if report["healthy"] else 503)

    def execute(self, req: func.HttpRequest) -> func.HttpResponse:
        name = req.route_params.get("name", "")
        path = self.workflow_path(name)
        if path is None:
            return _json({"error": f"there is no workflow named {name[:100]!r} in {self.workflows_dir}"}, 404)
        input_data, problem = _input_data(req.get_body())
        if problem:
            return _json({"error": problem}, 400)
        try:
            workflow = self._load(name, path)
        except Exception as exc:
            logger.exception("cannot load workflow %s from %s", name, path)
            return _json({"error": f"cannot load workflow {name}: {_one_line(exc)}"}, 500)
        run = getattr(workflow, "run", None)
        if not callable(run):
            return _json({"error": f"workflow {name} has no run(input_data) function"}, 500)
        # Cheap (reads the manifest; nothing else unless it changed): a generation another worker built is seen.
        live.switch(read_manifest(self.sources.packages_dir), self.sources.packages_dir)
        try:
            result = run(input_data)
        except (Exception, SystemExit) as exc:  # sys.exit() in a workflow must not take the handler down
            logger.exception("workflow %s failed", name)
            return _json({"error": f"workflow {name} failed: {_one_line(exc)}"}, 500)
        try:
            body = json.dumps(result, default=str)
        except (TypeError, ValueError) as exc:  # circular, say; default=str covers the rest
            logger.exception("workflow %s returned a result that is not JSON", name)
            return _json({"error": f"workflow {name} returned a result that is not JSON: {_one_line(exc)}"}, 500)
        return func.HttpResponse(body, status_code=200, mimetype="application/json")

    def workflow_path(self, name: str) -> Path | None:
        """``<workflows>/<name>.py`` when ``name`` is a workflow name and that is a file inside the folder.

        A name with a dot, a slash or a percent sign never makes a path; a file
        that is a symlink resolving outside the folder is not a workflow.
        """
        if not WORKFLOW_NAME.fullmatch(name):
            return None
        try:
            folder = self.workflows_dir.resolve(strict=True)
            path = (folder / f"{name}.py").resolve(strict=True)
        except (OSError, RuntimeError, ValueError):  # missing, a symlink loop, a NUL byte
            return None
        if path.parent != folder or not path.is_file():
            return None
        return path

    def _load(self, name: str, path: Path) -> types.ModuleType:
        """The workflow's module, executed afresh when its file changed since the last call."""
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)  # the file checked, not a link swapped in since
        with os.fdopen(fd, "rb") as file:
            stat = os.fstat(file.fileno())
            key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            with self._lock:
                cached = self._loaded.get(path)
            if cached is not None and cached[0] == key:
                return cached[1]
            source = file.read()
        module = types.ModuleType(f"bootstrap_workflows.{name}")
        module.__file__ = str(path)
        sys.modules[module.__name__] = module  # dataclasses, pickle and friends look a module up there
        try:
            exec(compile(source, str(path), "exec"), module.__dict__)
        except BaseException:
            sys.modules.pop(module.__name__, None)
            raise
        with self._lock:
            self._loaded[path] = (key, module)
        return module


def _input_data(body: bytes) -> tuple[dict[str, Any], str | None]:
    """The ``inputData`` of a request body, or the reason the body is refused."""
    if not body.strip():
        return {}, None
    try:
        payload = json.loads(body)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        return {}, f'the request body is not valid JSON ({exc}); send {{"inputData": {{...}}}}'
    if not isinstance(payload, dict):
        return {}, f'the request body must be a JSON object like {{"inputData": {{...}}}}, not {_kind(payload)}'
    input_data = payload.get("inputData")
    if input_data is None:
        return {}, None
    if not isinstance(input_data, dict):
        return {}, f"inputData must be a JSON object, not {_kind(input_data)}"
    return input_data, None


def _kind(value: object) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}.get(
        type(value), type(value).__name__
    )


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return redact(f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__)


def _json(payload: dict[str, Any], status: int) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(payload, default=str), status_code=status, mimetype="application/json")
