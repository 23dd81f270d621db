"""Benchmark bootstrap against plain Python, pip, pip-tools and uv, as ratios measured side by side in one run.

Machines are noisy, so nothing here asserts seconds: the commands compared in
one measurement run interleaved (A B C, B C A, ...) and the table reports
medians and their ratios. Rows (``--rows``), each on the sets (``--sets``) and
sources (``--sources``) asked for:

startup      ``import bootstrap; bootstrap.startup()`` on an already-synced folder
             (the fast path) against a bare ``import json, hashlib``; with and
             without .pyc for bootstrap (set S, wheelhouse only).
cold         empty caches, empty packages folder: ``bootstrap sync`` (and with a
             committed lock, and with the uv backend when bootstrap has one)
             against ``pip install --target``, ``pip-compile`` + ``pip install
             --no-deps --target``, and ``uv pip compile`` + ``uv pip install --target``
             (uv writes no .pyc unless ``--compile-bytecode``; pip and bootstrap do:
             both uv variants are measured).
warm         a new instance (empty packages folder) with warm caches: bootstrap's
             own cache folder (``<packages>/cache``) and XDG_CACHE_HOME kept; the
             same plain tools with their caches (XDG_CACHE_HOME, UV_CACHE_DIR) kept.
incremental  add one package to a synced set, against building the grown set
             into a new packages folder (same caches).
hashes       a lock with hashes of a 50-pin set (sigstore's install requirements and set M,
             names only), public index only, cold caches: ``bootstrap lock --hashes``
             (both backends) against ``pip-compile --generate-hashes`` and ``uv pip compile
             --generate-hashes`` (and pip-compile without hashes: the resolution alone).
import       ``import pandas`` from the generation (on PYTHONPATH, and through
             ``bootstrap.activate()``) against a virtual environment holding the
             same pandas from the same wheelhouse, with and without .pyc (set M).
execute      ``bootstrap.execute`` of a workflow importing tabulate, dateutil and colorama for an
             org (the workspace: colorama, python-dateutil; the org adds tabulate), set S,
             wheelhouse: in-process against calling its run() directly (goal: under 1 ms more);
             the first execution in a new worker process against a bare ``python -I -c "import
             tabulate, dateutil, colorama"`` (goal: under 1.5x); later worker executions against
             in-process ones (goal: under 2 ms more). The org goes to a worker because the bench
             first claims tabulate at another version, as an org with a conflicting pin would.
share        a real SMB share (samba on 127.0.0.1, two smbnetfs mounts in two mount
             namespaces: tests/smbshare.py), when this machine can set it up: a cold
             sync of set S into a packages folder on the share (instance A) against
             the same into a local folder; importing the set through the OTHER mount
             (instance B, ``bootstrap.activate()``), and a no-op ``startup()`` from B,
             each against the same on the local folder (goal: startup within 1.5x).
orgs         (#16) add an organisation of one package (``orgs/acme/requirements.txt``)
             on top of a synced 30-package workspace (ORGS_WORKSPACE): one ``sync``
             (only the organisation is built) against a cold sync of the workspace
             alone into an empty packages folder (goal: 0.2x), and the bytes its
             folder adds (hard links counted once across the packages folder) against
             the workspace's (goal: 5%); then 20 organisations of one package each,
             synced by one command (one run). Wheelhouse only.
remote       (#17) a new instance (empty packages and state folders, PIP_NO_INDEX=1 and no
             find-links) coming up from the remote cache (BOOTSTRAP_REMOTE_CACHE, Azurite on
             127.0.0.1: ``npm install -g azurite@3.33.0``) against (a) downloading and unpacking
             the archive alone (goal: within 1.5x), (b) ``bootstrap sync`` building the set from
             the wheelhouse into an empty folder (goal: 5x faster, 0.2x), (c) ``uv pip compile +
             install`` from a warm local cache. Wheelhouse only; set M is the issue's.

Sources: ``wheelhouse`` (the sets downloaded once into bench/.cache/wheelhouse,
then ``--no-index --find-links``) and ``public`` (the public index, given
explicitly as PIP_INDEX_URL / UV_DEFAULT_INDEX). Every child runs with pip's
ambient configuration removed: no PIP_*, UV_* or BOOTSTRAP_*, PYTHONPATH only the
snapshot of bootstrap/ taken at the start (others commit while the bench runs), and
PIP_CONFIG_FILE=/dev/null (an empty file is not enough: pip still reads
/etc/pip.conf, /etc/xdg/pip/pip.conf and ~/.config/pip/pip.conf then, which on
this machine add find-links, file:// indexes and constraints), UV_NO_CONFIG=1.

Usage: ``.venv/bin/python bench/bench.py [--sets S,M] [--rows cold,warm,...]
[--sources wheelhouse,public] [--public-rows cold|all] [--repeat N] [--quick]``. The table and the raw
times also go to bench/last-results.json.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
CACHE = BENCH / ".cache"  # gitignored (bench/.gitignore): the wheelhouse, kept between runs
RESULTS = BENCH / "last-results.json"
PY = sys.executable
UV = str(Path(PY).parent / "uv")
SETS = {
    "S": ("colorama", "tabulate", "python-dateutil", "pyyaml"),
    "M": (
        "httpx",
        "rich",
        "pandas",
        "pydantic",
        "sqlalchemy",
        "jinja2",
        "boto3",
        "openpyxl",
        "python-dateutil",
        "tabulate",
    ),
    # #18's large set (157 distributions, 192 MiB of wheels): only with --sets ...,L (it adds about 20 minutes).
    "L": (
        "jupyterlab",
        "dask[complete]",
        "boto3",
        "google-cloud-storage",
        "azure-storage-blob",
        "sqlalchemy",
        "fastapi",
        "celery",
        "matplotlib",
    ),
}
# The one package the incremental row adds: not `six`, which python-dateutil already pulls in
# (adding it changes no pin, and bootstrap then only rewrites the manifest).
ADDED = "attrs"
# The incremental row's addition per set: set L holds attrs already; tabulate is what pandas names only for an extra.
ADDED_TO = {"L": "tabulate"}
PUBLIC_INDEX = "https://pypi.org/simple"  # pip's default; the machine's pip.conf only adds file:// extras
BASELINES = (
    "pip install --target",
    "pip-compile + pip install",
    "uv pip compile + install",
    "uv pip compile + install --compile-bytecode",
)
ALL_ROWS = ("startup", "cold", "warm", "incremental", "hashes", "import", "share", "orgs", "execute", "remote")
# The share row's set S, by import name: what a host imports after startup().
S_IMPORTS = "colorama, tabulate, dateutil, yaml"
SHARE_GOAL = 1.5  # #15: a no-op startup() on the share within 1.5x the same on a local folder
# The hashes row: about 50 pins, most with wheels for many platforms (cryptography, pydantic-core, cffi).
HASH_SET = (
    *("annotated-types", "certifi", "cffi", "charset-normalizer", "cryptography", "dnspython", "email-validator"),
    *("id", "idna", "importlib-resources", "markdown-it-py", "mdurl", "platformdirs", "pyasn1", "pycparser"),
    *("pydantic", "pydantic-core", "pygments", "pyjwt", "pyopenssl", "requests", "rfc3161-client", "rfc8785"),
    *("rich", "securesystemslib", "sigstore", "sigstore-models", "sigstore-rekor-types", "tuf"),
    *("typing-extensions", "typing-inspection", "urllib3", *SETS["M"]),
)
# The orgs row's workspace: set M, whose closure is 30 distributions (bootstrap's manifest counts 30 packages:
# 23 installed in the generation, 7 the host provides: pydantic, markupsafe, typing-extensions, ...).
ORGS_WORKSPACE = SETS["M"]
# One small package per organisation, none in ORGS_WORKSPACE's closure nor the host's, none with dependencies
# (an organisation adds exactly one distribution). The first is the one-organisation case's.
ORG_PACKAGES = (
    *(ADDED, "colorama", "pyyaml", "toml", "tomli", "more-itertools", "decorator", "cachetools", "wcwidth"),
    *("itsdangerous", "blinker", "humanize", "pyparsing", "sortedcontainers", "xmltodict", "text-unidecode"),
    *("inflection", "tenacity", "backoff", "termcolor"),
)
ORG_TIME_GOAL, ORG_DISK_GOAL = 0.2, 0.05  # #16: an organisation of one package, against the workspace's build
STARTUP_GOAL, SYNC_GOAL = 1.25, 1.2
HEAVY = ("pydantic", "piptools", "watchdog", "filelock", "packaging")

Row = dict[str, Any]
# A copy of bootstrap/ taken when the bench starts, put first on every child's PYTHONPATH: others commit to
# bootstrap/ while the bench runs, and a sync started after such a commit would measure other code.
SNAPSHOT: Path | None = None
RESULTS_DATA: dict[str, Any] = {"rows": [], "raw": [], "notes": []}


def note(text: str) -> None:
    print(text)
    RESULTS_DATA["notes"].append(text)


# --------------------------------------------------------------------------- environment


def clean_env(**extra: str) -> dict[str, str]:
    """os.environ without PIP_*, UV_*, BOOTSTRAP_* and PYTHONPATH; no pip/uv config file; then ``extra``."""
    drop = ("PIP_", "UV_", "BOOTSTRAP_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop) and k != "PYTHONPATH"}
    env["PIP_CONFIG_FILE"] = os.devnull  # /dev/null: pip then reads no config file at all
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["UV_NO_CONFIG"] = "1"
    env["UV_PYTHON_DOWNLOADS"] = "never"
    if SNAPSHOT is not None:
        env["PYTHONPATH"] = str(SNAPSHOT)
    if os.environ.get("PIP_CERT"):  # the machine's CA bundle, for the public index
        env["PIP_CERT"] = os.environ["PIP_CERT"]
        env["SSL_CERT_FILE"] = os.environ["PIP_CERT"]
    env.update(extra)
    return env


class Source:
    def __init__(self, name: str, wheelhouse: Path) -> None:
        self.name = name
        if name == "wheelhouse":
            self.pip_env = {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheelhouse)}
            self.uv_args = ["--no-index", "--find-links", str(wheelhouse)]
        else:
            self.pip_env = {"PIP_INDEX_URL": PUBLIC_INDEX}
            self.uv_args = ["--default-index", PUBLIC_INDEX]

    def env(self, folder: Path, **extra: str) -> dict[str, str]:
        """A child environment whose caches all live under ``folder`` (cold when the folder is new)."""
        return clean_env(
            **self.pip_env, XDG_CACHE_HOME=str(folder / "xdg-cache"), UV_CACHE_DIR=str(folder / "uv-cache"), **extra
        )


def run(argv: Sequence[str], env: dict[str, str], cwd: Path, timeout: float = 1200) -> float:
    """Seconds ``argv`` took; raise with its stderr if it failed. Its CPU time and peak memory (``measured``)
    count towards the command under way (``interleave``)."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    stderr: list[bytes] = []
    reader = threading.Thread(target=lambda: stderr.append(proc.stderr.read() if proc.stderr else b""), daemon=True)
    reader.start()
    code = measured(proc, timeout)
    elapsed = time.perf_counter() - start
    reader.join()
    if code != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed ({code}):\n{b''.join(stderr).decode(errors='replace')}")
    return elapsed


