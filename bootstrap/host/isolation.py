"""Whether an org's workflow may run in this process, and keeping its own packages its own when it does.

``sys.modules`` is process-wide: one process can serve several orgs only where
their versions agree with what it can import. ``admit`` decides, per org
generation. Every distribution in the org's site that this process can already
import (its ``sys.path``: the host's site-packages, the active workspace
generation) must have the same version there, and every other one (the org's
"private" distributions) must be unclaimed or claimed at the same version by
the in-process orgs admitted so far. The claim is taken under a lock at the
moment of admission, so two orgs with different versions of one private package
can never both be in-process. A private distribution whose top-level name this
process also provides (a namespace package such as ``azure``, ``google``) cannot
be served by a top-level finder (the process's own would win, or be mixed with
the org's in one ``__path__``): that org runs in a worker too.

Inside an admitted org's execution (``running``, a ``contextvars`` value) a
meta-path finder serves its private top-level names from its generation's
site, and ``importlib.metadata`` sees its private distributions. A finder
alone does not hide what is already in ``sys.modules``, so once an org is in,
``builtins.__import__`` and ``importlib.import_module`` are wrapped: an
absolute import whose top-level name is an org's private module raises
``ModuleNotFoundError`` outside that org's executions (one dict look-up per
import otherwise; relative imports pass).

Limits: a thread a workflow starts runs outside the org's execution unless it
is started in a copy of the context (``contextvars.copy_context().run``);
code that bound ``import_module`` before the wrappers came (``from importlib
import import_module`` at its import), ``importlib.util.find_spec``,
``sys.modules[...]`` and ``importlib._bootstrap`` itself are not guarded; and a
claim lasts as long as the process (its modules stay loaded), so an org whose
new generation changes a private version runs in a worker from then on, and a
package the workspace adds later that an in-process org has as its own stays
that org's in this process (hidden from the workspace) until a restart.
"""

from __future__ import annotations

import builtins
import contextvars
import importlib
import os
import sys
import threading
from importlib.machinery import ModuleSpec, PathFinder

from bootstrap.host import state

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays out of the host process's imports
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
    from types import ModuleType
    from typing import Any, TypeVar

    _Found = TypeVar("_Found")  # what ``_along_path`` reads of each folder

IN_PROCESS = "in-process"
PROCESS = "process"


class Admitted:
    """An org generation running in this process: its site, and its private top-level names and
    distributions (normalised name -> dist-info folder name in the site)."""

    __slots__ = ("dist_infos", "generation", "org", "site", "tops")

    def __init__(
        self, org: str, generation: str, site: str, tops: frozenset[str], dist_infos: Mapping[str, str]
    ) -> None:
        self.org = org
        self.generation = generation
        self.site = site
        self.tops = tops
        self.dist_infos = dict(dist_infos)


# The org generation whose execution is running in this context; None: the workspace, or no execution.
running: contextvars.ContextVar[Admitted | None] = contextvars.ContextVar("bootstrap_running_org", default=None)

_lock = threading.Lock()
_admitted: dict[tuple[str, str], Admitted] = {}
_dist_claims: dict[str, str] = {}  # private distribution -> the version in-process orgs run
_top_claims: dict[str, frozenset[tuple[str, str]]] = {}  # private top-level name -> its (dist, version)s
# Private top-level name -> the orgs whose executions may import it. Replaced, never changed in place: the import
# wrapper reads it without the lock.
_owners: dict[str, frozenset[str]] = {}
_installed = False

# A distribution in a folder: normalised name -> (version, top-level names, dist-info folder name).
Dists = dict[str, tuple[str, frozenset[str], str]]
_site_cache: dict[str, Dists] = {}  # generations never change: read once
_entry_cache: dict[str, tuple[int, Dists]] = {}  # a sys.path folder, by its mtime


def admit(org: str, generation: str, site: str) -> tuple[str, str | None, Admitted | None]:
    """``(IN_PROCESS, None, admitted)`` when this org generation may run here (claims taken), else
    ``(PROCESS, reason, None)``; ``reason`` is one line naming the distribution and both versions."""
    admitted = _admitted.get((org, generation))
    ours = distributions_in(site)
    here = process_distributions()
    # What this process has loaded wins over what its path now offers (a switch with a restart pending).
    here.update({normalise(str(item["name"])): str(item["loaded"]) for item in state.current().pending})
    differs = sorted(name for name, found in ours.items() if name in here and here[name] != found[0])
    if differs:
        name = differs[0]
        return PROCESS, f"{name} {ours[name][0]} in the org's set, {here[name]} in this process", None
    if admitted is not None:
        return IN_PROCESS, None, admitted
    private = {name: found for name, found in ours.items() if name not in here}
    tops: dict[str, set[tuple[str, str]]] = {}
    for name, (version, names, _info) in private.items():
        for top in names:
            tops.setdefault(top, set()).add((name, version))
    for top in sorted(tops):
        if top not in _owners and _provided_by_this_process(top):
            return PROCESS, f"{top} is in the org's own packages and also this process's (a shared namespace)", None
    wanted = optional_dependencies()
    for name in sorted(private):
        if name in wanted:  # a shared module importing it would keep the first org's, for every org after
            return PROCESS, f"{name} is in the org's own packages and an optional dependency of {wanted[name]}", None
    with _lock:
        for name, (version, _names, _info) in private.items():
            if _dist_claims.get(name, version) != version:
                return PROCESS, f"{name} {version} in the org's set, {_dist_claims[name]} run here by another org", None
        for top, members in tops.items():
            if _top_claims.get(top, frozenset(members)) != members:
                return PROCESS, f"{top} is provided by other distributions for another org run here", None
        return IN_PROCESS, None, _claim(org, generation, site, private, tops)


