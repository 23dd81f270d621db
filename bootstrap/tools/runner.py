"""The only place that starts a process.

An argv list, never a shell; output captured; a non-zero exit raised as a
``CommandError`` carrying command, exit code and output. The child's
environment is cleaned on purpose: settings that would send pip somewhere
else (``PIP_TARGET``, ``PIP_PREFIX``, ``PIP_USER``, ``PYTHONPATH``) are
dropped, while the user's index settings (``PIP_INDEX_URL``, pip.conf, ...)
are kept: that is how operators point pip at their mirror.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO

from bootstrap.errors import CommandError, redact
from bootstrap.store.safety import child_umask

log = logging.getLogger("bootstrap")

_DROPPED = ("PIP_TARGET", "PIP_PREFIX", "PIP_USER", "PIP_ROOT", "PIP_REQUIRE_VIRTUALENV", "PYTHONPATH", "PYTHONHOME")


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _DROPPED}
    tools = tool_path() if extra is None or "PYTHONPATH" not in extra else ""  # (a bootstrap child: its own)
    if tools:  # bootstrap's own tools came through PYTHONPATH (Azure Functions' .python_packages): keep those
        env["PYTHONPATH"] = tools
    env["PIP_NO_INPUT"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    if extra:
        env.update(extra)
    return env


# The tools children run as ``python -m MODULE``.
_TOOL_MODULES = ("piptools", "pip", "bootstrap")  # bootstrap: its pip-compile shim (tools.piptools_compile)


@functools.cache
def tool_path() -> str:
    """The ``PYTHONPATH`` entries bootstrap's tools are found in, joined; empty when none.

    A platform may install bootstrap and its tools into a folder it names in ``PYTHONPATH``
    (Azure Functions: ``.python_packages/lib/site-packages``). Children must find the tools there
    too, yet nothing else of the host's ``PYTHONPATH`` (a generation, a folder a user can write)
    reaches them: only the folders that ``pip``, ``piptools`` and ``bootstrap`` are imported from.
    """
    given = [os.path.abspath(entry) for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    holding = set()
    for module in _TOOL_MODULES:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.origin:
            holding.add(os.path.realpath(os.path.dirname(os.path.dirname(spec.origin))))
    return os.pathsep.join(entry for entry in given if os.path.realpath(entry) in holding)


@dataclass(frozen=True)
class Completed:
    argv: list[str]
    stdout: str
    stderr: str


def run(
    argv: Sequence[str],
    *,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    on_line: Callable[[str], None] | None = None,
    on_start: Callable[[subprocess.Popen[str]], None] | None = None,
) -> Completed:
    """Run ``argv`` to completion; raise ``CommandError`` on a non-zero exit or time-out.

    ``on_line`` sees each line of output (stdout and stderr) as it arrives: progress for long work.
    ``on_start`` gets the process, so another thread can ``kill`` it. The child
    leads its own process group, so a time-out also ends what it started
    (pip's build backends, say).
    """
    argv = [str(part) for part in argv]
    shown = " ".join("<script>" if "\n" in part else part for part in argv)
    log.debug("running %s", redact(shown))  # an allowed --extra-index-url may carry a password
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(env),
        cwd=cwd,
        text=True,
        encoding="utf-8",
        errors="replace",
        process_group=0,
        umask=child_umask(),  # whatever the host's umask, pip writes nothing world-writable
    )
    if on_start is not None:
        on_start(proc)
    stdout, stderr, returncode, timed_out = _collect(proc, timeout, on_line)
    if timed_out or returncode != 0:
        log.debug("%s failed (%s); stderr:\n%s", redact(" ".join(argv[:4])), returncode, redact(stderr))
        raise CommandError(argv, returncode, stdout, stderr, timed_out=timed_out)
    return Completed(argv, stdout, stderr)


def _collect(
    proc: subprocess.Popen[str], timeout: float | None, on_line: Callable[[str], None] | None
) -> tuple[str, str, int, bool]:
    """Read both pipes to the end (stderr in a thread of its own), killing the process at ``timeout``:
    ``(stdout, stderr, exit code, timed out)``. An interruption kills the process before it goes on."""
    assert proc.stdout is not None and proc.stderr is not None
    stdout_lines: list[str] = []
    stderr_lines: list[str] = []
    reader = threading.Thread(target=_read_lines, args=(proc.stderr, stderr_lines, on_line), daemon=True)
    reader.start()
    timed_out = threading.Event()

    def _kill() -> None:
        timed_out.set()
        kill(proc)

    timer = threading.Timer(timeout, _kill) if timeout else None
    if timer:
        timer.daemon = True
        timer.start()
    try:
        _read_lines(proc.stdout, stdout_lines, on_line)
        returncode = proc.wait()
    except BaseException:
        kill(proc)
        proc.wait()
        raise
    finally:
        if timer:
            timer.cancel()
        reader.join()
    return "".join(stdout_lines), "".join(stderr_lines), returncode, timed_out.is_set()


def _read_lines(stream: IO[str], into: list[str], on_line: Callable[[str], None] | None) -> None:
    for line in stream:
        into.append(line)
        if on_line is not None:
            on_line(line.rstrip("\n"))


def kill(proc: subprocess.Popen[str]) -> None:
    """End a process started by ``run`` and everything in its process group (unless it was reaped already)."""
    if proc.returncode is not None:  # its process group id may belong to someone else by now
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(proc.pid, signal.SIGKILL)


def cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


@dataclass(frozen=True)
class Outcomes:
    completed: list[Completed]  # of the commands that succeeded
    failures: list[BaseException]  # in the order they happened: with ``stop_on_failure``, the first is the cause


def run_all(
    commands: Sequence[Sequence[str]],
    *,
    timeout: float | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stop_on_failure: bool = False,
    on_start: Callable[[subprocess.Popen[str]], None] | None = None,
) -> Outcomes:
    """Run ``commands`` at once, each as ``run`` would; never raise for one of them, report.

    ``stop_on_failure``: the first command that fails (or cannot start) ends the others.
    An interruption of the caller (Ctrl-C) ends them all before it goes on.
    """
    lock = threading.Lock()
    started: list[subprocess.Popen[str]] = []
    completed: list[Completed] = []
    failures: list[BaseException] = []
    stopping = threading.Event()

    def stop_all() -> None:  # with the lock held
        stopping.set()
        for proc in started:
            kill(proc)

    def register(proc: subprocess.Popen[str]) -> None:
        with lock:
            started.append(proc)
            if stopping.is_set():  # started while the others were being stopped
                kill(proc)
        if on_start is not None:
            on_start(proc)

    def one(argv: Sequence[str]) -> None:
        try:
            result = run(argv, timeout=timeout, cwd=cwd, on_start=register)
        except BaseException as exc:  # a failure, or a process that could not start (OSError)
            with lock:
                failures.append(exc)  # before stopping the others: their failures come after it
                if stop_on_failure:
                    stop_all()
            return
        with lock:
            completed.append(result)

    threads = [threading.Thread(target=one, args=(argv,), daemon=True) for argv in commands]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    except BaseException:
        with lock:
            stop_all()
        for thread in threads:
            if thread.ident is not None:
                thread.join()
        raise
    return Outcomes(completed, failures)
