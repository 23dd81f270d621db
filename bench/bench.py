"""Benchmark bootstrap against plain Python and plain pip, as ratios measured side by side in one run.

Machines are noisy, so nothing here asserts seconds: each pair of commands runs
interleaved (A B, B A, ...) and the table reports medians and their ratio.

1. No-op start-up: ``import bootstrap; bootstrap.startup()`` on an already-synced
   folder (the fast path) against a bare ``import json, hashlib``; once with
   bootstrap byte-compiled, once from a copy of its sources with no .pyc.
2. Cold sync (empty packages folder, empty caches), without and with a committed
   lock, against ``pip install --target`` and against ``pip-compile`` +
   ``pip install --no-deps --target``, from a local wheelhouse and from the public index.

Every child runs with pip's ambient configuration removed (no PIP_*, BOOTSTRAP_*
or PYTHONPATH; PIP_CONFIG_FILE is an empty file), plus the source's settings.
Usage: ``.venv/bin/python bench/bench.py [--runs N] [--quick]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
PACKAGES = ("colorama", "tabulate", "python-dateutil", "pyyaml")
ADDED = "six"  # the one package the incremental measurement adds to the set
PUBLIC_INDEX = "https://pypi.org/simple"
STARTUP_GOAL, SYNC_GOAL = 1.25, 1.2
HEAVY = ("pydantic", "piptools", "watchdog", "filelock", "packaging")
# INFO lines bootstrap logs at each phase of a sync (substring, phase that starts there).
PHASES = (
    ("resolving ", "pip-compile"),
    ("installing ", "pip install"),
    ("verifying the new generation", "verify set + RECORD"),
    ("import-checking", "import check"),
    ("published generation", "exit"),
)
FIRST_PHASE = "python + imports + settings"

Row = tuple[str, float, float, float | None]  # measurement, bootstrap s, baseline s, goal ratio


def clean_env(work: Path, **extra: str) -> dict[str, str]:
    """os.environ without PIP_*, BOOTSTRAP_* and PYTHONPATH; an empty pip config; then ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "BOOTSTRAP_")) and k != "PYTHONPATH"}
    env["PIP_CONFIG_FILE"] = str(work / "empty-pip.conf")
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.update(extra)
    return env


def run(argv: Sequence[str], env: dict[str, str], cwd: Path, timeout: float = 600) -> float:
    """Seconds ``argv`` took; raise with its stderr if it failed."""
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr.decode(errors='replace')}")
    return elapsed