# What the command under way (``interleave``) used so far: CPU seconds of its whole process tree (wait4 counts the
# child and every descendant it waited for) and the peak of the tree's memory: its summed resident memory, sampled
# every 20 ms (RSS: pages two processes share count twice, on both sides alike), or the largest high-water mark
# (VmHWM) of one of its processes, read at those samples, if larger. Never wait4's ru_maxrss: Linux carries the
# forking process's peak across exec into it, so every child of this bench (53 MiB after the start-up rows) would
# read at least that (`python -c pass` started from a 300 MiB parent: 311 MiB).
USAGE: dict[str, float] = {"cpu": 0.0, "peak_mib": 0.0}
_PAGE_MIB = os.sysconf("SC_PAGE_SIZE") / (1 << 20)


def measured(proc: subprocess.Popen[Any], timeout: float) -> int:
    """Wait for ``proc`` (started in a session of its own), adding its tree's CPU and peak memory to USAGE."""
    done = threading.Event()
    peak = [0.0]

    def sample() -> None:
        while True:
            peak[0] = max(peak[0], session_memory_mib(proc.pid))
            if done.wait(0.02):
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
    timer.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        timer.cancel()
        done.set()
        sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    USAGE["cpu"] += usage.ru_utime + usage.ru_stime
    USAGE["peak_mib"] = max(USAGE["peak_mib"], peak[0])
    return proc.returncode


def session_memory_mib(session: int) -> float:
    """The summed resident memory of the processes of ``session``, or the largest one's high-water mark if larger."""
    total = 0
    highest_kib = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
            if int(fields[3]) != session:  # after the name: state, ppid, pgrp, session, ... rss is the 22nd
                continue
            total += int(fields[21])
            with open(f"/proc/{entry}/status", "rb") as handle:
                hwm = next((line for line in handle if line.startswith(b"VmHWM:")), b"VmHWM: 0 kB")
            highest_kib = max(highest_kib, int(hwm.split()[1]))
        except (OSError, ValueError, IndexError):
            continue
    return max(total * _PAGE_MIB, highest_kib / 1024)


def _phase_key(message: str) -> str:
    message = re.sub(r"^org [a-z0-9._-]+: ", "", message)  # an organisation's sync marks its lines (#16)
    message = re.sub(r"\d+", "N", message.split(":", 1)[0])
    message = re.sub(r"staging/\S+", "staging/ID", message)
    message = re.sub(r"resolution \S+", "resolution KEY", message)
    return re.sub(r"generation \S+", "generation ID", message)[:60]


def traced_sync(env: dict[str, str], cwd: Path, phases: dict[str, list[float]]) -> float:
    """Run ``python -m bootstrap sync``; time it and, from the arrival of its INFO lines, each of its steps.

    A step is the time from one top-level log line to the next (indented lines, one per
    package, are folded into the step they belong to).
    """
    start = time.perf_counter()
    proc = subprocess.Popen(
        [PY, "-m", "bootstrap", "sync"],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stderr is not None
    marks: list[tuple[str, float]] = [("(start: python, imports, settings, host scan)", start)]
    lines = []
    waited: list[int] = []
    waiter = threading.Thread(target=lambda: waited.append(measured(proc, 1200)), daemon=True)
    waiter.start()
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("bootstrap: ") and not line.startswith("bootstrap:  "):
            marks.append((_phase_key(line[len("bootstrap: ") :].strip()), time.perf_counter()))
    end = time.perf_counter()
    waiter.join()
    if waited != [0]:
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
            USAGE.update(cpu=0.0, peak_mib=0.0)
            times[name].append(commands[name]())
            USED.setdefault(name, []).append(dict(USAGE))
    return times


# Per command name, each run's USAGE (CPU seconds, peak MiB), for the rows that report them (``report``).
USED: dict[str, list[dict[str, float]]] = {}


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f}s (min {min(values):.3f}, max {max(values):.3f}, n={len(values)})"


def report(
    row: str,
    set_name: str,
    source: str,
    times: dict[str, list[float]],
    ours: Sequence[str],
    bases: Sequence[str],
    show: bool = True,
) -> None:
    """Print each command's spread (``show``); add a table line per (bootstrap variant, baseline) pair."""
    width = max(len(name) for name in times) + 1
    for name, values in times.items():
        if values and show:
            print(f"  {name + ':':<{width}} {spread(values)}{usage_note(name, len(values))}")
    if show:
        RESULTS_DATA["raw"].append({"row": row, "set": set_name, "source": source, "times": times})
    for mine in ours:
        for base in bases:
            if not times.get(mine) or not times.get(base):
                continue
            RESULTS_DATA["rows"].append(
                {
                    "row": row,
                    "set": set_name,
                    "source": source,
                    "bootstrap": mine,
                    "bootstrap_median": statistics.median(times[mine]),
                    "baseline": base,
                    "baseline_median": statistics.median(times[base]),
                    "ratio": statistics.median(times[mine]) / statistics.median(times[base]),
                    "n": min(len(times[mine]), len(times[base])),
                    **usage_ratios(mine, base, len(times[mine]), len(times[base])),
                }
            )


def _usage(name: str, runs: int, key: str) -> float | None:
    """The median of ``key`` over the last ``runs`` runs of ``name`` (a command may be run in several rows)."""
    used = USED.get(name, [])[-runs:]
    values = [u[key] for u in used if u[key] > 0]
    return statistics.median(values) if values and len(used) == runs else None


def usage_note(name: str, runs: int) -> str:
    cpu, peak = _usage(name, runs, "cpu"), _usage(name, runs, "peak_mib")
    return f"; CPU {cpu:.2f}s, peak {peak:.0f} MiB" if cpu is not None and peak is not None else ""


def usage_ratios(mine: str, base: str, mine_runs: int, base_runs: int) -> dict[str, float]:
    found = {}
    for key in ("cpu", "peak_mib"):
        ours, theirs = _usage(mine, mine_runs, key), _usage(base, base_runs, key)
        if ours is not None and theirs:
            found.update({f"bootstrap_{key}": ours, f"baseline_{key}": theirs, f"{key}_ratio": ours / theirs})
    return found


def na_row(row: str, set_name: str, source: str, mine: str, why: str) -> None:
    RESULTS_DATA["rows"].append(
        {"row": row, "set": set_name, "source": source, "bootstrap": mine, "baseline": "-", "na": why}
    )


def print_phases(title: str, phases: dict[str, list[float]]) -> None:
    print(f"  {title} (medians, from the arrival of its log lines):")
    for phase, values in phases.items():
        print(f"    {phase:<60} {statistics.median(values):7.3f}s  (n={len(values)})")


def uv_backend() -> bool:
    from bootstrap.settings import Settings

    return "backend" in Settings.model_fields


def remove(pattern: str, work: Path) -> None:
    for done in work.glob(pattern):
        shutil.rmtree(done, ignore_errors=True)
    os.sync()


