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

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from bootstrap import _subprocess
from bootstrap.errors import CommandError

log = logging.getLogger("bootstrap")

SKIPPED_FOLDERS = frozenset({"tests", "test", "__pycache__"})
_CHUNK = 16  # files per claim: small enough to balance, large enough that claiming costs nothing
_FAILED_MARK = "BOOTSTRAP-NOT-COMPILED:"
# argv: the list (NUL-separated paths), the claims folder, the chunk size.
_WORKER = f"""
import os, py_compile, sys
paths = open(sys.argv[1], encoding="utf-8").read().split("\\0")
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
            sys.stdout.write({_FAILED_MARK!r} + path + "\\0" + why + "\\n")
"""


def modules_to_compile(folder: Path) -> list[Path]:
    """The ``.py`` files under ``folder`` that get bytecode, largest first (the best order to share out)."""
    found: list[tuple[int, str]] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [name for name in dirs if name not in SKIPPED_FOLDERS]
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(root, name)
                try:
                    found.append((os.stat(path).st_size, path))
                except OSError:  # a dangling link: nothing to compile
                    continue
    found.sort(reverse=True)
    return [Path(path) for _, path in found]


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
    workers = max(1, min(len(os.sched_getaffinity(0)), len(modules) // _CHUNK + 1))
    log.info("compiling bytecode of %d modules (on %d cores)", len(modules), workers)
    scratch = Path(tempfile.mkdtemp(prefix=".compile-", dir=folder.parent))
    try:
        listing = scratch / "modules"
        listing.write_text("\0".join(map(str, modules)), encoding="utf-8")
        claims = scratch / "claims"
        claims.mkdir()
        argv = [sys.executable, "-c", _WORKER, str(listing), str(claims), str(_CHUNK)]
        failures = _run_workers(argv, workers, timeout=timeout, on_start=on_start)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if failures:
        path, why = failures[0]
        more = f" and {len(failures) - 1} more" if len(failures) > 1 else ""
        log.warning(
            "%s did not compile (%s)%s; left to compile when imported", Path(path).relative_to(folder), why, more
        )


def _run_workers(
    argv: list[str], count: int, *, timeout: float, on_start: Callable[[subprocess.Popen[str]], None] | None
) -> list[tuple[str, str]]:
    """Run ``count`` copies of ``argv`` at once; the files they report as not compiled."""
    failures: list[tuple[str, str]] = []
    errors: list[CommandError] = []

    def work() -> None:
        try:
            completed = _subprocess.run(argv, timeout=timeout, on_start=on_start)
        except CommandError as exc:
            errors.append(exc)
            return
        for line in completed.stdout.splitlines():
            if line.startswith(_FAILED_MARK):
                path, _, why = line[len(_FAILED_MARK) :].partition("\0")
                failures.append((path, why))

    threads = [threading.Thread(target=work, name=f"bootstrap-compile-{n}", daemon=True) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:  # a worker killed, or timed out: whatever it had not compiled compiles when imported
        exc = errors[0]
        how = "timed out" if exc.timed_out else f"ended with exit code {exc.returncode}"
        log.warning("compiling bytecode %s; modules without bytecode compile when imported", how)
    return sorted(failures)
