"""The default locations, and how the fast path reads them from the environment.

On the start-up fast path: ``os`` only (no pathlib, no typing, no dataclasses).
The pydantic ``Settings`` (slow path) take their defaults from here, so the two
never disagree.
"""

from __future__ import annotations

import os

ENV_PREFIX = "BOOTSTRAP_"
GENERATIONS_DIR = "generations"  # <packages_dir>/generations/<id>/site: the only folders a host activates
SITE_DIR = "site"  # the sys.path entry
# The host's sys.path, as the host process has it, when a sync runs in a child of it (host.child): the child's
# own path lacks what the host added at run time (its script folder, a platform worker's folders), and the
# host's packages are read from there (inputs.host). Not a setting: no BOOTSTRAP_ prefix.
HOST_PATH_VARIABLE = "_BOOTSTRAP_HOST_SYS_PATH"
DEFAULT_REQUIREMENTS_FILE = "/home/repo/requirements.txt"
DEFAULT_PACKAGES_DIR = "/home/.packages"
MANIFEST_NAME = "manifest.json"
RUNTIME_REQUIREMENTS_NAME = "runtime-requirements.txt"
STATE_DIR_NAME = ".bootstrap"  # the state folder's default name, beside the packages folder
ADOPTED_NAME = "adopted.json"  # in the state folder: the legacy distributions already adopted
# Organisations' sets: <packages_dir>/orgs/<org-id>/ is each org's own packages folder (manifest, generations),
# <state_dir>/orgs/<org-id>/ its state, and <repo>/orgs/<org-id>/requirements.txt (BOOTSTRAP_ORGS_DIR) its file.
ORGS_DIR = "orgs"
ORG_ID_RULE = "an org id is 1 to 63 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
_ORG_ID_FIRST = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_ORG_ID_CHARACTERS = _ORG_ID_FIRST | frozenset("._-")


def relative_site(generation: str) -> str:
    """A generation's ``sys.path`` entry relative to the packages folder (the manifest's ``site``), with ``/``:
    the same for every instance that sees the folder, wherever it is mounted."""
    return f"{GENERATIONS_DIR}/{generation}/{SITE_DIR}"


def site_path(packages_dir: str, generation: str) -> str:
    """A generation's ``sys.path`` entry in ``packages_dir``: the folder in use, never a path another instance
    wrote (it may mount the share elsewhere)."""
    # Joined by hand, not os.path.join: on every start-up, and a well-formed id holds no separator.
    return os.sep.join((os.path.abspath(packages_dir), GENERATIONS_DIR, generation, SITE_DIR))


def valid_org_id(org: object) -> bool:
    """``[a-z0-9][a-z0-9._-]{0,62}``, checked without ``re`` (the host's fast path may ask)."""
    return isinstance(org, str) and 0 < len(org) <= 63 and org[0] in _ORG_ID_FIRST and set(org) <= _ORG_ID_CHARACTERS


def org_packages_dir(packages_dir: str, org: str) -> str:
    """An organisation's own packages folder, inside the workspace's: ``<packages_dir>/orgs/<org>``."""
    if not valid_org_id(org):
        raise ValueError(f"{str(org)[:80]!r} is not an org id: {ORG_ID_RULE}")
    return os.sep.join((os.path.abspath(packages_dir), ORGS_DIR, org))


def orgs_folder(requirements_file: str) -> str:
    """Where the organisations' folders are: ``BOOTSTRAP_ORGS_DIR`` (relative: to the requirements file's folder),
    default ``orgs`` beside the requirements file; read as ``Settings.orgs_folder`` reads it (fast path only)."""
    base = os.path.dirname(os.path.abspath(requirements_file))
    value = os.environ.get(ENV_PREFIX + "ORGS_DIR")
    return os.path.abspath(os.path.join(base, value)) if value else os.path.join(base, ORGS_DIR)


def default_lock_file(requirements_file: str) -> str:
    """The committed lock lives beside the requirements file: ``requirements.lock``."""
    return os.path.splitext(requirements_file)[0] + ".lock"


def env_path(name: str, default: str) -> str:
    """A path setting read straight from the environment, as ``Settings`` would (fast path only)."""
    value = os.environ.get(ENV_PREFIX + name.upper())
    return os.path.abspath(value if value else default)


def packages_dir() -> str:
    """The packages folder this process uses: ``BOOTSTRAP_PACKAGES_DIR``, default ``/home/.packages``."""
    return env_path("packages_dir", DEFAULT_PACKAGES_DIR)