def traced_sync(env: dict[str, str], cwd: Path, phases: dict[str, list[float]]) -> float:
    """Run ``python -m bootstrap sync``; time it and, from its INFO lines' arrival, each of its phases."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        [PY, "-m", "bootstrap", "sync"], env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    marks: list[tuple[str, float]] = [(FIRST_PHASE, start)]
    lines = []
    for line in proc.stderr:
        lines.append(line)
        for needle, phase in PHASES:
            if line.startswith("bootstrap: " + needle) and phase not in dict(marks):
                marks.append((phase, time.perf_counter()))
    end = time.perf_counter()
    if proc.wait() != 0:
        raise RuntimeError("bootstrap sync failed:\n" + "".join(lines))
    for (phase, t0), (_, t1) in zip(marks, [*marks[1:], ("", end)], strict=True):
        phases.setdefault(phase, []).append(t1 - t0)
    return end - start


def interleave(
    commands: dict[str, Callable[[], float]], runs: int, between: Callable[[], None] | None = None
) -> dict[str, list[float]]:
    """Run each command ``runs`` times, rotating their order every round; the times per command."""
    names = list(commands)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(runs):
        if between is not None:
            between()
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(commands[name]())
    return times


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f}s (min {min(values):.3f}, max {max(values):.3f}, n={len(values)})"


def pyc_state() -> str:
    modules = sorted((ROOT / "bootstrap").glob("*.py"))
    cached = sum(Path(importlib.util.cache_from_source(str(m))).is_file() for m in modules)
    return f"{cached}/{len(modules)} bootstrap modules have a .pyc"


def bench_startup(work: Path, wheelhouse: Path, runs: int) -> list[Row]:
    print("\n== 1. no-op start-up (fast path) ==")
    print(f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '(unset)')} in the environment")
    print(f"before warm-up: {pyc_state()}")
    subprocess.run([PY, "-m", "compileall", "-q", str(ROOT / "bootstrap")], check=True)
    print(f"after `python -m compileall -q bootstrap`: {pyc_state()}")
    repo, packages = work / "startup-repo", work / "startup-packages"
    repo.mkdir()
    (repo / "requirements.txt").write_text("\n".join(PACKAGES) + "\n")
    env = clean_env(work, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheelhouse))
    env.update(BOOTSTRAP_REQUIREMENTS_FILE=str(repo / "requirements.txt"), BOOTSTRAP_PACKAGES_DIR=str(packages))
    run([PY, "-m", "bootstrap", "sync"], env, work)
    # The same sources copied where no .pyc can be: what a host gets from a source checkout.
    source = work / "source-copy"
    shutil.copytree(ROOT / "bootstrap", source / "bootstrap", ignore=shutil.ignore_patterns("__pycache__"))
    env_no_pyc = {**env, "PYTHONPATH": str(source), "PYTHONDONTWRITEBYTECODE": "1"}
    probe = (
        "import bootstrap, sys; m = bootstrap.startup(); print(m is not None and m['status'], "
        f"sorted(x for x in sys.modules if x.split('.')[0] in {HEAVY!r}), bootstrap.__file__)"
    )
    for label, probe_env in (("with .pyc", env), ("source copy", env_no_pyc)):
        out = subprocess.run([PY, "-c", probe], env=probe_env, cwd=work, capture_output=True, text=True, check=True)
        print(f"fast path check, {label} (status, heavy modules imported, file): {out.stdout.strip()}")
    print("  (want: ok [] ...; the heavy modules are " + ", ".join(HEAVY) + ")")
    startup = [PY, "-c", "import bootstrap; bootstrap.startup()"]
    bare = [PY, "-c", "import json, hashlib"]
    commands = {
        "startup": lambda: run(startup, env, work),
        "startup, no .pyc": lambda: run(startup, env_no_pyc, work),
        "bare": lambda: run(bare, env, work),
    }
    interleave(commands, 3)  # warm-up: page cache
    times = interleave(commands, runs)
    for name, values in times.items():
        print(f"{name + ':':<19} {spread(values)}")
    bare_median = statistics.median(times["bare"])
    return [
        (
            "no-op startup() vs bare python (.pyc present)",
            statistics.median(times["startup"]),
            bare_median,
            STARTUP_GOAL,
        ),
        (
            "no-op startup() vs bare python (no .pyc for bootstrap)",
            statistics.median(times["startup, no .pyc"]),
            bare_median,
            STARTUP_GOAL,
        ),
    ]


def make_wheelhouse(work: Path) -> tuple[Path, bool]:
    """Download the set once; return the folder and whether the public index was reachable."""
    wheelhouse = work / "wheelhouse"
    argv = [PY, "-m", "pip", "download", "-q", "-d", str(wheelhouse), *PACKAGES, ADDED]
    try:
        run(argv, clean_env(work, PIP_INDEX_URL=PUBLIC_INDEX, XDG_CACHE_HOME=str(work / "dl-cache")), work, 120)
        return wheelhouse, True
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"the public index is unreachable ({str(exc).splitlines()[-1][:200]})")
        print("building the wheelhouse with this machine's own pip configuration instead")
        run(argv, dict(os.environ), work, 300)
        return wheelhouse, False


def bench_sync(work: Path, source: str, pip_env: dict[str, str], runs: int) -> list[Row]:
    print(f"\n== 2. cold sync from the {source} ==")
    repo = work / f"repo-{source.replace(' ', '-')}"
    repo.mkdir()
    requirements = repo / "requirements.txt"
    requirements.write_text("\n".join(PACKAGES) + "\n")
    locked = work / f"locked-{source.replace(' ', '-')}"
    locked.mkdir()
    (locked / "requirements.txt").write_text(requirements.read_text())
    counter = iter(range(10**6))
    phases: dict[str, list[float]] = {}
    compile_times: list[float] = []

    def fresh() -> tuple[Path, dict[str, str]]:
        folder = work / f"run-{next(counter)}"
        folder.mkdir()
        return folder, clean_env(work, **pip_env, XDG_CACHE_HOME=str(folder / "cache"))

    def bootstrap_sync(reqs: Path, trace: bool) -> float:
        folder, env = fresh()
        env.update(BOOTSTRAP_REQUIREMENTS_FILE=str(reqs), BOOTSTRAP_PACKAGES_DIR=str(folder / "packages"))
        if trace:
            return traced_sync(env, folder, phases)
        return run([PY, "-m", "bootstrap", "sync"], env, folder)

    def pip_target() -> float:
        folder, env = fresh()
        return run([PY, "-m", "pip", "install", "--target", str(folder / "t"), "-r", str(requirements)], env, folder)

    def compile_install() -> float:
        folder, env = fresh()
        lock = folder / "lock.txt"
        compile_argv = [PY, "-m", "piptools", "compile", "-q", "--no-header", "--strip-extras", "--allow-unsafe"]
        seconds = run([*compile_argv, "-o", str(lock), str(requirements)], env, folder)
        compile_times.append(seconds)
        install = [PY, "-m", "pip", "install", "--no-deps", "--target", str(folder / "t"), "-r", str(lock)]
        return seconds + run(install, env, folder)

    # The committed-lock variant: `bootstrap lock` once, then its syncs skip pip-compile.
    env = clean_env(work, **pip_env, XDG_CACHE_HOME=str(work / "lock-cache"))
    env.update(BOOTSTRAP_REQUIREMENTS_FILE=str(locked / "requirements.txt"), BOOTSTRAP_PACKAGES_DIR=str(work / "lp"))
    run([PY, "-m", "bootstrap", "lock"], env, work)

    def clean_up() -> None:  # between rounds, so deleting files never overlaps a measured command
        for done in work.glob("run-*"):
            shutil.rmtree(done, ignore_errors=True)
        os.sync()

    pip_target()  # warm-up: page cache, pip's imports
    times = interleave(
        {
            "bootstrap": lambda: bootstrap_sync(requirements, trace=True),
            "bootstrap+lock": lambda: bootstrap_sync(locked / "requirements.txt", trace=False),
            "pip": pip_target,
            "compile+install": compile_install,
        },
        runs,
        clean_up,
    )
    print(f"bootstrap sync (no lock):        {spread(times['bootstrap'])}")
    print(f"bootstrap sync (committed lock): {spread(times['bootstrap+lock'])}")
    print(f"pip install --target:            {spread(times['pip'])}")
    print(f"pip-compile + pip install:       {spread(times['compile+install'])}")
    print(f"  of which pip-compile:          {spread(compile_times)}")
    print("phases of bootstrap sync (no lock), medians, from the arrival of its log lines:")
    for phase, values in phases.items():
        print(f"  {phase:<30} {statistics.median(values):.3f}s")
    bootstrap, pip, both = (statistics.median(times[k]) for k in ("bootstrap", "pip", "compile+install"))
    return [
        (f"cold sync vs pip install --target ({source})", bootstrap, pip, SYNC_GOAL),
        (f"cold sync vs pip-compile + install ({source})", bootstrap, both, None),
        (
            f"cold sync, committed lock, vs pip install --target ({source})",
            statistics.median(times["bootstrap+lock"]),
            pip,
            SYNC_GOAL,
        ),
    ]


def bench_incremental(work: Path, wheelhouse: Path, runs: int) -> list[Row]:
    """Add one package to a synced set, against building the grown set from nothing (both from the wheelhouse)."""
    print("\n== 3. incremental: add one package to the set ==")
    counter = iter(range(10**6))

    def prepared(grown: bool) -> tuple[Path, dict[str, str]]:
        folder = work / f"inc-{next(counter)}"
        (folder / "repo").mkdir(parents=True)
        env = clean_env(work, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheelhouse), XDG_CACHE_HOME=str(folder / "cache"))
        env.update(
            BOOTSTRAP_REQUIREMENTS_FILE=str(folder / "repo" / "requirements.txt"),
            BOOTSTRAP_PACKAGES_DIR=str(folder / "packages"),
        )
        (folder / "repo" / "requirements.txt").write_text("\n".join(PACKAGES) + "\n")
        if grown:
            run([PY, "-m", "bootstrap", "sync"], env, folder)  # not measured: the set before the change
        (folder / "repo" / "requirements.txt").write_text("\n".join((*PACKAGES, ADDED)) + "\n")
        return folder, env

    def incremental() -> float:
        folder, env = prepared(grown=True)
        return run([PY, "-m", "bootstrap", "sync"], env, folder)

    def rebuild() -> float:
        folder, env = prepared(grown=False)
        return run([PY, "-m", "bootstrap", "sync"], env, folder)

    def clean_up() -> None:
        for done in work.glob("inc-*"):
            shutil.rmtree(done, ignore_errors=True)
        os.sync()

    times = interleave({"incremental": incremental, "rebuild": rebuild}, runs, clean_up)
    print(f"add {ADDED} to a synced set:     {spread(times['incremental'])}")
    print(f"build the grown set from nothing: {spread(times['rebuild'])}")
    ours, base = statistics.median(times["incremental"]), statistics.median(times["rebuild"])
    return [(f"incremental add-one vs full rebuild (wheelhouse, set of {len(PACKAGES) + 1})", ours, base, None)]


def table(rows: list[Row]) -> str:
    lines = [
        "| measurement | bootstrap median s | baseline median s | ratio | goal |",
        "|---|---:|---:|---:|---|",
    ]
    for name, ours, base, goal in rows:
        ratio = ours / base
        verdict = "-" if goal is None else f"<= {goal:.2f}x ({'met' if ratio <= goal else 'missed'})"
        lines.append(f"| {name} | {ours:.3f} | {base:.3f} | {ratio:.2f}x | {verdict} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=None, help="runs per sync command (default 9; start-up: 6x)")
    parser.add_argument("--quick", action="store_true", help="3 runs (start-up 18), skip the public index")
    args = parser.parse_args()
    runs = args.runs or (3 if args.quick else 9)
    print(f"python {platform.python_version()} ({PY}), {platform.platform()}, nproc {os.cpu_count()}")
    print(f"runs: {runs} per sync command, {6 * runs} per start-up command; medians; order rotated every round")
    print(
        "children: no PIP_*/BOOTSTRAP_*/PYTHONPATH, PIP_CONFIG_FILE=<empty file> (pip still reads the global "
        "pip.conf), a fresh XDG_CACHE_HOME and packages folder per sync run"
    )
    load_before = load_average()
    busy = os.getloadavg()[0] > 0.5 * (os.cpu_count() or 1)
    print(f"load average: {load_before}" + (" -- the machine is busy: expect noise" if busy else ""))
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bootstrap-bench-") as folder:
        work = Path(folder)
        (work / "empty-pip.conf").write_text("")
        wheelhouse, online = make_wheelhouse(work)
        print(f"wheelhouse: {', '.join(sorted(p.name for p in wheelhouse.iterdir()))}")
        rows += bench_startup(work, wheelhouse, 6 * runs)
        rows += bench_sync(work, "wheelhouse", {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse)}, runs)
        rows += bench_incremental(work, wheelhouse, runs)
        if args.quick:
            print("\n(public index skipped: --quick)")
        elif not online:
            print("\n(public index skipped: unreachable)")
        else:
            try:
                rows += bench_sync(work, "public index", {"PIP_INDEX_URL": PUBLIC_INDEX}, runs)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                print(f"(public index rows skipped: a command failed: {str(exc).strip().splitlines()[-1][:300]})")
    print("\n" + table(rows))
    busy = busy or os.getloadavg()[0] > 1 + 0.5 * (os.cpu_count() or 1)  # the bench itself adds ~1
    print(f"\nload average at the start {load_before}, at the end {load_average()}", end="")
    print(" (other work on the machine skews the ratios: rerun when it is idle)" if busy else "")
    return 0


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