# --------------------------------------------------------------------------- the commands


class Tools:
    """The commands compared, each into a folder of its own."""

    def __init__(self, source: Source, requirements: Path) -> None:
        self.source = source
        self.requirements = requirements

    def bootstrap(
        self, folder: Path, env: dict[str, str], phases: dict[str, list[float]] | None, **extra: str
    ) -> float:
        env = {
            **env,
            "BOOTSTRAP_REQUIREMENTS_FILE": str(extra.pop("requirements", self.requirements)),
            "BOOTSTRAP_PACKAGES_DIR": str(extra.pop("packages", folder / "packages")),
            **extra,
        }
        if phases is not None:
            return traced_sync(env, folder, phases)
        return run([PY, "-m", "bootstrap", "sync"], env, folder)

    def pip(self, folder: Path, env: dict[str, str]) -> float:
        return run(
            [PY, "-m", "pip", "install", "--target", str(folder / "t"), "-r", str(self.requirements)], env, folder
        )

    def compile_install(self, folder: Path, env: dict[str, str], compile_times: list[float]) -> float:
        lock = folder / "lock.txt"
        argv = [PY, "-m", "piptools", "compile", "-q", "--no-header", "--strip-extras", "--allow-unsafe"]
        seconds = run([*argv, "-o", str(lock), str(self.requirements)], env, folder)
        compile_times.append(seconds)
        install = [PY, "-m", "pip", "install", "--no-deps", "--target", str(folder / "t"), "-r", str(lock)]
        return seconds + run(install, env, folder)

    def uv(self, folder: Path, env: dict[str, str], compile_bytecode: bool = False) -> float:
        """uv's own default writes no .pyc (pip and bootstrap do): ``compile_bytecode`` asks it to."""
        lock = folder / "uv-lock.txt"
        common = ["--python", PY, *self.source.uv_args]
        seconds = run([UV, "pip", "compile", "-q", *common, "-o", str(lock), str(self.requirements)], env, folder)
        install = [UV, "pip", "install", "-q", *common, "--no-deps", "--target", str(folder / "t"), "-r", str(lock)]
        install += ["--compile-bytecode"] if compile_bytecode else []
        return seconds + run(install, env, folder)


