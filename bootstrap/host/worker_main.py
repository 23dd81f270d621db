"""What runs in an org's worker process (``host.workers``): its workflows, one execution at a time.

Started as ``python -I -c BOOT CONFIG``: ``sys.path`` is the org generation's
site, then the host's own entries (none inside the packages folder). The
protocol is JSON lines on the process's original stdin and stdout, kept on
private descriptors: fd 0 then reads ``/dev/null`` and fd 1 writes to stderr,
so what a workflow prints (or a library writes to fd 1) never reaches the
protocol. It ends at the end of its input: when the host process ends.
The standard library and bootstrap's store layer only.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import IO, Any

from bootstrap.host.workflows import Workflows
from bootstrap.store import registry
from bootstrap.store.layout import Layout

# The -c program: the path first (so bootstrap is found where the host found it), then this module.
BOOT = (
    "import sys, json; config = json.loads(sys.argv[1]); sys.path[:] = config['path']; "
    "from bootstrap.host.worker_main import main; main(config)"
)


def main(config: dict[str, Any]) -> None:
    """Serve requests ``{"id", "workflow", "path", "input"}`` until the input ends; answer each with
    ``{"id", "ok": true, "result"}`` or ``{"id", "ok": false, "error"}``."""
    requests, answers = _private_protocol()
    try:  # gc keeps the generation this process runs on
        registry.write_record(Layout(config["packages"]), [], [config["generation"]])
    except OSError as exc:
        print(f"bootstrap worker: cannot write its registry record: {exc}", file=sys.stderr)
    workflows = Workflows([])  # the host found the file (its rules); this process only loads it
    _send(answers, {"ready": True, "pid": os.getpid()})
    for line in requests:
        if not line.strip():
            continue
        request = json.loads(line)
        _send(answers, {"id": request.get("id"), **_execute(workflows, request)})


def _private_protocol() -> tuple[IO[bytes], IO[bytes]]:
    """The protocol's own descriptors (dups of fd 0 and 1); fd 0 then reads /dev/null, fd 1 goes to stderr."""
    requests = os.fdopen(os.dup(0), "rb")
    answers = os.fdopen(os.dup(1), "wb")
    nothing = os.open(os.devnull, os.O_RDONLY)
    os.dup2(nothing, 0)
    os.close(nothing)
    sys.stdout.flush()
    os.dup2(2, 1)
    return requests, answers


def _execute(workflows: Workflows, request: dict[str, Any]) -> dict[str, Any]:
    name = str(request.get("workflow"))
    try:
        module = workflows.load(name, Path(str(request.get("path"))))
    except Exception as exc:
        return {"ok": False, "error": f"cannot load workflow {name}: {one_line(exc)}"}
    run = getattr(module, "run", None)
    if not callable(run):
        return {"ok": False, "error": f"workflow {name} has no run(input_data) function"}
    try:
        result = run(request.get("input"))
    except (Exception, SystemExit) as exc:  # sys.exit() in a workflow must not end the worker
        traceback.print_exc()  # to stderr: the host's log stream; the host gets the one line
        return {"ok": False, "error": f"workflow {name} failed: {one_line(exc)}"}
    finally:
        sys.stdout.flush()
    try:
        return {"ok": True, "result": json.loads(json.dumps(result, default=str))}
    except (TypeError, ValueError) as exc:
        return {"ok": False, "error": f"workflow {name} returned a result that is not JSON: {one_line(exc)}"}


def _send(answers: IO[bytes], payload: dict[str, Any]) -> None:
    answers.write(json.dumps(payload).encode() + b"\n")
    answers.flush()


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message``."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
