"""Verify a generation before it goes live (and report on one that is live).

The checks: the installed set is exactly the lock (one dist-info per
distribution, nothing missing, nothing extra, no file that two distributions
install with different contents, nothing named ``bootstrap``); every
distribution's own requirements are met inside the set; every file each
distribution's RECORD lists is present; and each top-level module imports, in
child processes (one per core, each importing whole distributions), so a
broken package never reaches the host. Before the imports every file is made
read-only, and after them every file's stat must be as it was: what the host
imports is exactly what was verified, and an import that writes to a file
hard-linked from the active generation is caught, not published (so is a
``.pth`` an import writes: it would run in every host).
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import logging
import os
import signal
import stat
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from bootstrap.errors import CommandError, VerificationError
from bootstrap.inputs.requirements import parse_requires_dist
from bootstrap.store import layers
from bootstrap.store.fs import counted
from bootstrap.store.records import Distribution, installed, missing_files, shared_files
from bootstrap.tools import runner

log = logging.getLogger("bootstrap")

# The name hosts and the import check import bootstrap itself by: a distribution must not ship it.
OWN_TOP_LEVEL = __name__.split(".")[0]

_RESULT_MARK = "BOOTSTRAP-IMPORT-RESULT:"
_IMPORTING_MARK = "BOOTSTRAP-IMPORTING:"
# Of what a child prints, the last part is kept (a module may print without end), and both marks, always.
_OUTPUT_LIMIT = 256 * 1024
# Each import is announced (flushed) before it starts, so a child that dies (a segfault in a C extension,
# os._exit) or hangs still tells which module it was in. `out` is kept: a module may replace sys.stdout.
# The leading newline keeps a mark at a line start after a module's own unfinished output.
_IMPORT_SCRIPT = f"""
import importlib, json, os, site, sys
out = sys.stdout
def say(text):
    out.write("\\n" + text + "\\n")
    out.flush()
sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd())]
if sys.argv[2] == "first":  # as the host will: before its site-packages when it holds its own copy of theirs
    sys.path.insert(0, sys.argv[1])
site.addsitedir(sys.argv[1])
failed = {{}}
for name in sys.argv[3:]:
    say({_IMPORTING_MARK!r} + name)
    try:
        importlib.import_module(name)
    except BaseException as exc:
        missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
        failed[name] = [(type(exc).__name__ + ": " + str(exc)).splitlines()[0][:300], missing]
