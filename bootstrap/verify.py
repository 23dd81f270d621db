"""Verify a generation before it goes live (and report on one that is live).

Three checks: the installed set is exactly the lock (one dist-info per
distribution, nothing missing, nothing extra); every file each distribution's
RECORD lists is present; and each top-level module imports, in a child
process, so a broken package never reaches the host.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path

from packaging.utils import canonicalize_name

from bootstrap import _subprocess
from bootstrap.errors import CommandError, VerificationError

log = logging.getLogger("bootstrap")

_RESULT_MARK = "BOOTSTRAP-IMPORT-RESULT:"
_IMPORT_SCRIPT = f"""
import importlib, json, os, site, sys
sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd())]
site.addsitedir(sys.argv[1])
failed = {{}}
for name in sys.argv[2:]:
    try:
        importlib.import_module(name)
    except BaseException as exc:
        failed[name] = (type(exc).__name__ + ": " + str(exc)).splitlines()[0][:300]
print({_RESULT_MARK!r} + json.dumps(failed))
"""


@dataclass(frozen=True)
class Distribution:
    name: str  # canonical
    display_name: str
    version: str
    dist_info: Path
    files: tuple[str, ...]  # RECORD paths relative to the site folder

    def modules(self) -> list[str]:
        """Top-level importable names, from RECORD (descending one level into namespace packages)."""
        files = {path for path in self.files if not path.startswith(("../", "/")) and "__pycache__" not in path}
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


def installed(site_dir: Path) -> list[Distribution]:
    """Every distribution installed in ``site_dir``, from its dist-info."""
    result = []
    for dist_info in sorted(site_dir.glob("*.dist-info")):
        try:
            headers = HeaderParser().parsestr((dist_info / "METADATA").read_text(encoding="utf-8", errors="replace"))
            with open(dist_info / "RECORD", newline="", encoding="utf-8") as handle:
                files = tuple(row[0] for row in csv.reader(handle) if row)
        except OSError as exc:
            raise VerificationError(f"{dist_info.name} is incomplete ({exc.strerror}: {exc.filename})") from None
        name, version = headers.get("Name", ""), headers.get("Version", "")
        result.append(Distribution(canonicalize_name(name), name, version, dist_info, files))
    return result


def missing_files(site_dir: Path, dists: Iterable[Distribution]) -> list[str]:
    """Files a RECORD lists that are not there (paths outside the site folder are pip's scripts: skipped)."""
    missing = []
    for dist in dists:
        for path in dist.files:
            if path.startswith(("../", "/")):
                continue
            if not (site_dir / path).exists():
                missing.append(f"{dist.display_name} {dist.version}: {path}")
    return missing


def check_set(dists: list[Distribution], expected: dict[str, str]) -> None:
    """The installed set must be exactly ``expected`` ({canonical name: version})."""
    seen: dict[str, str] = {}
    for dist in dists:
        if dist.name in seen:
            raise VerificationError(f"{dist.display_name} is installed twice ({seen[dist.name]} and {dist.version})")
        seen[dist.name] = dist.version
    problems = [f"{name} {version} is missing" for name, version in expected.items() if name not in seen]
    problems += [
        f"{name} is {seen[name]}, not {version}"
        for name, version in expected.items()
        if name in seen and seen[name] != version
    ]
    problems += [f"{name} {version} was not asked for" for name, version in seen.items() if name not in expected]
    if problems:
        raise VerificationError("the installed set differs from the lock: " + "; ".join(sorted(problems)))


def check_imports(site_dir: Path, dists: list[Distribution], *, skip: frozenset[str], timeout: float) -> None:
    """Import every top-level module of every distribution (but the skipped) in one child process."""
    owner: dict[str, Distribution] = {}
    for dist in dists:
        if dist.name in skip or dist.display_name in skip:
            log.info("not import-checking %s (BOOTSTRAP_SKIP_IMPORT_CHECK)", dist.display_name)
            continue
        for module in dist.modules():
            owner.setdefault(module, dist)
    if not owner:
        return
    log.info("import-checking %d module%s", len(owner), "" if len(owner) == 1 else "s")
    argv = [sys.executable, "-c", _IMPORT_SCRIPT, str(site_dir), *sorted(owner)]
    try:
        completed = _subprocess.run(argv, cwd=site_dir.parent, timeout=timeout)
    except CommandError as exc:
        why = "timed out (raise BOOTSTRAP_IMPORT_CHECK_TIMEOUT?)" if exc.timed_out else exc.message
        raise VerificationError(f"the import check failed: {why}") from exc
    result_line = next(
        (line for line in reversed(completed.stdout.splitlines()) if line.startswith(_RESULT_MARK)), None
    )
    if result_line is None:
        raise VerificationError("the import check printed no result (a module ended the interpreter at import?)")
    failed: dict[str, str] = json.loads(result_line[len(_RESULT_MARK) :])
    if failed:
        details = "; ".join(
            f"{owner[module].display_name} {owner[module].version}: import {module} failed ({error})"
            for module, error in sorted(failed.items())
        )
        names = ",".join(sorted({owner[module].name for module in failed}))
        raise VerificationError(
            f"{details}. If the package needs configuration to import, set BOOTSTRAP_SKIP_IMPORT_CHECK={names}"
        )


def verify_generation(
    site_dir: Path, expected: dict[str, str], *, skip: frozenset[str], timeout: float
) -> list[Distribution]:
    """All three checks; returns the distributions found."""
    log.info("verifying the new generation")
    dists = installed(site_dir)
    check_set(dists, expected)
    missing = missing_files(site_dir, dists)
    if missing:
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise VerificationError("files listed in RECORD are missing: " + "; ".join(missing[:5]) + more)
    check_imports(site_dir, dists, skip=skip, timeout=timeout)
    return dists
