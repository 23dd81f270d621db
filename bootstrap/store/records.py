"""A site folder's distributions, read from their dist-info: the one RECORD model and its one path rule.

Every part that reads RECORD files goes through here: building (taking a
distribution out again), reuse (carrying one over), verification (files
present, hashes matching) and the live host (which distribution a loaded
module belongs to). A RECORD path counts as part of the site folder only if
``inside()`` says so: relative, with no ``..`` anywhere. Paths that leave the
folder (``../../bin/tool``: pip's scripts under ``--target``) are not the
importable set and are never linked, checked or removed.

The standard library only: the live host reads these without importing
``packaging`` (bootstrap's own tools must not fix a version in the host).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bootstrap.errors import VerificationError

if TYPE_CHECKING:
    from email.message import Message

_SEPARATORS = re.compile(r"[-_.]+")


def canonical_name(name: str) -> str:
    """A distribution name as PEP 503 compares them (``Foo_Bar`` and ``foo.bar`` are ``foo-bar``)."""
    return _SEPARATORS.sub("-", name).lower()


def inside(path: str) -> bool:
    """The one rule: a RECORD path is part of the site folder when it is relative and never climbs out."""
    return bool(path) and not path.startswith(("/", "\\")) and ".." not in path.replace("\\", "/").split("/")


@dataclass(frozen=True)
class RecordEntry:
    """One row of a RECORD file: ``path,algorithm=digest,size`` (hash and size empty for RECORD itself, .pyc)."""

    path: str
    hash: str = ""
    size: str = ""

    @property
    def inside(self) -> bool:
        return inside(self.path)


@dataclass(frozen=True)
class Distribution:
    name: str  # canonical
    display_name: str
    version: str
    dist_info: Path
    records: tuple[RecordEntry, ...]  # its RECORD, as written
    requires: tuple[str, ...] = ()  # raw Requires-Dist values

    @property
    def files(self) -> tuple[str, ...]:
        """Every RECORD path, relative to the site folder (or leaving it: see ``inside``)."""
        return tuple(entry.path for entry in self.records)

    @property
    def safe_to_link(self) -> bool:
        """Every path is inside the site folder, or one of pip's scripts beside it: nothing reaches elsewhere."""
        return all(entry.inside or entry.path.startswith("../") for entry in self.records)

    def modules(self) -> list[str]:
        """Top-level importable names, from RECORD (descending one level into namespace packages)."""
        files = {entry.path for entry in self.records if entry.inside and "__pycache__" not in entry.path}
        found: set[str] = set()
        for path in files:
            parts = path.split("/")
            if parts[0].endswith((".dist-info", ".data")) or parts[0] in ("bin", "Scripts"):
                continue
            if len(parts) == 1:
                stem = _module_stem(path)
                if stem:
                    found.add(stem)
            elif f"{parts[0]}/__init__.py" in files:
                found.add(parts[0])
            elif len(parts) >= 3 and f"{parts[0]}/{parts[1]}/__init__.py" in files:
                found.add(f"{parts[0]}.{parts[1]}")  # a package inside a namespace package
            elif len(parts) == 2 and _module_stem(parts[1]):
                found.add(f"{parts[0]}.{_module_stem(parts[1])}")
        return sorted(name for name in found if all(part.isidentifier() for part in name.split(".")))


def _module_stem(filename: str) -> str | None:
    if filename.endswith(".py"):
        return filename[:-3]
    if filename.endswith((".so", ".pyd")):
        return filename.split(".", 1)[0]
    return None


def read_record(path: Path) -> tuple[RecordEntry, ...]:
    with open(path, newline="", encoding="utf-8") as handle:
        return tuple(RecordEntry(*[*row, "", ""][:3]) for row in csv.reader(handle) if row)


def named_in_folder(site_dir: Path) -> list[Distribution]:
    """The distributions of ``site_dir`` as their dist-info folders name them (``<name>-<version>.dist-info``):
    one listing, nothing read, no RECORD (for a set comparison; ``installed`` reads them)."""
    found = []
    for entry in sorted(os.listdir(site_dir)):
        if entry.endswith(".dist-info"):
            name, _, version = entry[: -len(".dist-info")].rpartition("-")
            found.append(Distribution(canonical_name(name), name, version, site_dir / entry, ()))
    return found


def metadata_headers(text: str) -> Message:
    """The header block of a METADATA (or PKG-INFO) file, parsed once.

    The description after the first blank line is most of the file (pandas': 100 KiB) and
    nothing here reads it: leaving it out makes the parse about 2x faster, and reading the
    headers once instead of through ``importlib.metadata`` (which parses the whole file again
    for each of ``metadata``, ``version`` and ``requires``) took the host scan from 64 to 24 ms.
    ``text`` is read in text mode (``\r\n`` is already ``\n``).
    """
    from email.parser import HeaderParser  # here: 14 ms of imports a host's switch rarely needs

    head, _, _ = text.partition("\n\n")
    return HeaderParser().parsestr(head)


