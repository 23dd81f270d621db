"""Test workflow: install a package at run time, import it, use it.

Run it from the host (``POST /api/workflows/test_custom_packages_runtime/execute``
with ``{"inputData": {"package": "colorama", "test_import": true, "test_usage": true}}``)
or call ``run()`` directly. It lives at the repo folder's top level
(``/home/repo/test_custom_packages_runtime.py``), where the platform keeps its workflows.
It is also the example to copy: a workflow that needs a package calls
``bootstrap.ensure("name")`` and then simply imports it.

Input (``input_data``, a dict; every key optional):

- ``package``: a distribution name, or a requirement such as ``"tabulate>=0.9"``
  (default ``"colorama"``).
- ``test_import``, ``test_usage``: run those steps (default ``True``).

Result (every key always present)::

    {
      "success": bool,           # True when no step failed
      "package": str | None,     # the distribution name asked for
      "error": str | None,       # the first failing step's message
      "steps": [ {"step": ..., "status": ..., ...}, ... ],
      "summary": {"already_installed", "import_successful", "usage_successful", "all_successful"},
    }

In ``summary``, each flag is true only when its step ran and passed, so a
skipped step leaves its flag false; ``all_successful`` is ``success`` with
both tests run and passed.

The steps, in order (the list stops at the first step that fails). The
statuses and messages of a successful run are the platform's documented ones
(``"<name> is not installed"``, ``"<name> is already installed"``,
``"Successfully installed <name>"``, ``"Successfully imported <module>"``);
the other fields are additions.

1. ``verify_packages_dir``: ``path`` (``bootstrap.packages_dir()``), ``exists``.
   An error only when the path exists and is not a folder.
2. ``check_existing``: ``status`` is ``"already_installed"`` (with ``version``
   and ``provided_by``) or ``"not_installed"``.
   *Already installed* means, precisely: after ``bootstrap.activate()``, the
   manifest of the packages folder lists the distribution and it is there now:
   either provided by the active generation, whose folder holds its metadata
   (``importlib.metadata`` finds it in the folder ``activate()`` returns: this
   instance's, wherever the share is mounted), or provided by the host (the
   manifest says ``"provided_by": "host"``); and, when a version
   specifier was given, that version satisfies it; and it is asked for (by the
   committed requirements file or an earlier runtime addition), not merely a
   dependency of another package, which could vanish when that one goes.
   Anything else, including a copy that only the host has but the manifest
   does not list, is "not installed".
3. ``install``: only when not already installed: ``bootstrap.ensure(package)``,
   with the ``version``, ``provided_by`` and ``source`` it reports.
4. ``test_import``: imports the module (``python-dateutil`` -> ``dateutil``,
   ``pyyaml`` -> ``yaml``, otherwise the distribution's ``top_level.txt`` or
   ``RECORD``, else the name with ``-`` -> ``_``); ``module_file`` and
   ``from_packages`` (true when that file lies inside the packages folder). A
   module this process had imported before stays the one loaded (its file shows
   which generation it came from); restart the host to load a newer one.
5. ``test_usage``: ``test`` (its name: ``"Terminal color formatting"`` for
   colorama) and ``checks`` (check name -> bool), each check also on the step
   itself (``has_fore``, ``has_back``, ``has_style`` for colorama): colorama,
   tabulate, python-dateutil and pyyaml are really used; any other package gets
   a generic check (it has attributes, its version is found).

Step status: ``"success"``; ``"error"`` (with ``message``; ``success`` is then
false); ``"skipped"`` (``test_import``/``test_usage`` set to false); and for
``check_existing`` the two values above. ``run()`` never raises: bad input
(``package`` not a string, say) is reported as a ``validate_input`` step with
status ``"error"``.
"""

from __future__ import annotations

import datetime
import importlib
import importlib.metadata
import os
import pkgutil
from types import ModuleType
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

import bootstrap
from bootstrap.errors import BootstrapError