def _claim(org: str, generation: str, site: str, private: Dists, tops: dict[str, set[tuple[str, str]]]) -> Admitted:
    """Take the claims (with the lock held) and install the finder and the import guard once."""
    global _installed
    for name, (version, _names, _info) in private.items():
        _dist_claims[name] = version
    for top, members in tops.items():
        _top_claims[top] = frozenset(members)
        _owners[top] = _owners.get(top, frozenset()) | {org}
    admitted = Admitted(
        org, generation, site, frozenset(tops), {name: info for name, (_v, _n, info) in private.items()}
    )
    _admitted[(org, generation)] = admitted
    if not _installed:
        sys.meta_path.append(FINDER)
        builtins.__import__ = _guarded_import
        importlib.import_module = _guarded_import_module
        _installed = True
    return admitted


def generations_admitted(org: str) -> list[str]:
    """The generations of ``org`` this process runs in-process (for its registry record)."""
    return sorted(generation for (owner, generation) in list(_admitted) if owner == org)


def reset() -> None:
    """Tests: forget every admission and claim, unload the orgs' private modules, take the finder and the
    import guard out. A host never calls it (an org's modules may still be in use)."""
    global _installed
    with _lock:
        for name in [name for name in sys.modules if name.partition(".")[0] in _owners]:
            del sys.modules[name]
        _admitted.clear()
        _dist_claims.clear()
        _top_claims.clear()
        _owners.clear()
        if _installed:
            sys.meta_path.remove(FINDER)
            builtins.__import__ = _original_import
            importlib.import_module = _original_import_module
            _installed = False


def _provided_by_this_process(top: str) -> bool:
    if top in sys.modules or top in sys.builtin_module_names or top in sys.stdlib_module_names:
        return True
    try:
        return PathFinder.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


# --------------------------------------------------------------------------- the finder and the guard