say({_RESULT_MARK!r} + json.dumps(failed))
"""


def check_set(dists: list[Distribution], expected: Mapping[str, str | None]) -> None:
    """The installed set must be exactly ``expected`` ({canonical name: version, or None for a URL pin})."""
    seen: dict[str, str] = {}
    for dist in dists:
        if dist.name in seen:
            raise VerificationError(f"{dist.display_name} is installed twice ({seen[dist.name]} and {dist.version})")
        seen[dist.name] = dist.version
    problems = [
        f"{name} {version or ''} is missing".replace("  ", " ")
        for name, version in expected.items()
        if name not in seen
    ]
    problems += [
        f"{name} is {seen[name]}, not {version}"
        for name, version in expected.items()
        if name in seen and version is not None and not _same_version(seen[name], version)
    ]
    problems += [f"{name} {version} was not asked for" for name, version in seen.items() if name not in expected]
    if problems:
        raise VerificationError("the installed set differs from the lock: " + "; ".join(sorted(problems)))


def check_shared_files(dists: list[Distribution]) -> None:
    """No file may be installed by two distributions with different contents (opencv-python and
    opencv-python-headless both ship ``cv2``): whichever was installed last would serve, pip's and uv's
    differently. Checked from their RECORDs, so the rule is the same on every path a generation is built by.
    """
    conflicts = shared_files(dists)
    if conflicts:
        path, one, other = conflicts[0]
        first, second = sorted((one, other), key=lambda dist: dist.name)
        raise VerificationError(
            f"{first.display_name} {first.version} and {second.display_name} {second.version} both install "
            f"{path}: keep one of them in requirements.txt"
        )


def check_own_name(dists: list[Distribution]) -> None:
    """No distribution may ship a top-level ``bootstrap``: the import check would import the host's own
    instead of testing it, and a host would get one or the other depending on ``sys.path``."""
    for dist in dists:
        if any(module.split(".")[0] == OWN_TOP_LEVEL for module in dist.modules()):
            raise VerificationError(
                f"{dist.display_name} {dist.version} installs a top-level module named {OWN_TOP_LEVEL}, which "
                f"would shadow {OWN_TOP_LEVEL} itself (the package manager) or be shadowed by it; drop it "
                "from requirements.txt"
            )


def _same_version(one: str, other: str) -> bool:
    """Equal as versions: metadata may say ``1.0.0-rc1`` where the lock says ``1.0.0rc1``, or ``1.0.0`` for ``1.0``."""
    try:
        return Version(one) == Version(other)
    except InvalidVersion:
        return one == other


def check_dependencies(dists: list[Distribution], provided: Mapping[str, str] | None = None) -> None:
    """Every distribution's requirements (markers for this interpreter) must be met inside the set.

    A requirement needed only for an extra is skipped unless a distribution in the set asks for that extra
    (``lib[cli]``): then it is checked too. A requirement or version that cannot be parsed is not judged.
    """
    by_name = {dist.name: dist for dist in dists}
    problems: set[str] = set()
    for dist, raw, requirement in _applying_requirements(dists, {}):
        if requirement is None:
            log.warning("%s %s: cannot parse its requirement %r", dist.display_name, dist.version, raw)
            continue
        needed = by_name.get(canonicalize_name(requirement.name))
        what = f"{dist.display_name} {dist.version} requires {requirement}"
        host_version = (provided or {}).get(canonicalize_name(requirement.name))
        if needed is None and host_version is not None:  # the host provides it
            if not _satisfies(host_version, requirement):
                problems.add(f"{what}, but the host has {requirement.name} {host_version}")
            continue
        if needed is None:
            problems.add(f"{what}, but {canonicalize_name(requirement.name)} is not in the set")
            continue
        if not _satisfies(needed.version, requirement):
            problems.add(f"{what}, but {needed.display_name} {needed.version} is installed")
    if problems:
        raise VerificationError("the installed set is inconsistent: " + "; ".join(sorted(problems)))


def _satisfies(version: str, requirement: Requirement) -> bool:
    try:
        return requirement.specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return True  # not a version packaging knows: nothing to compare it with


def check_imports(
    site_dir: Path,
    dists: list[Distribution],
    *,
    skip: frozenset[str],
    timeout: float,
    provides: frozenset[str] | None = None,
    first: bool = False,
    processes: int | None = None,
) -> None:
    """Import every top-level module of every distribution (but the skipped) in child processes.

    One child per core (or ``processes``), each importing whole distributions (shared out by size), at once:
    the import check is the largest step of a sync after bytecode, and on a cold host
    without ``.pyc`` mostly compiling. A child that dies or hangs stops the others.

    A module that fails only because it imports one that nothing provides (neither a
    distribution of the set, ``provides``: their top-level names, nor the host) is an
    optional part (ipython's ``matplotlib_inline`` without matplotlib): a warning, not a failure.
    """
    owner: dict[str, Distribution] = {}
    for dist in _to_import(dists, skip, tell=True):
        for module in dist.modules():
            owner.setdefault(module, dist)
    if not owner:
        return
    groups = _share_out(owner, processes or runner.cores())
    log.info(
        "import-checking %d module%s (%d process%s)",
        len(owner),
        "" if len(owner) == 1 else "s",
        len(groups),
        "" if len(groups) == 1 else "es",
    )
    # -B: importing never writes bytecode, so a .pyc a wheel ships (listed in its RECORD) stays as shipped.
    place = "first" if first else "last"  # where the host puts the generation on sys.path (host.activation)
    argvs = [[sys.executable, "-B", "-c", _IMPORT_SCRIPT, str(site_dir), place, *group] for group in groups]
    completed = _run_children(argvs, site_dir, timeout, owner)
    failed = _failed_imports(completed, owner, provides if provides is not None else _top_modules(dists))
    if failed:
        details = "; ".join(
            f"{owner[module].display_name} {owner[module].version}: import {module} failed ({error})"
            for module, error in sorted(failed.items())
        )
        names = ",".join(sorted({owner[module].name for module in failed}))
        raise VerificationError(
            f"{details}. If the package needs configuration to import, set BOOTSTRAP_SKIP_IMPORT_CHECK={names}"
        )


def _to_import(dists: list[Distribution], skip: frozenset[str], *, tell: bool = False) -> list[Distribution]:
    """The distributions whose modules the import check imports: those with modules, but the skipped."""
    skipped = {canonicalize_name(name) for name in skip}  # `Foo_Bar` in the setting means foo-bar
    for dist in dists:
        if tell and dist.name in skipped:
            log.info("not import-checking %s (BOOTSTRAP_SKIP_IMPORT_CHECK)", dist.display_name)
    return [dist for dist in dists if dist.name not in skipped and dist.modules()]


def _run_children(
    argvs: list[list[str]], site_dir: Path, timeout: float, owner: dict[str, Distribution]
) -> list[runner.Completed]:
    """Run the import-check children at once; the first that dies or hangs stops the others and is named."""
    killed_before = runner.oom_kills()
    outcomes = runner.run_all(
        argvs,
        cwd=site_dir.parent,
        timeout=timeout,
        stop_on_failure=True,
        limit=_OUTPUT_LIMIT,
        keep=(_IMPORTING_MARK, _RESULT_MARK),
    )
    if outcomes.failures:
        exc = outcomes.failures[0]  # the cause: the others were stopped because of it
        if not isinstance(exc, CommandError):
            raise exc  # it could not start (OSError: out of processes or memory): no check is no pass
        if exc.timed_out:  # never exc.message below: it would quote the whole script
            raise VerificationError(
                _died("timed out", exc.stdout, owner, "raise BOOTSTRAP_IMPORT_CHECK_TIMEOUT")
            ) from exc
        if exc.returncode == -signal.SIGKILL:  # nothing of ours sends it first: the kernel, for memory
            sure = runner.oom_kills() > killed_before
            what = "was killed by the kernel: out of memory" if sure else "was killed (SIGKILL: out of memory?)"
            raise VerificationError(_died(what, exc.stdout, owner, _LESS_MEMORY)) from exc
        raise VerificationError(_died(f"crashed ({exc.ending})", exc.stdout, owner)) from exc
    return outcomes.completed


_LESS_MEMORY = (
    "set BOOTSTRAP_IMPORT_CHECK_PROCESSES=1 (one process imports what the packages share once: less memory), or "
    "give the host more memory"
)


def _failed_imports(
    completed: list[runner.Completed], owner: dict[str, Distribution], provides: frozenset[str]
) -> dict[str, str]:
    """``{module: why}`` of the imports that failed, from the children's reports; optional parts only warn."""
    failed: dict[str, str] = {}
    for outcome in completed:
        result_line = _last_marked(outcome.stdout, _RESULT_MARK)
        if result_line is None:  # os._exit(0) at import
            raise VerificationError(_died("ended early (exit code 0)", outcome.stdout, owner))
        for module, (error, missing) in json.loads(result_line).items():
            if not missing or not _provided_by_nothing(missing, provides):
                failed[module] = error
                continue
            dist = owner[module]
            log.warning(
                "%s %s: import %s needs %s, which nothing in the set or the host provides: left as an optional "
                "part (add the package that provides %s to use it)",
                dist.display_name,
                dist.version,
                module,
                missing,
                missing.split(".")[0],
            )
    return failed


def _top_modules(dists: list[Distribution]) -> frozenset[str]:
    return frozenset(module.split(".")[0] for dist in dists for module in dist.modules())


def _provided_by_nothing(missing: str, provides: frozenset[str]) -> bool:
    """Whether no distribution of the set and nothing the host can import (its standard library too) has it."""
    top = missing.split(".")[0]
    if top in provides:
        return False
    try:
        return importlib.util.find_spec(top) is None
    except (ImportError, ValueError):  # a broken host package: not for the set to excuse
        return False


def import_check_processes(setting: int | None, *, compiled: bool) -> int:
    """The import check's children: ``BOOTSTRAP_IMPORT_CHECK_PROCESSES``, else one where the set has its bytecode,
    else one per core. Each child imports again what the packages share: on set M with bytecode two took as
    long as one, 8% more CPU and 1.3x the memory (on set L, 1.6x); compiling in memory as they import (no
    bytecode), two took 0.65x the time of one."""
    if setting is not None:
        return setting
    return 1 if compiled else runner.cores()


def _share_out(owner: dict[str, Distribution], processes: int) -> list[list[str]]:
    """The modules in ``processes`` groups at most, each distribution whole, balanced by files (a proxy for
    import time)."""
    by_dist: dict[str, list[str]] = {}
    size: dict[str, int] = {}
    for module, dist in owner.items():
        by_dist.setdefault(dist.name, []).append(module)
        size[dist.name] = len(dist.files)
    count = max(1, min(processes, len(by_dist)))
    groups: list[tuple[int, list[str]]] = [(0, []) for _ in range(count)]
    for name in sorted(by_dist, key=lambda name: (-size[name], name)):
        index = min(range(count), key=lambda i: groups[i][0])
        load, modules = groups[index]
        groups[index] = (load + size[name], modules + by_dist[name])
    return [sorted(modules) for _, modules in groups if modules]


def _last_marked(stdout: str, mark: str) -> str | None:
    """What follows ``mark`` on the last line that starts with it."""
    return next((line[len(mark) :] for line in reversed(stdout.splitlines()) if line.startswith(mark)), None)


def _died(what: str, stdout: str, owner: dict[str, Distribution], advice: str = "") -> str:
    """One line: the child died; name the module it was importing and its distribution."""
    module = _last_marked(stdout, _IMPORTING_MARK)
    dist = owner.get(module) if module else None
    if _last_marked(stdout, _RESULT_MARK) is not None:  # every import returned; the exit did not
        where = "after its imports (at interpreter exit: a module's thread or atexit hook?)"
    elif module is None or dist is None:  # a .pth file runs at site.addsitedir, before any import
        where = "before importing any module (a .pth file in the new site folder?)"
    else:
        where = f"while importing {module} from {dist.display_name} {dist.version}"
        advice = f"{advice}, or " if advice else "fix or drop the package, or "
        advice += f"set BOOTSTRAP_SKIP_IMPORT_CHECK={dist.name} if it only works once configured"
    return f"the import check {what} {where}" + (f"; {advice}" if advice else "")


def verify_generation(
    site_dir: Path,
    expected: Mapping[str, str | None],
    *,
    skip: frozenset[str],
    timeout: float,
    provided: Mapping[str, str] | None = None,
    carried: frozenset[str] = frozenset(),
    first: bool = False,
    extras: Mapping[str, frozenset[str]] | None = None,
    processes: int | None = None,
) -> list[Distribution]:
    """All four checks; returns the distributions found.

    ``extras``: the extras the requirement lines ask for, by canonical name (``dask[complete]``).
    ``processes``: the import check's children at most (``BOOTSTRAP_IMPORT_CHECK_PROCESSES``).
    ``carried``: distributions linked over unchanged from a generation that passed
    these checks. Their imports are checked again only if they depend, directly or
    not, on something that did change (an upgraded numpy under an unchanged pandas).
    """
    log.info("verifying the new generation")
    dists = installed(site_dir)
    check_set(dists, expected)
    check_shared_files(dists)
    check_own_name(dists)
    check_dependencies(dists, provided)
    missing = missing_files(site_dir, dists)
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise VerificationError("files listed in RECORD are missing: " + "; ".join(missing[:5]) + more)
    to_check = _affected(dists, carried, extras or {})
    if len(to_check) < len(dists):
        unchanged = counted(len(dists) - len(to_check), "unchanged distribution")
        log.info("%s import-checked before: not checked again", unchanged)
    before = seal(site_dir)
    try:
        check_imports(
            site_dir,
            to_check,
            skip=skip,
            timeout=timeout,
            provides=_top_modules(dists),
            first=first,
            processes=processes,
        )
    finally:  # what an import changed matters more than how it failed: it may have reached another generation
        imported = _to_import(to_check, skip)
        if imported:
            _refuse_changes(site_dir, before, dists, imported, carried)
    return dists


# A file's stat as an import could change it: (inode: replaced, size and mtime: written, permission bits).
Stamp = tuple[int, int, int, int]


def seal(site_dir: Path) -> dict[str, Stamp]:
    """Make every file under ``site_dir`` read-only; return each one's stamp, by its RECORD-style path.

    As Nix's store does (0444, 0555 if executable): a generation's files are never written again, and
    a carried file is a hard link the active generation shares (its mode changes there too: both are
    immutable), so a write fails loudly instead of editing both. Root writes anyway: the stamps are what
    catch that. Folders stay writable, for gc and for the bytecode a host writes for what was not compiled.
    A filesystem that keeps no modes (an SMB share through smbnetfs: chmod "succeeds", nothing changes) is
    found at the first file, and not asked again for every other: each chmod there is a round trip.
    """
    stamps: dict[str, Stamp] = {}
    sealing = os.name == "posix"  # elsewhere (Windows) a read-only file cannot be deleted: gc would fail
    checked = False
    for path, st in _files(site_dir):
        mode = stat.S_IMODE(st.st_mode)
        if sealing and stat.S_ISREG(st.st_mode) and mode & 0o222:
            full = os.path.join(site_dir, path)
            try:
                os.chmod(full, mode & ~0o222)
                if not checked:
                    checked = True
                    sealing = stat.S_IMODE(os.lstat(full).st_mode) == mode & ~0o222
                if sealing:
                    mode &= ~0o222
                else:
                    log.debug("%s keeps no file modes: the stamps alone catch a write", site_dir)
            except OSError as exc:  # not this user's file, a share without modes: the stamps still catch a write
                log.debug("could not make %s read-only (%s)", path, exc.strerror)
        stamps[path] = (st.st_ino, st.st_size, st.st_mtime_ns, mode)
    return stamps


def _stamps(site_dir: Path) -> dict[str, Stamp]:
    return {path: (st.st_ino, st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode)) for path, st in _files(site_dir)}


