"""Workflows: ``<name>.py`` files with ``run(input_data) -> dict``, found in the workflow folders and loaded.

The folders are the requirements file's folder (the repo folder, where a
platform keeps them), then its ``workflows`` subfolder, or one folder a host
names. Shared by ``bootstrap.execute`` (in the host and in an org's worker
process) and the Azure Functions route; the standard library only.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import types
from pathlib import Path

logger = logging.getLogger("bootstrap")

# A workflow name is a file name without ".py": letters, digits, "_" and "-", never a dot or a slash;
# a leading "_" or "-" is not a workflow (helpers such as _common.py, __init__.py).
WORKFLOW_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
# The host's own entry point, when the repo folder is the function app's folder: never run as a workflow.
NOT_WORKFLOWS = frozenset({"function_app"})
MODULE_PREFIX = "bootstrap_workflows"  # a workflow's module is sys.modules["bootstrap_workflows.<name>"]


def default_folders(requirements_file: str, workflows_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """``[workflows_dir]`` when given, else the requirements file's folder and its ``workflows`` subfolder."""
    if workflows_dir is not None:
        return [Path(os.path.abspath(workflows_dir))]
    repo = Path(os.path.abspath(requirements_file)).parent
    return [repo, repo / "workflows"]


class Workflows:
    """The workflows of some folders (searched in order), each loaded once per change of its file."""

    def __init__(self, folders: list[Path]) -> None:
        self.folders = folders
        self._loaded: dict[tuple[Path, str | None], tuple[tuple[int, int, int], types.ModuleType]] = {}
        self._shadowed: set[Path] = set()
        self._lock = threading.Lock()

    def path(self, name: str) -> Path | None:
        """The first ``<folder>/<name>.py`` of the workflow folders, when ``name`` is a workflow name and that is
        a file inside its folder.

        A name with a dot, a slash or a percent sign never makes a path; a file
        that is a symlink resolving outside its folder is not a workflow. When
        the repo folder and its ``workflows`` subfolder both have it, the repo
        folder's is the one (logged once).
        """
        if not isinstance(name, str) or not WORKFLOW_NAME.fullmatch(name) or name in NOT_WORKFLOWS:
            return None
        found = [path for path in (file_in(folder, f"{name}.py") for folder in self.folders) if path]
        if len(found) > 1 and found[1] not in self._shadowed:
            self._shadowed.add(found[1])
            logger.warning("workflow %s: %s is run, %s is not (the repo folder's comes first)", name, *found[:2])
        return found[0] if found else None

    def load(self, name: str, path: Path, org: str | None = None) -> types.ModuleType:
        """The workflow's module, executed afresh when its file changed since the last call.

        One module per org: its top-level imports ran for that org (``host.isolation``), so another org's
        execution must not reuse them. Call it inside the org's execution context.
        """
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)  # the file checked, not a link swapped in since
        with os.fdopen(fd, "rb") as file:
            stat = os.fstat(file.fileno())
            key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            with self._lock:
                cached = self._loaded.get((path, org))
            if cached is not None and cached[0] == key:
                return cached[1]
            source = file.read()
        module = types.ModuleType(module_name(name, org))
        module.__file__ = str(path)
        sys.modules[module.__name__] = module  # dataclasses, pickle and friends look a module up there
        try:
            exec(compile(source, str(path), "exec"), module.__dict__)
        except BaseException:
            sys.modules.pop(module.__name__, None)
            raise
        with self._lock:
            self._loaded[(path, org)] = (key, module)
        return module


def module_name(name: str, org: str | None) -> str:
    """``bootstrap_workflows.<name>``; an org's: ``bootstrap_workflows.<name>[<org>]`` (not an import path)."""
    return f"{MODULE_PREFIX}.{name}" if org is None else f"{MODULE_PREFIX}.{name}[{org}]"


def file_in(folder: Path, file_name: str) -> Path | None:
    """``folder/file_name`` resolved, when it is a regular file whose real place is inside ``folder``."""
    try:
        real_folder = folder.resolve(strict=True)
        path = (real_folder / file_name).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):  # missing, a symlink loop, a NUL byte
        return None
    if path.parent != real_folder or not path.is_file():
        return None
    return path