def write_requirements(folder: Path, names: Sequence[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "requirements.txt"
    path.write_text("\n".join(names) + "\n")
    return path


# --------------------------------------------------------------------------- rows


EXECUTE_GOALS = {"in-process": 0.001, "first worker": 1.5, "later worker": 0.002}  # seconds more, ratio, seconds more
EXECUTE_WORKFLOW = """\
import colorama, dateutil, tabulate


def run(input_data):
    return {"table": tabulate.tabulate([[1, 2]]), "n": input_data.get("n", 0)}
"""
# Runs in a child (the snapshot's bootstrap, the workspace activated): prints the times as JSON.
EXECUTE_PROBE = """\
import json, subprocess, sys, time
import bootstrap
from bootstrap.host import isolation, workers

org, other, runs, site = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
bootstrap.startup()


def per_call(call, n=200):
    start = time.perf_counter()
    for _ in range(n):
        call()
    return (time.perf_counter() - start) / n


first = bootstrap.execute("fmt", {}, org=org)
assert first["isolation"] == "in-process", first
admitted = isolation.admit(org, first["generation"], site)[2]
module = sys.modules["bootstrap_workflows.fmt[" + org + "]"]


def direct():
    token = isolation.running.set(admitted)
    try:
        module.run({})
    finally:
        isolation.running.reset(token)


times = {"run() directly": [], "execute, in-process": [], "execute, later in a worker": []}
times.update({"execute, first in a new worker": [], "bare python -I -c import": []})
isolation._dist_claims["tabulate"] = "0+another-org"  # as an org with a conflicting pin would have
assert bootstrap.execute("fmt", {}, org=other)["isolation"] == "process"
for _ in range(runs * 5):
    times["run() directly"].append(per_call(direct))
    times["execute, in-process"].append(per_call(lambda: bootstrap.execute("fmt", {}, org=org)))
    times["execute, later in a worker"].append(per_call(lambda: bootstrap.execute("fmt", {}, org=other), 20))
bare = [sys.executable, "-I", "-c", f"import sys; sys.path[:0] = [{site!r}]; import tabulate, dateutil, colorama"]
for _ in range(runs * 2):
    workers.POOL.shutdown()
    start = time.perf_counter()
    bootstrap.execute("fmt", {}, org=other)
    times["execute, first in a new worker"].append(time.perf_counter() - start)
    start = time.perf_counter()
    subprocess.run(bare, check=True)
    times["bare python -I -c import"].append(time.perf_counter() - start)
print(json.dumps(times))
"""


def bench_execute(work: Path, wheelhouse: Path, runs: int) -> None:
    """#16: what running an org's workflow costs, in-process and in a worker (set S, wheelhouse)."""
    print("\n== execute: bootstrap.execute for an org, in-process and in a worker, set S, wheelhouse ==")
    repo, packages = work / "execute-repo", work / "execute-packages"
    requirements = write_requirements(repo, ["colorama", "python-dateutil"])
    (repo / "fmt.py").write_text(EXECUTE_WORKFLOW)
    env = Source("wheelhouse", wheelhouse).env(work / "execute-caches")
    env.update(BOOTSTRAP_REQUIREMENTS_FILE=str(requirements), BOOTSTRAP_PACKAGES_DIR=str(packages))
    run([PY, "-m", "bootstrap", "sync"], env, work)
    sites = {}
    for org in ("org-in", "org-out"):  # the same set; as the org sync lays it out (the whole set, its own folder)
        org_file = write_requirements(work / "execute-orgs" / org, ["colorama", "python-dateutil", "tabulate"])
        org_root = packages / "orgs" / org
        org_env = {**env, "BOOTSTRAP_REQUIREMENTS_FILE": str(org_file), "BOOTSTRAP_PACKAGES_DIR": str(org_root)}
        org_env["BOOTSTRAP_STATE_DIR"] = str(work / "execute-state" / org)
        run([PY, "-m", "bootstrap", "sync"], org_env, work)
        generation = json.loads((org_root / "manifest.json").read_text())["generation"]
        sites[org] = str(org_root / "generations" / generation / "site")
    argv = [PY, "-c", EXECUTE_PROBE, "org-in", "org-out", str(runs), sites["org-in"]]
    proc = subprocess.run(argv, env=env, cwd=work, capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        raise RuntimeError(f"the execute probe failed:\n{proc.stderr}")
    times: dict[str, list[float]] = json.loads(proc.stdout.strip().splitlines()[-1])
    report("execute", "S", "wheelhouse", times, ["execute, in-process"], ["run() directly"])
    first_pair = (["execute, first in a new worker"], ["bare python -I -c import"])
    report("execute", "S", "wheelhouse", times, *first_pair, show=False)
    report("execute", "S", "wheelhouse", times, ["execute, later in a worker"], ["execute, in-process"], show=False)
    median = {name: statistics.median(values) for name, values in times.items()}
    in_process = median["execute, in-process"] - median["run() directly"]
    first = median["execute, first in a new worker"] / median["bare python -I -c import"]
    later = median["execute, later in a worker"] - median["execute, in-process"]
    note(
        f"execute: in-process {in_process * 1000:.3f} ms more than run() (goal < 1 ms); first in a new worker "
        f"{first:.2f}x a bare import (goal < 1.5x); later in a worker {later * 1000:.3f} ms more than in-process "
        f"(goal < 2 ms)"
    )


def pyc_state() -> str:
    modules = sorted((code_root() / "bootstrap").glob("*.py"))
    cached = sum(Path(importlib.util.cache_from_source(str(m))).is_file() for m in modules)
    return f"{cached}/{len(modules)} bootstrap modules have a .pyc"


def code_root() -> Path:
    return SNAPSHOT if SNAPSHOT is not None else ROOT


def take_snapshot(work: Path) -> dict[str, Any]:
    """Copy bootstrap/ (compiled) into ``work``; children import it from there. Its git state, for the record."""
    global SNAPSHOT
    snapshot = work / "code"
    shutil.copytree(ROOT / "bootstrap", snapshot / "bootstrap", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([PY, "-m", "compileall", "-q", str(snapshot / "bootstrap")], check=True)
    SNAPSHOT = snapshot
    sys.path.insert(0, str(snapshot))
    for name in [m for m in sys.modules if m == "bootstrap" or m.startswith("bootstrap.")]:
        del sys.modules[name]

    def git(*argv: str) -> str:
        return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    return {
        "head": git("log", "-1", "--format=%h %ci %s")[:120].rstrip(" ,"),
        "uncommitted_changes_in_bootstrap": git("status", "--porcelain", "bootstrap").splitlines(),
    }


STARTUP_GOAL = 1.25  # #18: a no-op startup() at most 1.25x a bare interpreter (CPU), on every set


def bench_startup(work: Path, wheelhouse: Path, runs: int, sets: Sequence[str] = ("S",)) -> None:
    """The fast path's start-up (with and without .pyc for bootstrap, set S), ``check`` and ``verify`` on a synced
    folder of each set, each against a bare interpreter."""
    print(f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '(unset)')} in the environment")
    print(f"before warm-up: {pyc_state()}")
    subprocess.run([PY, "-m", "compileall", "-q", str(code_root() / "bootstrap")], check=True)
    print(f"after `python -m compileall -q bootstrap`: {pyc_state()}")
    # The same sources copied where no .pyc can be: what a host gets from a source checkout.
    source = work / "source-copy"
    shutil.copytree(code_root() / "bootstrap", source / "bootstrap", ignore=shutil.ignore_patterns("__pycache__"))
    for set_name in sets:
        _startup_of(work, wheelhouse, runs, set_name, source)


def _startup_of(work: Path, wheelhouse: Path, runs: int, set_name: str, source: Path) -> None:
    """Long because it is the whole row for one set: sync, the fast path's probe, then the commands compared."""
    print(f"\n== startup: no-op start-up (fast path), check and verify, set {set_name}, wheelhouse ==")
    repo, packages = work / f"startup-repo-{set_name}", work / f"startup-packages-{set_name}"
    requirements = write_requirements(repo, SETS[set_name])
    env = Source("wheelhouse", wheelhouse).env(work / f"startup-caches-{set_name}")
    env.update(BOOTSTRAP_REQUIREMENTS_FILE=str(requirements), BOOTSTRAP_PACKAGES_DIR=str(packages))
    run([PY, "-m", "bootstrap", "sync"], env, work)
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
    commands = {"startup()": lambda: run(startup, env, work), "bare python": lambda: run(bare, env, work)}
    ours = ["startup()"]
    if set_name == "S":
        commands["startup(), no .pyc"] = lambda: run(startup, env_no_pyc, work)
        ours.append("startup(), no .pyc")
    commands["check"] = lambda: run([PY, "-m", "bootstrap", "check"], env, work)
    commands["verify"] = lambda: run([PY, "-m", "bootstrap", "verify"], env, work)
    interleave(commands, 3)  # warm-up: page cache
    times = interleave(commands, runs)
    report("startup", set_name, "wheelhouse", times, ours, ["bare python"])
    report("startup", set_name, "wheelhouse", times, ["check", "verify"], ["bare python"], show=False)
    mine, bare_cpu = _usage("startup()", runs, "cpu"), _usage("bare python", runs, "cpu")
    if mine is not None and bare_cpu:
        verdict = "met" if mine <= STARTUP_GOAL * bare_cpu else "NOT met"
        print(f"  goal: startup() <= {STARTUP_GOAL}x a bare interpreter, by CPU: {mine / bare_cpu:.2f}x ({verdict})")
    check_cpu = _usage("check", runs, "cpu")
    site_bytes = sum(f.stat().st_size for f in (packages / "generations").rglob("*") if f.is_file())
    verify_cpu = _usage("verify", runs, "cpu")
    if check_cpu is not None and verify_cpu is not None:
        print(f"  check: {check_cpu:.2f} s of CPU (goal on L: <= 0.5 s)")
        print(
            f"  verify: {verify_cpu:.2f} s of CPU for {site_bytes / (1 << 20):.0f} MiB on disk: "
            f"{verify_cpu / (site_bytes / (1 << 30)):.2f} s per GiB"
        )


ONE_PROCESS = "one process importing the set's modules"
PEAK_GOAL = 1.3  # #18: a sync's peak memory at most 1.3x that of one process importing the set's top-level modules
IMPORT_ALL = """\
import importlib, site, sys
from pathlib import Path
from bootstrap.store.records import installed

site_dir = sys.argv[1]
modules = sorted({module for dist in installed(Path(site_dir)) for module in dist.modules()})
site.addsitedir(site_dir)
for module in modules:
    try:
        importlib.import_module(module)
    except Exception:
        pass
"""


def bench_cold(work: Path, set_name: str, source: Source, runs: int) -> None:
    print(f"\n== cold: cold sync, set {set_name}, {source.name} ==")
    tag = f"{set_name}-{source.name}"
    requirements = write_requirements(work / f"repo-{tag}", SETS[set_name])
    locked = write_requirements(work / f"locked-{tag}", SETS[set_name])
    tools = Tools(source, requirements)
    counter = iter(range(10**6))
    phases: dict[str, list[float]] = {}
    compile_times: list[float] = []

    def fresh() -> tuple[Path, dict[str, str]]:
        folder = work / f"run-{next(counter)}"
        folder.mkdir()
        return folder, source.env(folder)

    # The committed-lock variant: `bootstrap lock` once, then its syncs skip pip-compile.
    env = source.env(work / f"lock-caches-{tag}")
    env.update(BOOTSTRAP_REQUIREMENTS_FILE=str(locked), BOOTSTRAP_PACKAGES_DIR=str(work / f"lp-{tag}"))
    run([PY, "-m", "bootstrap", "lock"], env, work)

    commands: dict[str, Callable[[], float]] = {
        "bootstrap": lambda: tools.bootstrap(*fresh(), phases),
        "bootstrap, committed lock": lambda: tools.bootstrap(*fresh(), None, requirements=locked),
        "pip install --target": lambda: tools.pip(*fresh()),
        "pip-compile + pip install": lambda: tools.compile_install(*fresh(), compile_times),
        "uv pip compile + install": lambda: tools.uv(*fresh()),
        "uv pip compile + install --compile-bytecode": lambda: tools.uv(*fresh(), compile_bytecode=True),
    }
    ours = ["bootstrap", "bootstrap, committed lock"]
    if uv_backend():
        commands["bootstrap (uv backend)"] = lambda: tools.bootstrap(*fresh(), None, BOOTSTRAP_BACKEND="uv")
        ours.append("bootstrap (uv backend)")
        # Like for like with plain uv, which writes no .pyc: bootstrap's uv backend with compiling off.
        commands["bootstrap (uv backend, no .pyc)"] = lambda: tools.bootstrap(
            *fresh(), None, BOOTSTRAP_BACKEND="uv", BOOTSTRAP_COMPILE_BYTECODE="false"
        )
        ours.append("bootstrap (uv backend, no .pyc)")
    else:
        na_row("cold", set_name, source.name, "bootstrap (uv backend)", "n/a (no uv backend)")
    tools.pip(*fresh())  # warm-up: page cache, pip's imports
    # #18's memory baseline: one process importing the set's top-level modules (from a generation synced once).
    imported = work / f"imported-{tag}"
    imported.mkdir()
    tools.bootstrap(imported, source.env(imported), None)
    site_dir = json.loads((imported / "packages" / "manifest.json").read_text())["site_dir"]
    import_all = [PY, "-B", "-c", IMPORT_ALL, site_dir]
    commands[ONE_PROCESS] = lambda: run(import_all, clean_env(), work)
    times = interleave(commands, runs, lambda: remove("run-*", work))
    remove("run-*", work)
    times["  (pip-compile alone, in pip-compile + pip install)"] = compile_times
    report("cold", set_name, source.name, times, ours, (*BASELINES, ONE_PROCESS))
    for mine in ours:
        peak, alone = _usage(mine, runs, "peak_mib"), _usage(ONE_PROCESS, runs, "peak_mib")
        if peak is not None and alone:
            verdict = "met" if peak <= PEAK_GOAL * alone else "NOT met"
            print(f"  goal: {mine}'s peak memory <= {PEAK_GOAL}x {ONE_PROCESS}'s: {peak / alone:.2f}x ({verdict})")
    if not uv_backend():
        print("  bootstrap (uv backend): n/a (no uv backend)")
    print_phases("steps of bootstrap sync (no lock)", phases)
    RESULTS_DATA.setdefault("phases", {})[f"cold {tag}"] = {k: statistics.median(v) for k, v in phases.items()}


def bench_warm(work: Path, set_name: str, source: Source, runs: int) -> None:
    print(f"\n== warm: new instance (empty packages folder), warm caches, set {set_name}, {source.name} ==")
    tag = f"{set_name}-{source.name}"
    requirements = write_requirements(work / f"repo-warm-{tag}", SETS[set_name])
    tools = Tools(source, requirements)
    caches = {name: work / f"warm-{tag}" / name for name in ("bootstrap", "bootstrap-uv", "pip", "compile", "uv")}
    for path in caches.values():
        path.mkdir(parents=True)
    seed_packages = caches["bootstrap"] / "seed-packages"
    # Warm every cache once (not measured).
    tools.bootstrap(caches["bootstrap"], source.env(caches["bootstrap"]), None, packages=seed_packages)
    seed_cache = seed_packages / "cache"
    tools.pip(caches["pip"], source.env(caches["pip"]))
    tools.compile_install(caches["compile"], source.env(caches["compile"]), [])
    tools.uv(caches["uv"], source.env(caches["uv"]))
    for name in ("pip", "compile", "uv"):
        shutil.rmtree(caches[name] / "t")
    counter = iter(range(10**6))
    phases: dict[str, list[float]] = {}
    sources_seen: list[str] = []

    def folder() -> Path:
        path = work / f"run-{next(counter)}"
        path.mkdir()
        return path

    def bootstrap(extra: dict[str, str], cache_from: Path, trace: bool) -> float:
        where = folder()
        shutil.copytree(cache_from, where / "packages" / "cache")  # bootstrap's own cache folder, kept
        seconds = tools.bootstrap(where, source.env(cache_from.parent.parent), phases if trace else None, **extra)
        data = json.loads((where / "packages" / "manifest.json").read_text())
        sources_seen.append(data.get("lock_source"))
        return seconds

    commands: dict[str, Callable[[], float]] = {
        "bootstrap": lambda: bootstrap({}, seed_cache, True),
        "pip install --target": lambda: tools.pip(folder(), source.env(caches["pip"])),
        "pip-compile + pip install": lambda: tools.compile_install(folder(), source.env(caches["compile"]), []),
        "uv pip compile + install": lambda: tools.uv(folder(), source.env(caches["uv"])),
        "uv pip compile + install --compile-bytecode": lambda: tools.uv(
            folder(), source.env(caches["uv"]), compile_bytecode=True
        ),
    }
    ours = ["bootstrap"]
    if uv_backend():
        uv_seed = caches["bootstrap-uv"] / "seed-packages"
        tools.bootstrap(
            caches["bootstrap-uv"], source.env(caches["bootstrap-uv"]), None, packages=uv_seed, BOOTSTRAP_BACKEND="uv"
        )
        commands["bootstrap (uv backend)"] = lambda: bootstrap({"BOOTSTRAP_BACKEND": "uv"}, uv_seed / "cache", False)
        ours.append("bootstrap (uv backend)")
    else:
        na_row("warm", set_name, source.name, "bootstrap (uv backend)", "n/a (no uv backend)")
    times = interleave(commands, runs, lambda: remove("run-*", work))
    remove("run-*", work)
    report("warm", set_name, source.name, times, ours, BASELINES)
    if not uv_backend():
        print("  bootstrap (uv backend): n/a (no uv backend)")
    print(f"  lock_source of the warm bootstrap syncs: {sorted(set(map(str, sources_seen)))}")
    print_phases("steps of warm bootstrap sync", phases)
    RESULTS_DATA.setdefault("phases", {})[f"warm {tag}"] = {k: statistics.median(v) for k, v in phases.items()}
    shutil.rmtree(work / f"warm-{tag}", ignore_errors=True)


def bench_incremental(work: Path, set_name: str, source: Source, runs: int) -> None:
    """Add one package to a synced set, against building the grown set into a new packages folder."""
    added = ADDED_TO.get(set_name, ADDED)
    print(f"\n== incremental: add {added} to a synced set {set_name}, {source.name} ==")
    counter = iter(range(10**6))
    phases: dict[str, list[float]] = {}

    def prepared(**extra: str) -> tuple[Path, dict[str, str]]:
        """A packages folder synced with the set (not measured); the file then grows by one package."""
        folder = work / f"inc-{next(counter)}"
        requirements = write_requirements(folder / "repo", SETS[set_name])
        env = source.env(folder, **extra)
        env.update(BOOTSTRAP_REQUIREMENTS_FILE=str(requirements), BOOTSTRAP_PACKAGES_DIR=str(folder / "packages"))
        run([PY, "-m", "bootstrap", "sync"], env, folder)
        USAGE.update(cpu=0.0, peak_mib=0.0)  # not the measured command's
        write_requirements(folder / "repo", (*SETS[set_name], added))
        return folder, env

    def incremental(**extra: str) -> float:
        folder, env = prepared(**extra)
        return traced_sync(env, folder, phases) if not extra else run([PY, "-m", "bootstrap", "sync"], env, folder)

    def rebuild(**extra: str) -> float:  # the same caches (warmed by the same first sync), a new packages folder
        folder, env = prepared(**extra)
        env["BOOTSTRAP_PACKAGES_DIR"] = str(folder / "packages-rebuild")
        return run([PY, "-m", "bootstrap", "sync"], env, folder)

    commands: dict[str, Callable[[], float]] = {"incremental": incremental, "full rebuild": rebuild}
    if uv_backend():
        commands["incremental (uv backend)"] = lambda: incremental(BOOTSTRAP_BACKEND="uv")
        commands["full rebuild (uv backend)"] = lambda: rebuild(BOOTSTRAP_BACKEND="uv")
    times = interleave(commands, runs, lambda: remove("inc-*", work))
    remove("inc-*", work)
    report("incremental", set_name, source.name, times, ["incremental"], ["full rebuild"])  # prints them all
    if uv_backend():
        mine, base = "incremental (uv backend)", "full rebuild (uv backend)"
        pair = {name: times[name] for name in (mine, base)}
        report("incremental", set_name, source.name, pair, [mine], [base], show=False)
    print_phases("steps of the incremental sync", phases)
    RESULTS_DATA.setdefault("phases", {})[f"incremental {set_name}-{source.name}"] = {
        k: statistics.median(v) for k, v in phases.items()
    }


def bench_hashes(work: Path, source: Source, runs: int) -> None:
    """A lock with hashes, every command with cold caches (pip-tools keeps resolved metadata in its own)."""
    print(f"\n== hashes: lock with hashes, {len(set(HASH_SET))} names (about 50 pins), {source.name}, cold ==")
    requirements = write_requirements(work / "repo-hashes", HASH_SET)
    counter = iter(range(10**6))

    def fresh() -> tuple[Path, dict[str, str]]:
        folder = work / f"run-{next(counter)}"
        folder.mkdir()
        return folder, source.env(folder)

    def bootstrap(**extra: str) -> float:
        folder, env = fresh()
        env.update(BOOTSTRAP_REQUIREMENTS_FILE=str(requirements), BOOTSTRAP_PACKAGES_DIR=str(folder / "p"), **extra)
        return run([PY, "-m", "bootstrap", "lock", "--hashes"], env, folder)

    def pip_compile(*options: str) -> float:
        folder, env = fresh()
        argv = [PY, "-m", "piptools", "compile", "-q", "--no-header", "--strip-extras", "--allow-unsafe", *options]
        return run([*argv, "-o", str(folder / "lock.txt"), str(requirements)], env, folder)

    def uv() -> float:
        folder, env = fresh()
        argv = [UV, "pip", "compile", "-q", "--python", PY, *source.uv_args, "--generate-hashes"]
        return run([*argv, "-o", str(folder / "lock.txt"), str(requirements)], env, folder)

    commands: dict[str, Callable[[], float]] = {
        "bootstrap lock --hashes": bootstrap,
        "pip-compile --generate-hashes": lambda: pip_compile("--generate-hashes"),
        "uv pip compile --generate-hashes": uv,
        "  (pip-compile without hashes: the resolution alone)": pip_compile,
    }
    ours = ["bootstrap lock --hashes"]
    if uv_backend():
        commands["bootstrap lock --hashes (uv backend)"] = lambda: bootstrap(BOOTSTRAP_BACKEND="uv")
        ours.append("bootstrap lock --hashes (uv backend)")
    times = interleave(commands, runs, lambda: remove("run-*", work))
    remove("run-*", work)
    report(
        "hashes", "H", source.name, times, ours, ["pip-compile --generate-hashes", "uv pip compile --generate-hashes"]
    )


def _pyc_count(folder: Path) -> tuple[int, int]:
    sources = sum(1 for _ in folder.rglob("*.py"))
    compiled = sum(1 for _ in folder.rglob("__pycache__/*.pyc"))
    return sources, compiled


def bench_import(work: Path, wheelhouse: Path, runs: int) -> None:
    print("\n== import: `import pandas` from the generation vs from a virtual environment (set M, wheelhouse) ==")
    source = Source("wheelhouse", wheelhouse)
    folder = work / "import"
    requirements = write_requirements(folder / "repo", SETS["M"])
    env = source.env(folder)
    env.update(BOOTSTRAP_REQUIREMENTS_FILE=str(requirements), BOOTSTRAP_PACKAGES_DIR=str(folder / "packages"))
    run([PY, "-m", "bootstrap", "sync"], env, folder)
    data = json.loads((folder / "packages" / "manifest.json").read_text())
    site = Path(data["site_dir"])
    version = next(p["version"] for p in data["packages"] if p["name"].lower() == "pandas")
    py_files, pyc_files = _pyc_count(site)
    generation_has_pyc = pyc_files > 0
    note(
        f"generation: {py_files} .py files, {pyc_files} .pyc files (bootstrap's pip install --target compiled: "
        f"{'yes' if generation_has_pyc else 'no'})"
    )
    # The other state of the generation, in a copy: .pyc stripped, or compiled.
    other = folder / "gen-copy" / "site"
    shutil.copytree(site, other, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    if not generation_has_pyc:
        subprocess.run([PY, "-m", "compileall", "-q", "-j", "0", str(other)], check=False, stdout=subprocess.DEVNULL)
    gen_pyc, gen_nopyc = (site, other) if generation_has_pyc else (other, site)
    note(f"generation copy: {_pyc_count(other)[1]} .pyc files")
    # Virtual environments with the same pandas from the same wheelhouse (and the same base interpreter).
    venvs = {}
    for label, compile_flag in (("pyc", []), ("nopyc", ["--no-compile"])):
        venv = folder / f"venv-{label}"
        run([PY, "-m", "venv", "--without-pip", str(venv)], clean_env(), folder)
        pip = [PY, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q", *compile_flag]
        run([*pip, f"pandas=={version}"], source.env(folder / "venv-caches"), folder)
        venvs[label] = venv / "bin" / "python"
        purelib = next((venv / "lib").glob("python3*/site-packages"))
        note(f"venv {label}: pandas {version}, {_pyc_count(purelib)[1]} .pyc files in site-packages")
    probe = ["-c", "import pandas"]
    child = clean_env(PYTHONDONTWRITEBYTECODE="1")
    activate_env = {**child, "BOOTSTRAP_PACKAGES_DIR": str(folder / "packages")}  # PYTHONPATH: the snapshot
    child.pop("PYTHONPATH", None)
    commands = {
        "generation, .pyc (PYTHONPATH)": lambda: run([PY, *probe], {**child, "PYTHONPATH": str(gen_pyc)}, folder),
        "generation, no .pyc (PYTHONPATH)": lambda: run([PY, *probe], {**child, "PYTHONPATH": str(gen_nopyc)}, folder),
        "generation as installed, via bootstrap.activate()": lambda: run(
            [PY, "-c", "import bootstrap; bootstrap.activate(); import pandas"], activate_env, folder
        ),
        "venv, .pyc": lambda: run([str(venvs["pyc"]), *probe], child, folder),
        "venv, no .pyc": lambda: run([str(venvs["nopyc"]), *probe], child, folder),
    }
    check = subprocess.run(
        [PY, "-c", "import pandas, sys; print(pandas.__file__)"],
        env={**child, "PYTHONPATH": str(gen_pyc)},
        capture_output=True,
        text=True,
        check=True,
    )
    note(f"pandas imported from: {check.stdout.strip()}")
    interleave(commands, 1)  # warm-up: page cache
    times = interleave(commands, runs)
    report("import", "M", "wheelhouse", times, ["generation, .pyc (PYTHONPATH)"], ["venv, .pyc"])
    for mine, base in (
        ("generation, no .pyc (PYTHONPATH)", "venv, no .pyc"),
        ("generation as installed, via bootstrap.activate()", "venv, .pyc"),
    ):
        RESULTS_DATA["rows"].append(
            {
                "row": "import",
                "set": "M",
                "source": "wheelhouse",
                "bootstrap": mine,
                "bootstrap_median": statistics.median(times[mine]),
                "baseline": base,
                "baseline_median": statistics.median(times[base]),
                "ratio": statistics.median(times[mine]) / statistics.median(times[base]),
                "n": runs,
            }
        )
    shutil.rmtree(folder, ignore_errors=True)


def bench_share(work: Path, wheelhouse: Path, runs: int) -> None:
    """Set S on a real SMB share seen by two instances, against a local folder (#15). Long because it
    sets the share up, syncs on both kinds of folder, then times three pairs of commands."""
    print("\n== share: set S on a real SMB share (instances A and B) vs a local folder, wheelhouse ==")
    sys.path.insert(0, str(ROOT))
    from tests import smbshare  # slow path: only this row needs the share's set-up

    why = smbshare.unavailable() or (
        f"missing {', '.join(smbshare.missing_programs())}: {smbshare.INSTALL_HINT}"
        if smbshare.missing_programs()
        else None
    )
    if why:
        note(f"(share row skipped: {why})")
        na_row("share", "S", "wheelhouse", "sync / import / startup on an SMB share", f"n/a ({why[:60]})")
        return
    source = Source("wheelhouse", wheelhouse)
    requirements = write_requirements(work / "share-repo", SETS["S"])
    counter = iter(range(10**6))
    with smbshare.serve(work / "smb") as server:

        def timed(instance: str, argv: Sequence[str], env: dict[str, str]) -> float:
            return run(server.command(instance, argv), env, work)

        def cold(home: Path) -> float:
            folder = work / f"run-{next(counter)}"  # the caches: each instance's own disk, cold
            env = source.env(folder, BOOTSTRAP_REQUIREMENTS_FILE=str(requirements))
            env["BOOTSTRAP_PACKAGES_DIR"] = str(home / folder.name / "packages")
            return timed("A", [PY, "-m", "bootstrap", "sync"], env)

        local_home = work / "share-local"
        local_home.mkdir()
        commands: dict[str, Callable[[], float]] = {
            "cold sync on the share (A)": lambda: cold(server.home),
            "cold sync on a local folder": lambda: cold(local_home),
        }
        times = interleave(commands, runs)
        # One synced folder of each kind, for the import and the no-op startup (both from instance B).
        synced = {}
        for label, home in (("share", server.home), ("local", local_home)):
            env = source.env(work / f"share-{label}-caches", BOOTSTRAP_REQUIREMENTS_FILE=str(requirements))
            env["BOOTSTRAP_PACKAGES_DIR"] = str(home / f"synced-{label}" / "packages")
            timed("A", [PY, "-m", "bootstrap", "sync"], env)
            synced[label] = env
        importing = [PY, "-c", f"import bootstrap; bootstrap.activate(); import {S_IMPORTS}"]
        startup = [PY, "-c", "import bootstrap; bootstrap.startup()"]
        probes: dict[str, Callable[[], float]] = {
            "import set S via activate(), share (B)": lambda: timed("B", importing, synced["share"]),
            "import set S via activate(), local": lambda: timed("B", importing, synced["local"]),
            "no-op startup(), share (B)": lambda: timed("B", startup, synced["share"]),
            "no-op startup(), local": lambda: timed("B", startup, synced["local"]),
        }
        interleave(probes, 2)  # warm-up: page cache, the mount's own caches
        times.update(interleave(probes, max(10, 3 * runs)))
    report("share", "S", "wheelhouse", times, ["cold sync on the share (A)"], ["cold sync on a local folder"])
    for mine, base in (
        ("import set S via activate(), share (B)", "import set S via activate(), local"),
        ("no-op startup(), share (B)", "no-op startup(), local"),
    ):
        report("share", "S", "wheelhouse", {mine: times[mine], base: times[base]}, [mine], [base], show=False)
    ratio = statistics.median(times["no-op startup(), share (B)"]) / statistics.median(times["no-op startup(), local"])
    print(f"  no-op startup() on the share: {ratio:.2f}x the local folder (goal: within {SHARE_GOAL}x)")


def bench_orgs(work: Path, source: Source, runs: int) -> None:
    """Add an organisation of one package on top of a synced workspace, against building that workspace (#16).

    Long because it measures both backends, each a time pair and the bytes added, then 20 organisations at once.
    """
    from bootstrap.store.fs import tree_size  # slow path: only this row counts bytes

    print(
        f"\n== orgs: add an organisation of one package ({ADDED}) on top of a synced workspace (set M), wheelhouse =="
    )
    counter = iter(range(10**6))
    phases: dict[str, list[float]] = {}
    disk: dict[str, list[tuple[int, int, int]]] = {}  # backend: (bytes added, workspace folder, its generation)

    def workspace(**extra: str) -> tuple[Path, dict[str, str]]:
        """An empty packages folder and cold caches; the repo holds the workspace's file and no organisation."""
        folder = work / f"org-{next(counter)}"
        requirements = write_requirements(folder / "repo", ORGS_WORKSPACE)
        env = source.env(folder, **extra)
        env.update(BOOTSTRAP_REQUIREMENTS_FILE=str(requirements), BOOTSTRAP_PACKAGES_DIR=str(folder / "packages"))
        return folder, env

    def cold(**extra: str) -> float:
        folder, env = workspace(**extra)
        return run([PY, "-m", "bootstrap", "sync"], env, folder)

    def add_orgs(folder: Path, env: dict[str, str], names: Sequence[str], trace: bool) -> tuple[float, int, int]:
        """Write one organisation per name (``acme`` for one) and sync; seconds, bytes before, bytes added."""
        packages = folder / "packages"
        before = tree_size(packages)
        for number, name in enumerate(names):
            write_requirements(folder / "repo" / "orgs" / ("acme" if len(names) == 1 else f"org{number:02d}"), [name])
        seconds = traced_sync(env, folder, phases) if trace else run([PY, "-m", "bootstrap", "sync"], env, folder)
        return seconds, before, tree_size(packages) - before

    def add_one(backend: str, **extra: str) -> float:
        folder, env = workspace(**extra)
        run([PY, "-m", "bootstrap", "sync"], env, folder)  # the synced workspace: not measured
        seconds, before, added = add_orgs(folder, env, ORG_PACKAGES[:1], trace=not extra)
        generation = json.loads((folder / "packages" / "manifest.json").read_text())["generation"]
        disk.setdefault(backend, []).append(
            (added, before, tree_size(folder / "packages" / "generations" / generation))
        )
        org = json.loads((folder / "packages" / "orgs" / "acme" / "manifest.json").read_text())
        assert org["org"] == "acme" and org["generation"], org  # the organisation published
        return seconds

    backends: dict[str, dict[str, str]] = {"pip": {}}
    if uv_backend():
        backends["uv"] = {"BOOTSTRAP_BACKEND": "uv"}
    commands: dict[str, Callable[[], float]] = {}
    for backend, extra in backends.items():
        commands[f"add an organisation ({backend})"] = functools.partial(add_one, backend, **extra)
        commands[f"cold workspace sync ({backend})"] = functools.partial(cold, **extra)
    times = interleave(commands, runs, lambda: remove("org-*", work))
    remove("org-*", work)
    report("orgs", "M", source.name, times, [], [])  # prints them all
    for backend in backends:
        mine, base = f"add an organisation ({backend})", f"cold workspace sync ({backend})"
        report("orgs", "M", source.name, {mine: times[mine], base: times[base]}, [mine], [base], show=False)
    for backend, figures in disk.items():
        added = statistics.median(a for a, _, _ in figures)
        whole = statistics.median(f for _, f, _ in figures)
        generation = statistics.median(g for _, _, g in figures)
        ratio = statistics.median(times[f"add an organisation ({backend})"]) / statistics.median(
            times[f"cold workspace sync ({backend})"]
        )
        line = (
            f"  {backend}: time {ratio:.2f}x (goal {ORG_TIME_GOAL}x); the organisation adds {added / 2**20:.2f} MiB: "
            f"{added / whole:.1%} of the workspace's packages folder ({whole / 2**20:.1f} MiB), "
            f"{added / generation:.1%} of its generation ({generation / 2**20:.1f} MiB) (goal {ORG_DISK_GOAL:.0%})"
        )
        note(line.strip())
        RESULTS_DATA.setdefault("orgs_disk", {})[backend] = {
            "added_bytes": added,
            "workspace_folder_bytes": whole,
            "workspace_generation_bytes": generation,
            "runs": len(figures),
        }
    print_phases("steps of the sync that adds the organisation (pip)", phases)
    RESULTS_DATA.setdefault("phases", {})[f"orgs M-{source.name}"] = {
        k: statistics.median(v) for k, v in phases.items()
    }
    for backend, extra in backends.items():  # 20 organisations of one package each, one command: one run
        folder, env = workspace(**extra)
        run([PY, "-m", "bootstrap", "sync"], env, folder)
        seconds, before, added = add_orgs(folder, env, ORG_PACKAGES, trace=False)
        published = sum(
            bool(json.loads(path.read_text()).get("generation"))
            for path in (folder / "packages" / "orgs").glob("*/manifest.json")
        )
        note(
            f"  {backend}: {len(ORG_PACKAGES)} organisations of one package each, one sync (one run): {seconds:.1f}s "
            f"({published} published), {added / 2**20:.1f} MiB added, {added / before:.1%} of the workspace's folder"
        )
        RESULTS_DATA.setdefault("orgs_20", {})[backend] = {"seconds": seconds, "added_bytes": added, "before": before}
        shutil.rmtree(folder, ignore_errors=True)


# --------------------------------------------------------------------------- wheelhouse, table, main


# #17: at most. Its second goal is against building "from the index": the public one where it answers (cold caches,
# as a new instance has them); the local wheelhouse's build (warm pip cache) is shown beside it, and is the goal's
# baseline only when the public index does not answer.
FROM_INDEX = "bootstrap, built from the public index (cold caches)"
FROM_WHEELHOUSE = "bootstrap, built from the wheelhouse"
REMOTE_GOALS = {"download + unpack alone": 1.5, FROM_INDEX: 0.2}
ONLINE = False  # whether the public index answered (make_wheelhouse), set by main
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
# The baseline (a): the archive alone, downloaded and unpacked by a child as bootstrap's sync does it (an interpreter,
# the Azure SDK, one streamed download, tarfile), and nothing else.
DOWNLOAD_PROBE = """\
import io, sys, tarfile
from azure.storage.blob import BlobServiceClient

container, name, target = sys.argv[1:4]
client = BlobServiceClient.from_connection_string(__import__("os").environ["AZURE_STORAGE_CONNECTION_STRING"])
with open(target + ".tar.gz", "wb") as out:
    for chunk in client.get_blob_client(container, name).download_blob().chunks():
        out.write(chunk)
if sys.argv[4:] == ["gnu-tar"]:  # the same, unpacked by GNU tar (C) instead: the fastest plain unpacking here
    import subprocess
    __import__("os").mkdir(target)
    subprocess.run(["tar", "-xzf", target + ".tar.gz", "-C", target], check=True)
else:
    with tarfile.open(target + ".tar.gz", "r:gz") as tar:
        tar.extractall(target, filter="data")
"""


def start_azurite(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("azurite-blob")
    if binary is None:
        raise RuntimeError("azurite-blob is missing: npm install -g azurite@3.33.0")
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    argv = [
        binary,
        "--blobHost",
        "127.0.0.1",
        "--blobPort",
        str(port),
        "--inMemoryPersistence",
        "--skipApiVersionCheck",
    ]
    proc = subprocess.Popen([*argv, "--loose"], cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.1)
    connection = (
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )
    return proc, connection


def bench_remote(work: Path, set_name: str, source: Source, runs: int) -> None:
    """A new instance (empty packages and state folders, no index at all) from the remote cache (Azurite, local),
    against downloading and unpacking the archive alone, building the set from the wheelhouse, and uv from a warm
    local cache."""
    print(f"\n== remote: set {set_name}, a new instance from the remote cache (Azurite on 127.0.0.1) ==")
    requirements = write_requirements(work / f"remote-{set_name}", SETS[set_name])
    tools = Tools(source, requirements)
    azurite, connection = start_azurite(work)
    try:
        remote = {"BOOTSTRAP_REMOTE_CACHE": "azure-blob://bench/remote", "AZURE_STORAGE_CONNECTION_STRING": connection}
        seed = work / f"remote-seed-{set_name}"
        seed.mkdir()
        tools.bootstrap(seed, source.env(seed), None, **remote)  # instance A: builds, and uploads in the background
        generation = json.loads((seed / "packages" / "manifest.json").read_text())["generation"]
        upload = [PY, "-m", "bootstrap", "upload", "--generation", generation]  # waits for A's upload (its claim)
        run(upload, {**source.env(seed), **remote, "BOOTSTRAP_PACKAGES_DIR": str(seed / "packages")}, seed)
        archive = f"remote/v1/generations/{generation}/archive.tar.gz"
        uv_cache = work / f"remote-uv-{set_name}"
        uv_cache.mkdir()
        tools.uv(uv_cache, source.env(uv_cache))  # warms uv's cache
        counter = iter(range(10**6))

        def folder() -> Path:
            path = work / f"run-{next(counter)}"
            path.mkdir()
            return path

        def from_cache() -> float:
            where = folder()
            env = {**clean_env(PIP_NO_INDEX="1", XDG_CACHE_HOME=str(where / "xdg")), **remote}
            seconds = tools.bootstrap(where, env, None, BOOTSTRAP_STATE_DIR=str(where / "state"))
            data = json.loads((where / "packages" / "manifest.json").read_text())
            assert data["origin"] == "remote-cache", data["origin"]
            return seconds

        def download_alone(*how: str) -> float:
            where = folder()
            env = clean_env(AZURE_STORAGE_CONNECTION_STRING=connection)
            return run([PY, "-c", DOWNLOAD_PROBE, "bench", archive, str(where / "g"), *how], env, where)

        def from_index() -> float:
            where = folder()
            return tools.bootstrap(where, Source("public", CACHE / "wheelhouse").env(where), None)

        commands: dict[str, Callable[[], float]] = {
            "bootstrap, from the remote cache": from_cache,
            "download + unpack alone": download_alone,
            "download + unpack by GNU tar": lambda: download_alone("gnu-tar"),
            FROM_WHEELHOUSE: lambda: tools.bootstrap(folder(), source.env(seed), None),
            "uv pip compile + install, warm cache": lambda: tools.uv(folder(), source.env(uv_cache)),
        }
        if ONLINE:
            commands[FROM_INDEX] = from_index
        times = interleave(commands, runs, lambda: remove("run-*", work))
        remove("run-*", work)
        ours = ["bootstrap, from the remote cache"]
        report("remote", set_name, source.name, times, ours, [name for name in commands if name not in ours])
        mine = statistics.median(times[ours[0]])
        goals = dict(REMOTE_GOALS) if ONLINE else {"download + unpack alone": 1.5, FROM_WHEELHOUSE: 0.2}
        for base, goal in goals.items():
            ratio = mine / statistics.median(times[base])
            verdict = "met" if ratio <= goal else "NOT met"
            print(f"  goal: from the cache <= {goal}x {base}: {ratio:.2f}x ({verdict})")
    finally:
        azurite.terminate()
        azurite.wait(timeout=10)


def make_wheelhouse(sets: Sequence[str]) -> tuple[Path, bool]:
    """Download the sets (and the added package) once; return the folder and whether the public index answered.

    The host's own distributions constrain the download as they constrain bootstrap's
    resolutions (pydantic, markupsafe, ... at the host's versions), so every resolution
    bootstrap makes from the wheelhouse finds its pins there.
    """
    from bootstrap.inputs import host

    wheelhouse = CACHE / "wheelhouse"
    CACHE.mkdir(exist_ok=True)
    constraints = CACHE / "host-constraints.txt"
    found = host.scan(CACHE / "no-packages")
    constraints.write_text(host.constraints_text({**found.packages, **found.tools}, frozenset()))
    names = sorted({name for s in sets if s in SETS for name in SETS[s]} | {ADDED, *ADDED_TO.values(), *ORG_PACKAGES})
    argv = [PY, "-m", "pip", "download", "-q", "--only-binary", ":all:", "-d", str(wheelhouse), "-c", str(constraints)]
    env = clean_env(PIP_INDEX_URL=PUBLIC_INDEX, XDG_CACHE_HOME=str(CACHE / "dl-cache"))
    try:
        run([*argv, *names], env, BENCH, 600)
        return wheelhouse, True
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"the public index is unreachable ({str(exc).strip().splitlines()[-1][:200]})")
        if all(any(wheelhouse.glob(f"{n.replace('-', '_')}-*")) for n in names if n != "pyyaml"):
            print("using the wheelhouse downloaded by an earlier run")
            return wheelhouse, False
        print("building the wheelhouse with this machine's own pip configuration instead")
        run([*argv, *names], dict(os.environ), BENCH, 600)
        return wheelhouse, False


def table(rows: list[Row]) -> str:
    lines = [
        "| row | set | source | bootstrap | median s | baseline | median s | ratio | CPU ratio | peak memory ratio |",
        "|---|---|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "na" in r:
            lines.append(
                f"| {r['row']} | {r['set']} | {r['source']} | {r['bootstrap']} | {r['na']} | - | - | - | - | - |"
            )
            continue
        cpu = f"{r['cpu_ratio']:.2f}x" if "cpu_ratio" in r else "-"
        peak = (
            f"{r['peak_mib_ratio']:.2f}x ({r['bootstrap_peak_mib']:.0f}/{r['baseline_peak_mib']:.0f} MiB)"
            if "peak_mib_ratio" in r
            else "-"
        )
        lines.append(
            f"| {r['row']} | {r['set']} | {r['source']} | {r['bootstrap']} | {r['bootstrap_median']:.3f} | "
            f"{r['baseline']} | {r['baseline_median']:.3f} | {r['ratio']:.2f}x | {cpu} | {peak} |"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    tools = {}
    for name, argv in (
        ("pip", [PY, "-m", "pip", "--version"]),
        ("pip-tools", [PY, "-m", "piptools", "compile", "--version"]),
        ("uv", [UV, "--version"]),
    ):
        try:
            tools[name] = subprocess.run(argv, capture_output=True, text=True, env=clean_env()).stdout.strip()
        except OSError:
            tools[name] = "not installed"
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "interpreter": PY,
        "platform": platform.platform(),
        "tools": tools,
        "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE"),
    }


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default="S,M", help="comma-separated: S, M, L (default S,M; L adds ~20 min)")
    parser.add_argument("--rows", default=",".join(ALL_ROWS), help=f"comma-separated, of {','.join(ALL_ROWS)}")
    parser.add_argument("--sources", default="wheelhouse,public", help="comma-separated: wheelhouse, public")
    parser.add_argument(
        "--public-rows",
        default="cold",
        help="of the rows asked for, those also run from the public index (default cold: the rest "
        "measure the same work with the network added, and M from the public index is the slow part); 'all' for all",
    )
    parser.add_argument("--repeat", "--runs", type=int, default=None, help="runs per command (default 3)")
    parser.add_argument("--quick", action="store_true", help="repeat 3 (unless given), skip the public index")
    args = parser.parse_args()
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    if args.quick:
        sources = [s for s in sources if s != "public"]
    for value, allowed in ((sets, SETS), (rows, ALL_ROWS), (sources, ("wheelhouse", "public"))):
        bad = [v for v in value if v not in allowed]
        if bad:
            parser.error(f"unknown {bad}; choose from {list(allowed)}")
    runs = args.repeat or 3
    public_rows = ALL_ROWS if args.public_rows == "all" else [r.strip() for r in args.public_rows.split(",")]
    started = time.monotonic()
    info = machine()
    RESULTS_DATA["machine"] = info
    RESULTS_DATA["args"] = {
        "sets": sets,
        "rows": rows,
        "sources": sources,
        "public_rows": list(public_rows),
        "repeat": runs,
    }
    RESULTS_DATA["started_at"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    print(f"machine: {info['cores']} cores, {info['cpu']}, Python {info['python']} ({PY}), {info['platform']}")
    print(f"tools: {'; '.join(info['tools'].values())}")
    print(
        f"sets {','.join(sets)}; rows {','.join(rows)}; sources {','.join(sources)} (public index: "
        f"{','.join(r for r in rows if r in public_rows)}); {runs} runs per command; "
        "medians; order rotated every round"
    )
    load_before = load_average()
    busy = os.getloadavg()[0] > 0.5 * (os.cpu_count() or 1)
    print(f"load average: {load_before}" + (" -- the machine is busy: expect noise" if busy else ""))
    if not Path(UV).exists() and any(r in rows for r in ("cold", "warm")):
        print(f"uv is not installed ({UV}): `.venv/bin/pip install uv`")
        return 2
    if "import" in rows and "M" not in sets:
        print("(import row skipped: it needs set M, which holds pandas)")
    with tempfile.TemporaryDirectory(prefix="bootstrap-bench-") as folder:
        work = Path(folder)
        RESULTS_DATA["code"] = code = take_snapshot(work)
        changed = f", uncommitted changes: {' '.join(code['uncommitted_changes_in_bootstrap'])}"
        print(
            f"code: a snapshot of bootstrap/ at {code['head']}"
            + (changed if code["uncommitted_changes_in_bootstrap"] else "")
        )
        needed = {"S"} if "share" in rows or "execute" in rows else set()
        needed |= {"M"} if "orgs" in rows else set()  # its workspace, ORGS_WORKSPACE
        global ONLINE
        wheelhouse, online = make_wheelhouse(sorted(set(sets) | needed))
        ONLINE = online
        print(f"wheelhouse: {len(list(wheelhouse.iterdir()))} files in {wheelhouse}")
        if "startup" in rows:
            bench_startup(work, wheelhouse, max(18, 6 * runs), sets)
        for set_name in sets:
            for source_name in sources:
                if source_name == "public" and not online:
                    print(f"\n(public index skipped for set {set_name}: unreachable)")
                    continue
                source = Source(source_name, wheelhouse)
                rows_here = (("cold", bench_cold), ("warm", bench_warm), ("incremental", bench_incremental))
                rows_here += (("remote", bench_remote),) if source_name == "wheelhouse" else ()
                for row, bench in rows_here:
                    if row not in rows or (source_name == "public" and row not in public_rows):
                        continue
                    try:
                        bench(work, set_name, source, runs)
                    except (RuntimeError, subprocess.TimeoutExpired) as exc:
                        why = str(exc).strip().splitlines()[-1][:300]
                        note(f"({row} {set_name} {source_name} skipped: a command failed: {why})")
        if "hashes" in rows and "public" in sources and online:
            try:
                bench_hashes(work, Source("public", wheelhouse), runs)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                note(f"(hashes skipped: a command failed: {str(exc).strip().splitlines()[-1][:300]})")
        if "import" in rows and "M" in sets:
            bench_import(work, wheelhouse, max(5, 3 * runs))
        if "execute" in rows:
            try:
                bench_execute(work, wheelhouse, runs)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                note(f"(execute skipped: a command failed: {str(exc).strip().splitlines()[-1][:300]})")
        if "share" in rows:
            try:
                bench_share(work, wheelhouse, runs)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                note(f"(share skipped: a command failed: {str(exc).strip().splitlines()[-1][:300]})")
        if "orgs" in rows:
            try:
                bench_orgs(work, Source("wheelhouse", wheelhouse), runs)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:
                note(f"(orgs skipped: a command failed: {str(exc).strip().splitlines()[-1][:300]})")
    print("\n" + table(RESULTS_DATA["rows"]))
    busy = busy or os.getloadavg()[0] > 1 + 0.5 * (os.cpu_count() or 1)  # the bench itself adds ~1
    elapsed = time.monotonic() - started
    print(f"\nmachine: {info['cores']} cores, {info['cpu']}, Python {info['python']}; took {elapsed / 60:.1f} min")
    print(f"load average at the start {load_before}, at the end {load_average()}", end="")
    print(" (other work on the machine skews the ratios: rerun when it is idle)" if busy else "")
    RESULTS_DATA["elapsed_s"] = round(elapsed, 1)
    RESULTS_DATA["load_average"] = {"start": load_before, "end": load_average()}
    RESULTS.write_text(json.dumps(RESULTS_DATA, indent=2) + "\n")
    print(f"written: {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