def installed(site_dir: Path, only: frozenset[str] | None = None) -> list[Distribution]:
    """Every distribution installed in ``site_dir``, from its dist-info; ``only``: these (canonical names, as
    their folders name them) alone."""
    result = []
    for dist_info in sorted(site_dir.glob("*.dist-info")):
        if only is not None and canonical_name(dist_info.name[: -len(".dist-info")].rpartition("-")[0]) not in only:
            continue
        try:
            headers = metadata_headers((dist_info / "METADATA").read_text(encoding="utf-8", errors="replace"))
            records = read_record(dist_info / "RECORD")
        except OSError as exc:
            raise VerificationError(f"{dist_info.name} is incomplete ({exc.strerror}: {exc.filename})") from None
        # One line each: these go into one-line messages (a folded header would not).
        name, version = (" ".join(str(headers.get(key, "")).split()) for key in ("Name", "Version"))
        requires = tuple(str(value).strip() for value in headers.get_all("Requires-Dist") or ())
        result.append(Distribution(canonical_name(name), name, version, dist_info, records, requires))
    return result


def missing_files(site_dir: Path, dists: Iterable[Distribution]) -> list[str]:
    """Files a RECORD lists inside the site folder that are not there."""
    missing = []
    root = str(site_dir)
    for dist in dists:
        for entry in dist.records:
            if entry.inside and not os.path.exists(os.path.join(root, entry.path)):
                missing.append(f"{dist.display_name} {dist.version}: {entry.path}")
    return missing


def shared_files(dists: Iterable[Distribution]) -> list[tuple[str, Distribution, Distribution]]:
    """Files two distributions both list inside the site folder with contents that differ (or that a RECORD
    does not give): ``(path, the first lister, the second)``, in RECORD order.

    Whichever was installed last wins the file, and the other's RECORD no longer holds. The same bytes
    in both (the ``__init__.py`` every portion of an old-style namespace package ships) are no conflict;
    namespace folders are folders, not files. Bytecode follows its source and is not compared.
    """
    first: dict[str, tuple[str, str]] = {}  # path -> (the distribution that listed it first, its hash)
    by_name = {}
    found = []
    for dist in dists:
        by_name[dist.name] = dist
        for entry in dist.records:
            path = entry.path
            if not entry.inside or "__pycache__/" in path or path.split("/", 1)[0].endswith(".dist-info"):
                continue
            owner, digest = first.setdefault(path, (dist.name, entry.hash))
            if owner != dist.name and (not digest or digest != entry.hash):
                found.append((path, by_name[owner], dist))
    return found


def intact(site_dir: Path, packages: Iterable[Mapping[str, object]] | None = None) -> bool:
    """``site_dir`` holds what was verified, as far as a listing and a stat of each file tell (no hashing;
    not for the start-up fast path): every file its RECORDs list, no ``.pth`` that none lists and, given
    the manifest's ``packages``, exactly the distributions it names as the generation's."""
    if not site_dir.is_dir():
        return False
    try:
        dists = installed(site_dir)
    except VerificationError:  # a dist-info lost its METADATA or RECORD
        return False
    if packages is not None and set_differences(dists, packages):
        return False
    return not missing_files(site_dir, dists) and not unlisted_pth(site_dir, dists)


def set_differences(dists: Iterable[Distribution], packages: Iterable[Mapping[str, object]]) -> list[str]:
    """How the distributions found differ from a manifest's ``packages`` (its entries with ``provided_by``
    ``"host"`` are the host's, never in the site): a dist-info deleted, planted, or of another version."""
    expected = {
        canonical_name(str(package.get("name"))): (str(package.get("name")), str(package.get("version")))
        for package in packages
        if package.get("provided_by") != "host"
    }
    found: dict[str, Distribution] = {}
    problems = []
    for dist in dists:
        if dist.name in found:
            problems.append(f"installed twice: {dist.display_name} {found[dist.name].version} and {dist.version}")
        found[dist.name] = dist
        if dist.name not in expected:
            problems.append(f"not in the manifest: {dist.display_name} {dist.version}: {dist.dist_info.name}")
        elif dist.version != expected[dist.name][1]:
            problems.append(
                f"another version: {dist.display_name} {dist.version}: the manifest has {expected[dist.name][1]}"
            )
    problems += [
        f"missing: {name} {version}: the whole distribution (its dist-info is gone)"
        for key, (name, version) in expected.items()
        if key not in found
    ]
    return problems


def listed_paths(dists: Iterable[Distribution]) -> set[str]:
    """Every path under the site folder that a RECORD lists. ``pip install --target`` moves what it installs
    beside ``lib/python`` (scripts, data files) into the folder itself, and its RECORD keeps ``../../X``: that
    lists ``X``."""
    listed = set()
    for dist in dists:
        for entry in dist.records:
            if entry.inside:
                listed.add(entry.path)
            elif entry.path.startswith("../../") and inside(entry.path[6:]):
                listed.add(entry.path[6:])
    return listed