def _files(site_dir: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every file (and link) under ``site_dir`` with its ``lstat``, by its path relative to it with ``/``;
    and every file in a folder linked to the workspace's generation (``layers.linked_names``): an import that
    makes or changes one there changes that generation, and every set that links it. One at a time: a list of
    set L's 28,000 stat results was 27 MiB of the sync's memory while the import check's child ran."""
    root = str(site_dir)
    walks = [os.walk(root), *(os.walk(os.path.join(root, name)) for name in sorted(layers.linked_names(site_dir)))]
    for folder, _, names in itertools.chain.from_iterable(walks):
        relative = os.path.relpath(folder, root).replace(os.sep, "/")
        for name in names:
            try:
                st = os.lstat(os.path.join(folder, name))
            except FileNotFoundError:  # gone between the listing and the stat: absent
                continue
            yield (name if relative == "." else f"{relative}/{name}", st)


def _refuse_changes(
    site_dir: Path,
    before: dict[str, Stamp],
    dists: list[Distribution],
    imported: list[Distribution],
    carried: frozenset[str],
) -> None:
    """One line if any file under ``site_dir`` is not as it was before the import check: which file, how,
    and whose imports ran.

    A new file in a ``__pycache__`` folder is a cache, not a change: numba's (``cache=True`` functions
    compiled at import), or the bytecode a child process of an import writes. Any other new file is not
    in a RECORD, so it was never verified.
    """
    after = _stamps(site_dir)
    changed = sorted(
        path
        for path in before.keys() | after.keys()
        if before.get(path) != after.get(path) and (path in before or "__pycache__" not in path.split("/"))
    )
    if not changed:
        return
    linked = layers.linked_names(site_dir)  # the workspace's generation's folders: what was made there goes
    for made in (path for path in changed if path not in before and path.partition("/")[0] in linked):
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(site_dir, made))
    path = changed[0]
    old, new = before.get(path), after.get(path)
    if old is None or new is None:
        how = "was created" if old is None else "was removed"
    elif old[0] != new[0]:
        how = "was replaced"
    else:
        how = "had its permissions changed" if old[1:3] == new[1:3] else "was written to"
    owner = next((dist for dist in dists if path in dist.files), None)
    whose = f" of {owner.display_name} {owner.version}" if owner else ""
    names = [f"{dist.display_name} {dist.version}" for dist in imported]
    suspects = names[0] if len(names) == 1 else "one of " + ", ".join(names[:3])
    suspects += f" and {len(names) - 3} more" if len(names) > 3 else ""
    more = f" (and {len(changed) - 1} more file{'' if len(changed) == 2 else 's'})" if len(changed) > 1 else ""
    shared = (
        "; it is shared with the active generation: `python -m bootstrap verify` tells whether that still matches"
        if owner is not None and owner.name in carried
        else ""
    )
    raise VerificationError(
        f"{path}{whose} {how} while importing {suspects}{more}: an import must not change installed files; "
        f"fix or drop the package{shared}"
    )


