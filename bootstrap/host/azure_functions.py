"""Azure Functions (Python v2 programming model): health and workflow routes on the host's FunctionApp.

A platform adds three lines to its ``function_app.py``::

    import azure.functions as func
    from bootstrap.azure_functions import register

    app = func.FunctionApp()
    register(app, block=False, watch=True)

``register`` runs ``bootstrap.startup()`` once (with its ``block`` and
``watch``) and adds two HTTP functions:

- ``GET /api/health``: the health report (``python -m bootstrap check --json``,
  run as a child process: the host imports none of bootstrap's tools) as JSON,
  200 when healthy, 503 otherwise. Anonymous by default, for probes.
- ``POST /api/workflows/{name}/execute`` with ``{"inputData": {...}}``: runs
  ``run(input_data)`` of ``<name>.py`` in the repo folder (the requirements
  file's), else in its ``workflows`` subfolder, and answers 200 with its
  result as JSON. A function key is needed by default: it runs code and may
  install packages. 404 when there is no such workflow, 400 for a body that is
  not JSON or an ``inputData`` that is not an object, 500 (one line, the
  traceback goes to the log) when the workflow fails, 503 when the first sync
  after a non-blocking start-up has not finished within ``first_sync_timeout``.
  With ``register(org_header="X-Org-Id")`` the route runs the workflow for the
  org that header names (``bootstrap.execute(..., org=...)``; no header: the
  workspace): 400 for a value that is not an org id, 503 (with ``Retry-After``)
  for an org with no synced set yet (unknown to this host, or its first sync
  not done: the same answer, so the route does not tell which org ids exist).
  Every answer of a run says ``X-Bootstrap-Isolation: in-process|process`` and,
  for an org, ``X-Bootstrap-Org``. The header must be one the platform's own
  front door sets after it authenticates the caller, and strips from what
  clients send: the route trusts it, and whoever can set it runs as that org.

The health body and the error bodies go to callers who may be anonymous: index
URLs and filesystem paths in them are replaced (``<url>``, ``<packages>``,
``<repo>``, ``<path>``); the log keeps the full text, and so does ``check --json``.

Only hosts that use Azure Functions import this module; ``bootstrap`` itself
never does (``pip install 'bootstrap-packages[azure]'``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import azure.functions as func

from bootstrap.errors import WorkflowError, redact
from bootstrap.host import child, live
from bootstrap.host.activation import read_manifest
from bootstrap.host.execute import Executor
from bootstrap.host.startup import startup
from bootstrap.host.workflows import NOT_WORKFLOWS, WORKFLOW_NAME, default_folders
from bootstrap.store.paths import ORG_ID_RULE, Sources, valid_org_id

if TYPE_CHECKING:
    from bootstrap.settings import Settings

logger = logging.getLogger("bootstrap")

__all__ = ["NOT_WORKFLOWS", "WORKFLOW_NAME", "register"]  # the names (host.workflows') kept where they were
# How long a workflow call waits for the first sync after register(block=False) before answering 503: under the
# 230 s an Azure front end waits for an HTTP answer.
FIRST_SYNC_TIMEOUT = 120.0
RETRY_AFTER_SECONDS = 30
# A WorkflowError's reason -> the status the execute route answers with.
_STATUS = {"missing": 404, "invalid": 400, "org": 503, "failed": 500, "crashed": 500}


def register(
    app: func.FunctionApp | func.Blueprint,
    *,
    settings: Settings | None = None,
    workflows_dir: Path | None = None,
    block: bool = True,
    watch: bool = False,
    first_sync_timeout: float = FIRST_SYNC_TIMEOUT,
    health_auth_level: func.AuthLevel = func.AuthLevel.ANONYMOUS,
    execute_auth_level: func.AuthLevel = func.AuthLevel.FUNCTION,
    function_name_prefix: str = "bootstrap_",
    org_header: str | None = None,
) -> None:
    """Start up bootstrap once and add the health and workflow routes to ``app``.

    ``settings`` default to the environment (``BOOTSTRAP_*``; a bad value is
    logged, and the health route names it). Workflows are ``<name>.py`` in the
    requirements file's folder (where the platform keeps them), else in its
    ``workflows`` subfolder; ``workflows_dir`` names the one folder instead.
    ``block`` and ``watch`` are ``startup()``'s: ``block=False`` returns at once
    (the last good generation serves; a needed sync runs in the background) and
    a workflow call then waits for that first sync, ``first_sync_timeout``
    seconds at most (then 503, with ``Retry-After``); ``watch=True`` follows
    the requirements file. The two functions are named ``<prefix>health`` and
    ``<prefix>execute_workflow`` (function names must be unique in an app, so
    register once per app). Workflows that call ``bootstrap.ensure()`` read
    ``BOOTSTRAP_*`` from the environment: ``settings`` should agree with it.
    """
    sources = settings.sources if settings is not None else Sources.from_env()
    # Never raises: a failed sync is logged and the last good set serves.
    current = startup(settings, block=block, watch=watch)
    if block and not watch:
        # Through the live machinery: this host's record keeps the generations it imports from out of gc's
        # reach, and later switches (per request) keep its restart-pending list. (live.start did it otherwise;
        # switching again here could move this process back from a generation a background sync just made.)
        live.switch(current, sources.packages_dir)
    folders = default_folders(sources.requirements_file, workflows_dir)
    timeout = None if block else first_sync_timeout
    routes = _Routes(settings, sources, folders, first_sync_timeout=timeout, org_header=org_header)
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
    """The two handlers, bound to the settings and the workflow folders (searched in order)."""

    def __init__(
        self,
        settings: Settings | None,
        sources: Sources,
        folders: list[Path],
        *,
        first_sync_timeout: float | None,
        org_header: str | None = None,
    ) -> None:
        self.settings = settings
        self.sources = sources
        self.executor = Executor(sources, folders)
        self.org_header = org_header  # None: every execution is the workspace's
        self.first_sync_timeout = first_sync_timeout  # None: start-up blocked, nothing to wait for
        self.scrub = _Scrubber(
            {sources.packages_dir: "<packages>", os.path.dirname(sources.requirements_file): "<repo>"}
        )
        self._last_problems: list[str] | None = None
        self._lock = threading.Lock()

    def health(self, req: func.HttpRequest) -> func.HttpResponse:
        try:
            reports = [e["report"] for e in child.run(["check", "--json"], self.settings) if e.get("event") == "report"]
            if not reports:
                raise RuntimeError("python -m bootstrap check gave no report")
            report = reports[-1]
        except Exception as exc:  # the probe answers even when the check itself breaks
            _log_failure("the health check failed")
            report = {"healthy": False, "problems": [f"the health check failed: {_one_line(exc)}"], "notes": []}
        self._log_report(report)
        return _json(self.scrub(report), 200 if report["healthy"] else 503)

    def _log_report(self, report: dict[str, Any]) -> None:
        """The full report (paths, index URLs) for the operator: problems once per change, the rest at debug."""
        logger.debug("health report: %s", redact(json.dumps(report, default=str)))
        problems = [str(problem) for problem in report.get("problems") or []]
        with self._lock:
            changed, self._last_problems = problems != self._last_problems, problems
        if changed and problems:
            logger.warning("health: unhealthy: %s", redact("; ".join(problems)))

    def execute(self, req: func.HttpRequest) -> func.HttpResponse:
        name = req.route_params.get("name", "")
        if self.executor.workflows.path(name) is None:
            logger.info(
                "no workflow named %r in %s", name[:100], " or ".join(map(str, self.executor.workflows.folders))
            )
            return self._error(f"there is no workflow named {name[:100]!r}", 404)
        org = req.headers.get(self.org_header) if self.org_header else None
        if org is not None and not valid_org_id(org):
            return self._error(f"the {self.org_header} header is not an org id: {ORG_ID_RULE}", 400)
        input_data, problem = _input_data(req.get_body())
        if problem:
            return self._error(problem, 400)
        waited = self._wait_for_first_sync(name)
        if waited is not None:
            return waited
        # Cheap (reads the manifest; nothing else unless it changed): a generation another worker built is seen.
        live.switch(read_manifest(self.sources.packages_dir), self.sources.packages_dir)
        try:
            execution = self.executor.execute(name, input_data, org)
        except WorkflowError as exc:
            status = _STATUS.get(exc.reason, 500)
            if status == 500:
                _log_failure("%s", exc.message)  # the full line and the traceback, for the operator
            else:
                logger.info("workflow %s for org %s: %s", name, org, exc.message)
            response = self._error(exc.message, status)
            if status == 503:
                response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
            return response
        try:
            body = json.dumps(execution["result"], default=str)
        except (TypeError, ValueError) as exc:  # circular, say; default=str covers the rest
            _log_failure("workflow %s returned a result that is not JSON", name)
            return self._error(f"workflow {name} returned a result that is not JSON: {_one_line(exc)}", 500)
        response = func.HttpResponse(body, status_code=200, mimetype="application/json")
        response.headers["X-Bootstrap-Isolation"] = execution["isolation"]
        if execution["org"] is not None:
            response.headers["X-Bootstrap-Org"] = execution["org"]
        return response

    def _error(self, message: str, status: int) -> func.HttpResponse:
        """An error body for the caller: the message without URLs or paths (the log has them)."""
        return _json({"error": self.scrub(message)}, status)

    def _wait_for_first_sync(self, name: str) -> func.HttpResponse | None:
        """After a non-blocking start-up, wait (bounded) for the first sync: a workflow that imports a package
        the sync brings must not fail with ModuleNotFoundError for having come early. None once synced."""
        if self.first_sync_timeout is None or live.wait_until_synced(self.first_sync_timeout):
            return None
        logger.warning(
            "workflow %s: the first sync has not finished after %ss; answered 503", name, self.first_sync_timeout
        )
        message = "the packages are still being installed (the first sync since the host started); try again shortly"
        response = _json({"error": message}, 503)
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response


class _Scrubber:
    """Replaces URLs and filesystem paths in what goes to a caller: known folders by their labels, any other
    absolute path by ``<path>``, any URL by ``<url>`` (credentials were redacted before, so nothing of them
    survives a URL that stops early)."""

    _STOP = r"""\s'"`<>()\[\]{},;"""  # where a path or URL in a message ends
    _URL = re.compile(rf"[A-Za-z][A-Za-z0-9+.-]*://[^{_STOP}]+")
    _PATH = re.compile(rf"(?<![\w./:~>-])/[^{_STOP}:]+")

    def __init__(self, labels: dict[str, str]) -> None:
        known: dict[str, str] = {}
        for folder, label in labels.items():
            for form in {os.path.abspath(folder), os.path.realpath(folder)}:
                if len(form) > 1:
                    known[form] = label
        roots = sorted(known, key=len, reverse=True)  # the longest first: a folder inside another
        self._known = known
        self._roots = re.compile(
            rf"(?<![\w./:~>-])({'|'.join(map(re.escape, roots))})(?=[/.{self._STOP}:]|$)" if roots else r"(?!)"
        )

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            text = self._URL.sub("<url>", redact(value))
            text = self._roots.sub(lambda match: self._known[match.group(1)], text)
            return self._PATH.sub("<path>", text)
        if isinstance(value, dict):
            return {self(key): self(item) for key, item in value.items()}  # keys too: inputs are paths
        if isinstance(value, list):
            return [self(item) for item in value]
        return value


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


def _log_failure(message: str, *args: object) -> None:
    """``logger.exception``, with the traceback redacted: a workflow's exception may quote an index URL with
    its password (a failed ``pip install``), and the log is read by more people than the operator."""
    logger.error(message + "\n%s", *args, redact(traceback.format_exc().rstrip()))


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return redact(f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__)


def _json(payload: dict[str, Any], status: int) -> func.HttpResponse:
    return func.HttpResponse(json.dumps(payload, default=str), status_code=status, mimetype="application/json")