def unlisted_pth(site_dir: Path, dists: Iterable[Distribution]) -> list[str]:
    """The ``.pth`` files at the top of ``site_dir`` that no RECORD lists (one listing): ``site.addsitedir``
    runs their ``import`` lines in every host that activates the folder."""
    try:
        names = os.listdir(site_dir)
    except OSError:
        return []
    listed = listed_paths(dists)
    return sorted(name for name in names if name.endswith(".pth") and name not in listed)


def unlisted_files(site_dir: Path, dists: Iterable[Distribution], linked: frozenset[str] = frozenset()) -> list[str]:
    """Every file (and link) under ``site_dir`` that no RECORD lists, relative, sorted: one walk, nothing read.

    Bytecode is not recorded, so ``__pycache__/<stem>.<tag>[.opt-N].pyc`` beside a listed ``<stem>.py``
    counts as listed: bootstrap compiles those at build time, and a host that can write the folder may too.
    ``linked``: top-level links to a folder of the workspace's generation (``store.layers``); one counts as
    listed where a RECORD lists a file in it (what is inside is that generation's to answer for).
    """
    listed = listed_paths(dists)
    listed |= {name for name in linked if any(path.startswith(name + "/") for path in listed)}
    root = os.fspath(site_dir)
    found = []
    for folder, dirs, files in os.walk(root):
        relative = os.path.relpath(folder, root)
        prefix = "" if relative == "." else relative.replace(os.sep, "/") + "/"
        links = [name for name in dirs if os.path.islink(os.path.join(folder, name))]  # never walked into
        for name in (*files, *links):
            path = prefix + name
            if path not in listed and not _compiled_from_listed(path, listed):
                found.append(path)
    return sorted(found)


def _compiled_from_listed(path: str, listed: set[str]) -> bool:
    """``path`` is ``[dir/]__pycache__/<stem>.<tag>[.opt-N].pyc`` and ``[dir/]<stem>.py`` is listed."""
    folder, _, name = path.rpartition("/")
    parent, _, cache = folder.rpartition("/")
    parts = name.split(".")
    if cache != "__pycache__" or parts[-1] != "pyc" or len(parts) not in (3, 4):
        return False
    if len(parts) == 4 and not parts[2].startswith("opt-"):
        return False
    return f"{parent}/{parts[0]}.py".lstrip("/") in listed


# Given a file's stat and the size its RECORD gives: whether it may be taken as unchanged unread.
QuickCheck = Callable[[os.stat_result, str], bool]


def changed_files(
    site_dir: Path,
    dists: Iterable[Distribution],
    *,
    quick: QuickCheck | None = None,
    hashed: Mapping[str, str] | None = None,
) -> list[str]:
    """Files whose content no longer matches the hash their RECORD gives, or that are gone.

    ``quick``: files it vouches for from their stat alone are not read (see ``unchanged_since``).
    ``hashed``: the hashes (``sha256=...``, by path relative to ``site_dir``) of files just written by this
    process, which hashed them as it wrote them (``remote.archive.unpack``): those are not read again.
    """
    problems = []
    root = str(site_dir)
    for dist in dists:
        for entry in dist.records:
            if not entry.hash or not entry.inside:
                continue  # RECORD itself, compiled files, pip's scripts: no hash to check
            algorithm, _, expected = entry.hash.partition("=")
            file = os.path.join(root, entry.path)
            known = hashed.get(os.path.normpath(entry.path).replace(os.sep, "/")) if hashed is not None else None
            if known is not None and known.partition("=")[0] == algorithm:
                if known != entry.hash:
                    problems.append(f"changed: {dist.display_name} {dist.version}: {entry.path}")
                continue
            try:
                if quick is not None and quick(os.stat(file), entry.size):
                    continue
                with open(file, "rb") as handle:
                    digest = hashlib.new(algorithm, handle.read()).digest()
            except FileNotFoundError:
                problems.append(f"missing: {dist.display_name} {dist.version}: {entry.path}")
                continue
            except (OSError, ValueError) as exc:
                problems.append(f"unreadable: {dist.display_name} {dist.version}: {entry.path} ({exc})")
                continue
            if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != expected:
                problems.append(f"changed: {dist.display_name} {dist.version}: {entry.path}")
    return problems


def written_since(started_ns: int) -> QuickCheck:
    """Files last written at or after ``started_ns``: written by the install that just ran, fresh from
    their wheel."""
    return lambda stat, size: stat.st_mtime_ns >= started_ns


def unchanged_since(published_ns: int) -> QuickCheck:
    """Files of a published generation not written since it was published, at their recorded size.

    An edit in place moves the modification time (and mostly the size): as git decides what to
    hash again from stat data. ``verify`` still reads every file.
    """
    return lambda stat, size: stat.st_mtime_ns <= published_ns and str(stat.st_size) == size