def default_state_dir(packages_dir: str, requirements_file: str | None = None) -> str:
    """Where what must outlive the packages folder lives (the runtime additions): ``.bootstrap`` beside it
    (``/home/.bootstrap`` for ``/home/.packages``), which is ephemeral in some deployments. Never in the
    repo's checkout: if that would lie in the requirements file's folder, beside that folder instead."""
    candidate = os.path.join(os.path.dirname(os.path.abspath(packages_dir)), STATE_DIR_NAME)
    if requirements_file is not None:
        repo = os.path.dirname(os.path.abspath(requirements_file))
        if candidate == repo or candidate.startswith(repo + os.sep):
            candidate = os.path.join(os.path.dirname(repo), STATE_DIR_NAME)
    return candidate


# The values pydantic reads as true (the slow path's Settings), for the one flag the fast path reads itself.
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})


def allow_world_writable() -> bool:
    """``BOOTSTRAP_ALLOW_WORLD_WRITABLE``, read as ``Settings`` reads it (fast path only)."""
    return os.environ.get(ENV_PREFIX + "ALLOW_WORLD_WRITABLE", "").strip().lower() in _TRUE


class Sources:
    """The files a generation is judged fresh by: the committed requirements file, the committed lock
    beside it, and the runtime overlay in the state folder. Absolute paths, as strings.

    Built once, from ``Settings.sources`` on the slow path or ``Sources.from_env()`` on the fast path
    (a plain class: ``dataclasses`` is not on the fast path).
    """

    __slots__ = (
        "allow_world_writable",
        "lock_file",
        "packages_dir",
        "requirements_file",
        "state_dir",
        "workspace_packages_dir",
    )

    def __init__(
        self,
        requirements_file: str,
        lock_file: str,
        packages_dir: str,
        *,
        allow_world_writable: bool = False,
        state_dir: str | None = None,
        workspace_packages_dir: str | None = None,
    ) -> None:
        self.requirements_file = requirements_file
        self.lock_file = lock_file
        self.packages_dir = packages_dir
        self.state_dir = state_dir if state_dir is not None else default_state_dir(packages_dir, requirements_file)
        # Whether folders every local user can write may still be served from (store.freshness.open_to_others).
        self.allow_world_writable = allow_world_writable
        # An organisation's sources: the workspace's packages folder, whose active pins its set is built on
        # (``store.freshness.key_files``); None for the workspace itself.
        self.workspace_packages_dir = workspace_packages_dir

    @classmethod
    def from_env(cls) -> Sources:
        requirements_file = env_path("requirements_file", DEFAULT_REQUIREMENTS_FILE)
        lock_file = env_path("lock_file", default_lock_file(requirements_file))
        folder = packages_dir()
        state_dir = env_path("state_dir", default_state_dir(folder, requirements_file))
        return cls(
            requirements_file, lock_file, folder, allow_world_writable=allow_world_writable(), state_dir=state_dir
        )

    def for_org(self, org: str, orgs_dir: str | None = None) -> Sources:
        """An organisation's sources, as ``Settings.for_org`` makes them: its file in ``orgs_dir`` (default: as
        the environment says, ``orgs_folder``), its packages folder inside this one, its state inside this
        state folder. ``ValueError`` for an id that is none."""
        packages = org_packages_dir(self.packages_dir, org)  # checks the id
        folder = orgs_dir if orgs_dir is not None else orgs_folder(self.requirements_file)
        requirements_file = os.path.join(folder, org, "requirements.txt")
        return Sources(
            requirements_file,
            default_lock_file(requirements_file),
            packages,
            allow_world_writable=self.allow_world_writable,
            state_dir=os.path.join(self.state_dir, ORGS_DIR, org),
            workspace_packages_dir=self.packages_dir,
        )

    @property
    def runtime_file(self) -> str:
        return os.path.join(self.state_dir, RUNTIME_REQUIREMENTS_NAME)

    @property
    def manifest_file(self) -> str:
        return os.path.join(self.packages_dir, MANIFEST_NAME)

    def key_files(self) -> tuple[str, str, str]:
        """The three files every manifest must record, whatever else it was built from."""
        return (self.requirements_file, self.lock_file, self.runtime_file)

    def __repr__(self) -> str:
        return f"Sources({self.requirements_file!r}, {self.lock_file!r}, {self.packages_dir!r})"