class OrgFinder:
    """Serves the running org's private top-level names from its generation's site (submodules then come
    through the package's ``__path__``), and its private distributions to ``importlib.metadata``."""

    @classmethod
    def find_spec(
        cls, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        admitted = running.get()
        if admitted is None or path is not None or name not in admitted.tops:
            return None
        return PathFinder.find_spec(name, [admitted.site])

    @classmethod
    def find_distributions(cls, context: Any = None) -> Iterator[Any]:
        admitted = running.get()
        if admitted is None:
            return iter(())
        import pathlib  # slow path: only importlib.metadata asks, inside an org's execution
        from importlib.metadata import PathDistribution

        wanted = getattr(context, "name", None)
        chosen = normalise(wanted) if wanted else None
        return iter(
            PathDistribution(pathlib.Path(admitted.site, info))
            for name, info in admitted.dist_infos.items()
            if chosen is None or name == chosen
        )

    @classmethod
    def invalidate_caches(cls) -> None:
        pass


FINDER = OrgFinder()
_original_import = builtins.__import__
_original_import_module = importlib.import_module


def _refuse(name: str) -> None:
    """Raise ModuleNotFoundError when ``name`` is an org's private module and that org is not running."""
    top = name.partition(".")[0]
    owners = _owners.get(top)
    if owners is not None:
        admitted = running.get()
        if admitted is None or admitted.org not in owners:
            raise ModuleNotFoundError(f"No module named {top!r}", name=top)


def _guarded_import(
    name: str,
    globals: Mapping[str, object] | None = None,
    locals: Mapping[str, object] | None = None,
    fromlist: Sequence[str] | None = (),
    level: int = 0,
) -> ModuleType:
    if level == 0 and name.partition(".")[0] in _owners:
        _refuse(name)
    return _original_import(name, globals, locals, fromlist or (), level)


def _guarded_import_module(name: str, package: str | None = None) -> ModuleType:
    if not name.startswith("."):
        _refuse(name)
    return _original_import_module(name, package)


# --------------------------------------------------------------------------- what a folder holds


def distributions_in(site: str) -> Dists:
    """The distributions of a generation's site (read once: a generation never changes)."""
    found = _site_cache.get(site)
    if found is None:
        found = _site_cache[site] = _read_folder(site)
    return found


def process_distributions(entries: Iterable[str] | None = None) -> dict[str, str]:
    """What this process can import: normalised name -> version, the first along ``sys.path`` winning."""
    versions: dict[str, str] = {}
    for found in _along_path(entries, _entry_cache, _read_folder):
        versions.update({name: version for name, (version, _tops, _info) in found.items()})
    return versions


def _along_path(
    entries: Iterable[str] | None, cache: dict[str, tuple[int, _Found]], read: Callable[[str], _Found]
) -> Iterator[_Found]:
    """``read`` of each folder of ``entries`` (default ``sys.path``), last first (so the first wins an
    ``update``), kept in ``cache`` by the folder's mtime: a distribution installed or removed changes it."""
    for entry in reversed(list(sys.path if entries is None else entries)):
        folder = os.path.abspath(entry or os.curdir)
        try:
            stamp = os.stat(folder).st_mtime_ns
        except OSError:
            continue
        cached = cache.get(folder)
        if cached is None or cached[0] != stamp:
            cached = cache[folder] = (stamp, read(folder))
        yield cached[1]


_wanted_cache: dict[str, tuple[int, dict[str, str]]] = {}  # a sys.path folder, by its mtime (``_along_path``)


def optional_dependencies(entries: Iterable[str] | None = None) -> dict[str, str]:
    """The distributions that what this process can import asks for under an extra (``Requires-Dist: x;
    extra == "..."``): normalised name -> who asks. A shared module may import such a package when it finds it
    (pandas' ``tabulate``) and keep it: an org that has one of its own runs in a worker, so that whether the
    shared module found it never depends on which org ran first."""
    wanted: dict[str, str] = {}
    for found in _along_path(entries, _wanted_cache, _optional_in):
        wanted.update(found)
    return wanted


def _optional_in(folder: str) -> dict[str, str]:
    try:
        names = sorted(name for name in os.listdir(folder) if name.endswith(".dist-info"))
    except OSError:
        return {}
    wanted: dict[str, str] = {}
    for info in names:
        try:
            with open(os.path.join(folder, info, "METADATA"), encoding="utf-8", errors="replace") as file:
                for line in file:
                    if not line.strip():
                        break
                    key, _, value = line.partition(":")
                    requirement, _, marker = value.partition(";")
                    if key.lower() == "requires-dist" and "extra" in marker:
                        name = requirement.strip().split("[")[0].split("(")[0]
                        for stop in " <>=!~":
                            name = name.split(stop)[0]
                        if name:
                            wanted.setdefault(normalise(name), info[: -len(".dist-info")].rpartition("-")[0])
        except OSError:
            continue
    return wanted


def _read_folder(folder: str) -> Dists:
    try:
        names = os.listdir(folder)
    except OSError:  # not a folder (a zip), gone
        return {}
    found: Dists = {}
    for info in sorted(names):
        if not info.endswith(".dist-info"):
            continue
        meta = _metadata(os.path.join(folder, info))
        if meta is not None:
            found.setdefault(normalise(meta[0]), (meta[1], _top_levels(os.path.join(folder, info)), info))
    return found


def _metadata(dist_info: str) -> tuple[str, str] | None:
    """``(Name, Version)`` from a dist-info's METADATA headers."""
    name = version = None
    try:
        with open(os.path.join(dist_info, "METADATA"), encoding="utf-8", errors="replace") as file:
            for line in file:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                if key.lower() == "name":
                    name = value.strip()
                elif key.lower() == "version":
                    version = value.strip()
    except OSError:
        return None
    return (name, version) if name and version else None


def _top_levels(dist_info: str) -> frozenset[str]:
    """The top-level import names a distribution installs: its ``top_level.txt``, else its RECORD."""
    try:
        with open(os.path.join(dist_info, "top_level.txt"), encoding="utf-8") as file:
            return frozenset(line.strip().split("/")[0] for line in file if line.strip())
    except OSError:
        pass
    tops: set[str] = set()
    try:
        with open(os.path.join(dist_info, "RECORD"), encoding="utf-8", errors="replace") as file:
            paths = [line.split(",", 1)[0].strip('"') for line in file]
    except OSError:
        return frozenset()
    for path in paths:
        first, slash, _rest = path.partition("/")
        if slash:
            if first not in ("..", "__pycache__") and not first.endswith((".dist-info", ".data")):
                tops.add(first)
        elif first.endswith((".py", ".so", ".pyd")):
            tops.add(first.partition(".")[0])
    return frozenset(top for top in tops if top.isidentifier())


def normalise(name: str) -> str:
    """A distribution name as PEP 503 compares them (``jaraco.functools`` -> ``jaraco-functools``)."""
    text = name.lower().replace("_", "-").replace(".", "-")
    while "--" in text:
        text = text.replace("--", "-")
    return text
