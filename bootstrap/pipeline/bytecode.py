"""Write a new generation's bytecode once, at build time, on every core.

pip and uv compile with a pool of interpreters fed one file at a time; so does
this, without a feeder: every worker walks the same list (largest files first)
in chunks and claims a chunk by creating a file named after it (``O_EXCL``: one
worker wins), so a worker slowed by a noisy neighbour just claims fewer. Measured
on set M (3,357 modules, 2 cores): about 25% less CPU than ``compileall -j 0``.

Folders named ``tests`` or ``test`` inside the site folder are left out: a
package's own test suite (35% of set M's source, pandas' mostly) is never
imported by a workflow; if one is, it compiles when imported, as a module that
does not compile does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from bootstrap.errors import CommandError
from bootstrap.store.fs import counted
from bootstrap.tools import runner

log = logging.getLogger("bootstrap")

SKIPPED_FOLDERS = frozenset({"tests", "test", "__pycache__"})
_CHUNK = 16  # files per claim: small enough to balance, large enough that claiming costs nothing
# Up to this much is compiled in the sync's own process, at about 4 MB of source a second, against ~0.1 s of CPU to
# start the workers (set S, 68 modules and 0.7 MB: 0.16 s here, 0.31 s and more CPU on two workers). The bytes
# bound it: one generated module can be huge, and no timeout applies here.
_IN_PROCESS_MAX = 256
_IN_PROCESS_MAX_BYTES = 1 << 20
_WARNINGS_LOCK = threading.Lock()
_FAILED_MARK = "BOOTSTRAP-NOT-COMPILED:"
# argv: the list (NUL-separated paths), the claims folder, the chunk size.
_WORKER = f"""
import os, py_compile, sys
paths = open(sys.argv[1], encoding="utf-8", errors="surrogateescape").read().split("\\0")
out = open(sys.stdout.fileno(), "w", encoding="utf-8", errors="backslashreplace", closefd=False)
claims, chunk = sys.argv[2], int(sys.argv[3])
for start in range(0, len(paths), chunk):
    try:
        os.close(os.open(os.path.join(claims, str(start)), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        continue
    for path in paths[start : start + chunk]:
        try:
            py_compile.compile(path, doraise=True)
        except Exception as exc:
            why = " ".join(str(exc).split())[:200]
            out.write({_FAILED_MARK!r} + path + "\\0" + why + "\\n")
out.flush()
"""


def modules_to_compile(folder: Path) -> list[Path]:
    """The ``.py`` files under ``folder`` that get bytecode, largest first (the best order to share out).

    A module whose ``.pyc`` is already there is left alone: that file came in the wheel (numpy ships
    some, listed in its RECORD), and a file a wheel ships is never rewritten.
    """
    found: list[tuple[int, str]] = []
    suffix = f".{sys.implementation.cache_tag}.pyc"
    for root, dirs, files in os.walk(folder):
        shipped = _listing(os.path.join(root, "__pycache__")) if "__pycache__" in dirs else set()
        dirs[:] = [name for name in dirs if name not in SKIPPED_FOLDERS]
        for name in files:
            if name.endswith(".py") and f"{name[:-3]}{suffix}" not in shipped:
                path = os.path.join(root, name)
                try:
                    found.append((os.stat(path).st_size, path))
                except OSError:  # a dangling link: nothing to compile
                    continue
    found.sort(reverse=True)
    return [Path(path) for _, path in found]


def _listing(folder: str) -> set[str]:
    try:
        return set(os.listdir(folder))
    except OSError:
        return set()


def compile_tree(
    folder: Path, *, timeout: float, on_start: Callable[[subprocess.Popen[str]], None] | None = None
) -> None:
    """Write the ``.pyc`` of every module under ``folder`` (test folders aside), on every core.

    A file that does not compile (a package's Python 2 leftovers, say) is left to
    import time, as pip leaves it: a warning, never a failed sync.
    """
    modules = modules_to_compile(folder)
    if not modules:
        return
    if len(modules) <= _IN_PROCESS_MAX and _total_size(modules) <= _IN_PROCESS_MAX_BYTES:
        _warn_failures(folder, _compile_here(modules))
        return
    workers = max(1, min(runner.cores(), len(modules) // _CHUNK + 1))
    log.info("compiling bytecode of %s (on %s)", counted(len(modules), "module"), counted(workers, "core"))
    scratch = Path(tempfile.mkdtemp(prefix=".compile-", dir=folder.parent))
    try:
        listing = scratch / "modules"
        listing.write_text("\0".join(map(str, modules)), encoding="utf-8", errors="surrogateescape")
        claims = scratch / "claims"
        claims.mkdir()
        argv = [sys.executable, "-c", _WORKER, str(listing), str(claims), str(_CHUNK)]
        # Never stopped for one worker's sake: the others go on claiming what it left.
        outcomes = runner.run_all([argv] * workers, timeout=timeout, on_start=on_start)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if outcomes.failures:  # killed, timed out, or could not start: what it left compiles when imported
        log.warning(
            "compiling bytecode stopped early (%s); modules without bytecode compile when imported",
            _why(outcomes.failures[0]),
        )
    failures = sorted(
        line[len(_FAILED_MARK) :].partition("\0")
        for completed in outcomes.completed
        for line in completed.stdout.split("\n")
        if line.startswith(_FAILED_MARK)
    )
    _warn_failures(folder, failures)


def _compile_here(modules: list[Path]) -> list[tuple[str, str, str]]:
    """A few modules (an organisation's one small package, a runtime addition), compiled in this process: what
    the workers do, without their interpreter starts (about 0.1 s of a 1 s add). Compiling runs no code."""
    import py_compile  # slow path: building generations only
    import warnings

    log.info("compiling bytecode of %s (in this process)", counted(len(modules), "module"))
    failures = []
    suffix = f".{sys.implementation.cache_tag}.pyc"
    # A worker's warnings ("invalid escape sequence", a SyntaxWarning on 3.12) went nowhere; here they would
    # reach this process's stderr, or fail the compile under `-W error`. The filters are process-wide: one
    # compiling thread at a time changes them (organisations sync in threads).
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in modules:
            # The plain bytecode, as a worker (a fresh interpreter) writes it, whatever this process runs with: a
            # host under `python -O` would write only `.opt-1.pyc` (and `-X pycache_prefix` elsewhere).
            cfile = os.path.join(path.parent, "__pycache__", path.stem + suffix)
            try:
                py_compile.compile(str(path), cfile=cfile, doraise=True, optimize=0)
            except Exception as exc:  # a syntax error, an unreadable file: left to import time, as workers do
                failures.append((str(path), "\0", " ".join(str(exc).split())[:200]))
    return sorted(failures)


def _total_size(modules: list[Path]) -> int:
    total = 0
    for path in modules:
        with contextlib.suppress(OSError):
            total += path.stat().st_size
    return total


def _warn_failures(folder: Path, failures: list[tuple[str, str, str]]) -> None:
    if failures:
        path, _, why = failures[0]
        more = f" and {len(failures) - 1} more" if len(failures) > 1 else ""
        shown = os.path.relpath(path, folder) if path.startswith(str(folder)) else path
        log.warning("%s did not compile (%s)%s; left to compile when imported", shown, why, more)


def _why(exc: BaseException) -> str:
    if isinstance(exc, CommandError):
        return "timed out" if exc.timed_out else exc.ending
    return str(exc)