def _affected(
    dists: list[Distribution], carried: frozenset[str], extras: Mapping[str, frozenset[str]]
) -> list[Distribution]:
    """The distributions that are new, or carried over but depending (transitively) on a new one.

    A dependency counts only where it applies here: its marker holds on this interpreter, for no extra or
    for one that is asked for (``extras``: the requirement lines', ``dask[complete]``; or another
    distribution's, ``lib[cli]``). pandas's ``tabulate; extra == "output-formatting"`` does not make an
    added tabulate re-check pandas and all that stands on it (36 modules, 9 s of a 12 s add on set L)."""
    changed = {dist.name for dist in dists if dist.name not in carried}
    requires: dict[str, set[str]] = {dist.name: set() for dist in dists}
    for dist, _, requirement in _applying_requirements(dists, extras):
        requires[dist.name].add(canonicalize_name(requirement.name) if requirement is not None else "*")
    grew = True
    while grew:  # the reverse-dependency closure of what changed
        grew = False
        for dist in dists:
            if dist.name not in changed and (requires[dist.name] & changed or "*" in requires[dist.name]):
                changed.add(dist.name)
                grew = True
    return [dist for dist in dists if dist.name in changed]


def _applying_requirements(
    dists: list[Distribution], extras: Mapping[str, frozenset[str]]
) -> Iterator[tuple[Distribution, str, Requirement | None]]:
    """Each distribution's requirements that apply here, as written and parsed: marker true for no extra, or
    for an extra asked for (``extras``, or by an applying requirement of another distribution: ``lib[cli]``).
    Parsed as None: one that cannot be parsed (it may depend on anything). Each (distribution, extra) once."""
    by_name = {dist.name: dist for dist in dists}
    todo = [(dist, "") for dist in dists]
    todo += [(by_name[name], extra) for name, asked in extras.items() if name in by_name for extra in asked]
    done: set[tuple[str, str]] = set()
    while todo:
        dist, extra = todo.pop()
        if (dist.name, extra) in done:
            continue
        done.add((dist.name, extra))
        for raw in dist.requires:
            requirement = parse_requires_dist(raw)
            if requirement is None:
                if not extra:  # once per distribution, not per extra
                    yield dist, raw, None
                continue
            if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
                continue
            yield dist, raw, requirement
            needed = by_name.get(canonicalize_name(requirement.name))
            if needed is not None:
                todo.extend((needed, canonicalize_name(name)) for name in requirement.extras)