DEFAULT_PACKAGE = "colorama"

# Distributions whose import name is not their name (the rest are read from their metadata).
IMPORT_NAMES = {
    "python-dateutil": "dateutil",
    "pyyaml": "yaml",
    "beautifulsoup4": "bs4",
    "pillow": "PIL",
    "scikit-learn": "sklearn",
    "opencv-python": "cv2",
}


class StepFailed(Exception):
    """A step failed; its dict (status "error", message) is already in the result."""


def run(input_data: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {
        "success": False,
        "package": None,
        "error": None,
        "steps": [],
        "summary": {
            "already_installed": False,
            "import_successful": False,
            "usage_successful": False,
            "all_successful": False,
        },
    }
    try:
        _run(input_data, result)
    except StepFailed:
        pass
    except Exception as exc:  # a bug in this workflow: still a result, never a traceback
        _fail(result, "unexpected", f"{type(exc).__name__}: {exc}")
    failed = [step for step in result["steps"] if step["status"] == "error"]
    result["success"] = not failed
    result["error"] = failed[0]["message"] if failed else None
    summary = result["summary"]
    summary["all_successful"] = result["success"] and summary["import_successful"] and summary["usage_successful"]
    return result


def _run(input_data: Any, result: dict[str, Any]) -> None:
    requirement, test_import, test_usage = _parse_input(input_data, result)
    name = canonicalize_name(requirement.name)
    result["package"] = requirement.name
    steps: list[dict[str, Any]] = result["steps"]
    summary = result["summary"]

    # 1. The packages folder.
    path = bootstrap.packages_dir()
    exists = os.path.exists(path)
    if exists and not os.path.isdir(path):
        raise _fail(result, "verify_packages_dir", f"{path} exists but is not a folder", path=path, exists=True)
    note = "exists" if exists else "does not exist yet; the first install creates it"
    steps.append({"step": "verify_packages_dir", "status": "success", "path": path, "exists": exists, "message": note})

    # 2. Is it there already?
    try:
        found = _already_installed(requirement)
    except Exception as exc:
        raise _fail(result, "check_existing", f"cannot read the manifest: {type(exc).__name__}: {exc}") from None
    if found is not None:
        summary["already_installed"] = True
        steps.append(
            {
                "step": "check_existing",
                "status": "already_installed",
                "message": f"{name} is already installed",
                "version": found["version"],
                "provided_by": found["provided_by"],
            }
        )
    else:
        steps.append({"step": "check_existing", "status": "not_installed", "message": f"{name} is not installed"})

        # 3. Install it (only when needed).
        try:
            entry = bootstrap.ensure(str(requirement))
        except BootstrapError as exc:  # one clear line; the previous set keeps serving
            raise _fail(result, "install", exc.message) from None
        except Exception as exc:
            raise _fail(result, "install", f"{type(exc).__name__}: {exc}") from None
        if entry["provided_by"] == "generation":
            message = f"Successfully installed {name}"
        else:
            message = f"{name} {entry['version']} is provided by the host; nothing to install"
        steps.append(
            {
                "step": "install",
                "status": "success",
                "message": message,
                "version": entry["version"],
                "provided_by": entry["provided_by"],
                "source": entry.get("source"),
            }
        )

    # 4. Import it.
    import_name = import_name_of(requirement.name)
    if not test_import:
        steps.append({"step": "test_import", "status": "skipped", "message": "test_import is false"})
    else:
        try:
            module = importlib.import_module(import_name)
        except Exception as exc:
            raise _fail(result, "test_import", f"import {import_name} failed: {type(exc).__name__}: {exc}") from None
        module_file = _module_file(module)
        steps.append(
            {
                "step": "test_import",
                "status": "success",
                "message": f"Successfully imported {import_name}",
                "module": import_name,
                "module_file": module_file,
                "from_packages": _inside(module_file, path),
            }
        )
        summary["import_successful"] = True

    # 5. Use it.
    if not test_usage:
        steps.append({"step": "test_usage", "status": "skipped", "message": "test_usage is false"})
        return
    try:
        module = importlib.import_module(import_name)
        test, checks = _usage_test(name, module)
    except Exception as exc:
        test = USAGE_TEST_NAMES.get(name, GENERIC_TEST)
        message = f"using {import_name} failed: {type(exc).__name__}: {exc}"
        raise _fail(result, "test_usage", message, test=test, checks={}) from None
    failed = [check for check, ok in checks.items() if not ok]
    if failed:
        message = f"{test}: failed {', '.join(failed)}"
        raise _fail(result, "test_usage", message, test=test, **checks, checks=checks)
    message = f"{test}: all checks passed"
    steps.append(
        {"step": "test_usage", "status": "success", "message": message, "test": test, **checks, "checks": checks}
    )
    summary["usage_successful"] = True


def _parse_input(input_data: Any, result: dict[str, Any]) -> tuple[Requirement, bool, bool]:
    if input_data is None:
        input_data = {}
    if not isinstance(input_data, dict):
        raise _fail(result, "validate_input", f"input_data must be an object, not {type(input_data).__name__}")
    package = input_data.get("package", DEFAULT_PACKAGE)
    if not isinstance(package, str) or not package.strip():
        raise _fail(result, "validate_input", f"package must be a non-empty string, not {package!r}")
    try:
        requirement = Requirement(package.strip())
    except InvalidRequirement as exc:
        raise _fail(result, "validate_input", f"package {package!r} is not a valid requirement: {exc}") from None
    if requirement.url:
        raise _fail(result, "validate_input", f"package {package!r}: give a name from the index, not a URL")
    flags = {}
    for key in ("test_import", "test_usage"):
        value = input_data.get(key, True)
        if not isinstance(value, bool):
            raise _fail(result, "validate_input", f"{key} must be true or false, not {value!r}")
        flags[key] = value
    return requirement, flags["test_import"], flags["test_usage"]


def _fail(result: dict[str, Any], step: str, message: str, **details: Any) -> StepFailed:
    """Record ``step`` as failed; return the exception that stops the run (``raise _fail(...)``)."""
    result["steps"].append({"step": step, "status": "error", "message": message, **details})
    return StepFailed(message)


def _already_installed(requirement: Requirement) -> dict[str, Any] | None:
    """The manifest's entry when the distribution is there now (see the module docstring), else None."""
    site_dir = bootstrap.activate()  # this instance's folder (the manifest's site_dir: wherever its writer mounts it)
    manifest = bootstrap.read_manifest() or {}
    name = canonicalize_name(requirement.name)
    for entry in manifest.get("packages") or []:
        if canonicalize_name(entry["name"]) != name:
            continue
        if entry.get("source") is None and entry.get("requested") is not True:
            return None  # only a dependency of another package: ensure() records it, so it stays
        if requirement.specifier and not requirement.specifier.contains(entry["version"], prereleases=True):
            return None
        if entry.get("provided_by") == "host":
            return dict(entry)
        if site_dir and any(
            canonicalize_name(dist.metadata["Name"] or "") == name
            for dist in importlib.metadata.distributions(path=[site_dir])
        ):
            return dict(entry)
    return None


def import_name_of(distribution: str) -> str:
    """The module to import for a distribution: known names, then its metadata, then ``-`` -> ``_``."""
    name = canonicalize_name(distribution)
    if name in IMPORT_NAMES:
        return IMPORT_NAMES[name]
    fallback = name.replace("-", "_")
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return fallback
    top_level = (dist.read_text("top_level.txt") or "").split()
    if not top_level:  # no top_level.txt: the first path component of each file in RECORD
        for file in dist.files or []:
            first = file.parts[0]
            if len(file.parts) > 1 and not first.endswith((".dist-info", ".data")) and first != "__pycache__":
                top_level.append(first)
            elif len(file.parts) == 1 and first.endswith(".py"):
                top_level.append(first[:-3])
    candidates = [m for m in dict.fromkeys(top_level) if m.isidentifier()]
    if fallback in candidates or not candidates:
        return fallback
    return candidates[0]


def _module_file(module: ModuleType) -> str | None:
    if getattr(module, "__file__", None):
        return str(module.__file__)
    paths = list(getattr(module, "__path__", []))  # a namespace package has no file
    return str(paths[0]) if paths else None


def _inside(file: str | None, folder: str) -> bool:
    if not file:
        return False
    file, folder = os.path.realpath(file), os.path.realpath(folder)
    return os.path.commonpath([file, folder]) == folder


# The usage tests: (test name, {check: passed}).


def _usage_test(name: str, module: ModuleType) -> tuple[str, dict[str, bool]]:
    test = USAGE_TESTS.get(name)
    if test is None:
        return GENERIC_TEST, _generic_checks(name, module)
    return test(module)


def _colorama(colorama: ModuleType) -> tuple[str, dict[str, bool]]:
    return USAGE_TEST_NAMES["colorama"], {
        "has_fore": str(getattr(colorama.Fore, "RED", "")).startswith("\x1b["),
        "has_back": str(getattr(colorama.Back, "RED", "")).startswith("\x1b["),
        "has_style": getattr(colorama.Style, "RESET_ALL", None) == "\x1b[0m",
    }


def _tabulate(tabulate: ModuleType) -> tuple[str, dict[str, bool]]:
    table = tabulate.tabulate([["alice", 30], ["bob", 25]], headers=["name", "age"])
    lines = table.splitlines()
    return USAGE_TEST_NAMES["tabulate"], {
        "renders_table": isinstance(table, str) and len(lines) >= 4,
        "has_headers": "name" in lines[0] and "age" in lines[0],
        "has_data": "alice" in table and "30" in table and "bob" in table and "25" in table,
    }


def _dateutil(dateutil: ModuleType) -> tuple[str, dict[str, bool]]:
    parser = importlib.import_module("dateutil.parser")
    parsed = parser.parse("2024-03-15 13:45:30")
    return USAGE_TEST_NAMES["python-dateutil"], {
        "parses_date": parsed == datetime.datetime(2024, 3, 15, 13, 45, 30),
        "parses_words": parser.parse("March 15, 2024").date() == datetime.date(2024, 3, 15),
    }


def _yaml(yaml: ModuleType) -> tuple[str, dict[str, bool]]:
    data = {"name": "bootstrap", "packages": ["colorama", "tabulate"], "count": 2, "nested": {"ok": True}}
    text = yaml.safe_dump(data)
    return USAGE_TEST_NAMES["pyyaml"], {
        "dumps": isinstance(text, str) and "bootstrap" in text,
        "round_trip": yaml.safe_load(text) == data,
        "loads": yaml.safe_load("a: 1\nb: [x, y]\n") == {"a": 1, "b": ["x", "y"]},
    }


def _generic_checks(name: str, module: ModuleType) -> dict[str, bool]:
    public = [attr for attr in dir(module) if not attr.startswith("_")]
    if not public and hasattr(module, "__path__"):  # a namespace package: its submodules
        public = [info.name for info in pkgutil.iter_modules(module.__path__)]
    try:
        version: str | None = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        version = getattr(module, "__version__", None)
    return {"has_attributes": bool(public) or hasattr(module, "__version__"), "version_found": bool(version)}


USAGE_TESTS = {"colorama": _colorama, "tabulate": _tabulate, "python-dateutil": _dateutil, "pyyaml": _yaml}
# The names the result gives each usage test ("Terminal color formatting" is the platform's documented one).
USAGE_TEST_NAMES = {
    "colorama": "Terminal color formatting",
    "tabulate": "Table formatting",
    "python-dateutil": "Date parsing",
    "pyyaml": "YAML round trip",
}
GENERIC_TEST = "Generic import check"
