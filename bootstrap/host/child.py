"""bootstrap's own work, run as ``python -m bootstrap`` children of the host, so the host imports none of its tools.

Why children: ``sys.modules`` is process-wide. Once a host imported pydantic,
packaging, filelock or watchdog for a sync, every workflow in it would get that
version, whatever the generation holds, and a generation may hold a user's own
version of them (``inputs.host``: bootstrap's tools are no protected host
packages). So the host side (start-up, activation, the switch, following the
manifest, health) uses the standard library, and what reads settings, resolves,
installs or watches runs in a child whose ``sys.path`` is the interpreter's own
(never a generation).

The child speaks a small protocol on stderr (``--relay``): one JSON object per
line after ``RELAY_MARK``. ``{"level", "message"}`` is one of its log records,
logged again here (the host's "bootstrap" logger sees a sync's progress as if it
ran in-process); ``{"event", ...}`` is something a caller waits for (a watcher
ready, a sync done, a package added); ``{"error", "kind", "stage"}`` comes last
when it fails, and is raised here as the same class (``errors.rebuilt``).
"""

from __future__ import annotations

import json
import logging
import os
import site
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from bootstrap.errors import BootstrapError, CommandError, last_line, rebuilt, redact
from bootstrap.store import paths
from bootstrap.store.fs import resolves_inside
from bootstrap.tools import runner

if TYPE_CHECKING:
    import subprocess

    from bootstrap.settings import Settings

RELAY_MARK = "bootstrap-relay: "

log = logging.getLogger("bootstrap")

Event = dict[str, Any]


def relay_line(payload: dict[str, Any]) -> str:
    """One line of the protocol (the child's side)."""
    return RELAY_MARK + json.dumps(payload, default=str)


def run(
    args: Sequence[str],
    settings: Settings | None = None,
    *,
    on_event: Callable[[Event], None] | None = None,
    on_start: Callable[[subprocess.Popen[str]], None] | None = None,
) -> list[Event]:
    """Run ``python -m bootstrap ARGS`` to its end; return its events, raise its error as its own class.

    ``settings`` (else the environment's ``BOOTSTRAP_*``) reach the child as variables.
    """
    events: list[Event] = []
    failure: list[Event] = []

    def on_line(line: str) -> None:
        if not line.startswith(RELAY_MARK):
            log.debug("%s", redact(line))  # the command's own summary on stdout; what a crash printed
            return
        try:
            payload = json.loads(line[len(RELAY_MARK) :])
        except ValueError:
            log.debug("%s", redact(line))
            return
        if "level" in payload:
            log.log(int(payload["level"]), "%s", redact(str(payload.get("message", ""))))
        elif "error" in payload:
            failure.append(payload)
        elif "event" in payload:
            events.append(payload)
            if on_event is not None:
                on_event(payload)

    argv = [sys.executable, "-P", "-m", "bootstrap", "--relay", *(["-v"] if log.isEnabledFor(logging.DEBUG) else [])]
    try:
        runner.run([*argv, *args], env=_environment(settings), on_line=on_line, on_start=on_start)
    except CommandError as exc:
        if failure:
            last = failure[-1]
            raise rebuilt(str(last.get("kind")), str(last["error"]), last.get("stage"), last.get("details")) from None
        # A crash (a bug, the machine failing): its traceback to the log, its last line in the error.
        stray = "\n".join(line for line in exc.stderr.splitlines() if not line.startswith(RELAY_MARK)).strip()
        if stray:
            log.error("python -m bootstrap %s failed unexpectedly:\n%s", args[0], redact(stray))
        said = redact(last_line(stray))
        raise BootstrapError(
            f"python -m bootstrap {args[0]} failed unexpectedly ({exc.ending})" + (f": {said}" if said else "")
        ) from None
    return events


def _environment(settings: Settings | None) -> dict[str, str]:
    """The settings as variables, and a ``PYTHONPATH`` that finds bootstrap where this host found it.

    The host's ``PYTHONPATH`` (Azure Functions names its ``.python_packages`` there), less
    anything inside the packages folder, and the folder bootstrap was imported from when that
    is none of the interpreter's own (a host that put it on ``sys.path`` itself).
    """
    env = settings.as_environment() if settings is not None else {}
    packages_dir = str(settings.packages_dir) if settings is not None else paths.packages_dir()

    def outside_the_packages(entries: list[str]) -> list[str]:  # never a generation
        return [entry for entry in entries if entry and not resolves_inside(entry, packages_dir)]

    found = outside_the_packages(os.environ.get("PYTHONPATH", "").split(os.pathsep))
    home = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if home not in found and home not in site.getsitepackages():
        found += outside_the_packages([home])
    env["PYTHONPATH"] = os.pathsep.join(found)
    # The packages folder's own root stays (a host's old `sys.path.insert`): `check` names it; `inputs.host`
    # reads nothing from it.
    root = os.path.abspath(packages_dir)
    kept = [entry for entry in sys.path if entry and os.path.abspath(entry) == root]
    env[paths.HOST_PATH_VARIABLE] = os.pathsep.join([*outside_the_packages(sys.path), *kept])
    return env
