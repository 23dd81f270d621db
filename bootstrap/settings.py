"""Settings, built once at the entry point and passed down.

Every field is read from the environment with the prefix ``BOOTSTRAP_``
(``BOOTSTRAP_PACKAGES_DIR`` and so on); the README documents each. pip's own
settings (``PIP_INDEX_URL``, pip.conf, ...) are not bootstrap's: they reach
pip and pip-compile unchanged.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bootstrap.errors import SettingsError
from bootstrap.store.layout import DEFAULT_LEASE_SECONDS, Layout
from bootstrap.store.paths import (
    DEFAULT_PACKAGES_DIR,
    DEFAULT_REQUIREMENTS_FILE,
    ENV_PREFIX,
    ORG_ID_RULE,
    ORGS_DIR,
    Sources,
    default_lock_file,
    default_state_dir,
    valid_org_id,
)

# BOOTSTRAP_REMOTE_CACHE: a container name as Azure allows it, then an optional prefix of plain path segments.
REMOTE_CACHE_URL = re.compile(
    r"azure-blob://(?P<container>[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62})"
    r"(?:/(?P<prefix>(?:(?!\.\.?(?:/|$))[A-Za-z0-9._-]+/?)+))?"
)


class Settings(BaseSettings):
    # env_ignore_empty: `BOOTSTRAP_PACKAGES_DIR=` means the default, as on the fast path (not the cwd).
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, case_sensitive=False, extra="ignore", frozen=True, env_ignore_empty=True
    )

    requirements_file: Path = Field(
        Path(DEFAULT_REQUIREMENTS_FILE), description="The committed requirements file: the truth."
    )
    packages_dir: Path = Field(
        Path(DEFAULT_PACKAGES_DIR), description="The shared packages folder: generations, manifest, lock, cache."
    )
    state_dir: Path | None = Field(
        None,
        description=(
            "What must outlive the packages folder (the packages added at run time, the legacy packages adopted); "
            "default: .bootstrap beside the packages folder (/home/.bootstrap). Never inside the repo folder."
        ),
    )
    lock_file: Path | None = Field(
        None, description="The committed lock; default: requirements.lock beside the requirements file."
    )
    orgs_dir: Path | None = Field(
        None,
        description=(
            "The organisations' folders, each <org-id>/requirements.txt adding to the workspace's set; default: "
            "orgs beside the requirements file."
        ),
    )
    org_parallelism: int | None = Field(
        None,
        ge=1,
        description="Organisations synced at once by `sync` (after the workspace); default: the cores available.",
    )
    org_grace_seconds: float = Field(
        3600.0,
        ge=0,
        description=(
            "Seconds an organisation's packages stay after its folder left the repo (a checkout in progress, a "
            "revert); then a sync removes them."
        ),
    )
    lock_timeout: float = Field(900.0, gt=0, description="Seconds to wait for another process's sync before giving up.")
    lease_seconds: float = Field(
        DEFAULT_LEASE_SECONDS,
        ge=1,
        description=(
            "Seconds a sync's claim on the packages folder lasts unless renewed (every quarter of it): another "
            "instance on the share takes over that long after a builder died."
        ),
    )
    generations_kept: int = Field(
        3, ge=1, description="Published generations kept on disk (the active one included), for rollback."
    )
    skip_import_check: Annotated[frozenset[str], NoDecode] = Field(
        frozenset(),
        description="Comma-separated distributions whose modules are not import-checked (they need configuration).",
    )
    resolve_timeout: float = Field(600.0, gt=0, description="Seconds pip-compile may take.")
    install_timeout: float = Field(1800.0, gt=0, description="Seconds pip install may take.")
    import_check_timeout: float = Field(300.0, gt=0, description="Seconds the import check may take.")
    import_check_processes: int | None = Field(
        None,
        ge=1,
        description=(
            "Processes the import check runs at once, each importing whole distributions; default: 1 when "
            "bytecode is compiled, else the cores available. Each one imports again what the set's packages share "
            "(on a large set two take about 1.6x the memory of one), and with bytecode two are no faster."
        ),
    )
    allow_index_options: bool = Field(
        False, description="Let the committed file say where packages come from (-i, --extra-index-url, -f, ...)."
    )
    allow_direct_references: bool = Field(
        False, description="Let the committed file name URLs, archives and folders (name @ URL, ./pkg)."
    )
    allow_outside_includes: bool = Field(
        False, description="Let the committed file include (-r/-c) files outside the repo folder."
    )
    allow_source_builds: bool = Field(
        False, description="Let pip build packages from source archives (runs their build code); default: wheels only."
    )
    require_hashes: bool = Field(False, description="Every lock carries hashes and every install checks them.")
    host_overrides: Annotated[frozenset[str], NoDecode] = Field(
        frozenset(), description="Comma-separated packages users may pin against the host's own version."
    )
    allow_world_writable: bool = Field(
        False,
        description=(
            "Accept a world-writable packages folder, generations/ or generation, and activate from it (some SMB "
            "shares show every folder as 777)."
        ),
    )
    watch_polling: bool = Field(
        False, description="`watch` polls the requirements folder instead of inotify (network shares see no events)."
    )
    watch_debounce: float = Field(
        1.0, gt=0, description="Seconds `watch` waits for a burst of file events to settle before one sync."
    )
    backend: Literal["pip", "uv"] = Field(
        "pip",
        description="What resolves and installs: pip-tools and pip, or uv (`pip install uv`, the `[uv]` extra).",
    )
    compile_bytecode: bool = Field(
        True,
        description="Write the modules' .pyc when a generation is built (in parallel, once; reused "
        "distributions keep theirs; packages' own test folders are left out), so hosts never compile on a "
        "cold start.",
    )
    index_timeout: float | None = Field(
        None, gt=0, description="Seconds pip waits for each answer of the index (pip's --timeout); unset: pip's."
    )
    index_retries: int | None = Field(
        None, ge=0, description="Retries of each request to the index (pip's --retries); unset: pip's."
    )

    remote_cache: str | None = Field(
        None,
        description=(
            "azure-blob://<container>[/<prefix>]: published generations, locks and the runtime additions are shared "
            "through that Azure Blob Storage container (the [azure-blob] extra); unset: nothing is."
        ),
    )
    remote_cache_account_url: str | None = Field(
        None,
        description=(
            "The storage account's URL (https://<account>.blob.core.windows.net), signed in with azure-identity's "
            "DefaultAzureCredential; used when AZURE_STORAGE_CONNECTION_STRING is not set."
        ),
    )

    @field_validator("remote_cache", mode="after")
    @classmethod
    def _remote_cache_url(cls, value: str | None) -> str | None:
        if value is not None and REMOTE_CACHE_URL.fullmatch(value) is None:
            raise ValueError(
                "not azure-blob://<container>[/<prefix>] (a container name is 3 to 63 lowercase letters, digits "
                "and hyphens)"
            )
        return value

    @field_validator("requirements_file", "packages_dir", "lock_file", "state_dir", mode="after")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return Path(os.path.abspath(value)) if value is not None else None

    @field_validator("orgs_dir", mode="after")
    @classmethod
    def _beside_the_requirements_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        # Relative: to the requirements file's folder (the repo), wherever the command runs.
        if value is None or value.is_absolute():
            return value
        requirements_file = info.data.get("requirements_file")
        base = requirements_file.parent if isinstance(requirements_file, Path) else Path.cwd()
        return Path(os.path.abspath(base / value))

    @field_validator("skip_import_check", "host_overrides", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return frozenset(part.strip() for part in value.split(",") if part.strip())
        return value

    @model_validator(mode="after")
    def _state_dir_outside_the_repo(self) -> Settings:
        # A checkout is replaced by a deployment and cleaned by git: what was added at run time would go with it.
        repo = self.requirements_file.parent
        if self.state_dir is not None and (self.state_dir == repo or repo in self.state_dir.parents):
            raise ValueError(
                f"BOOTSTRAP_STATE_DIR: {self.state_dir} is inside the repo folder {repo}, which a deployment replaces; "
                "set it outside (default: .bootstrap beside the packages folder)"
            )
        return self

    def pip_environment(self) -> dict[str, str]:
        """What bootstrap's own settings add to pip's environment (nothing unless set)."""
        env = {}
        if not self.allow_source_builds:  # no package's build code runs at host start-up
            env["PIP_ONLY_BINARY"] = ":all:"
        if self.index_timeout is not None:
            env["PIP_TIMEOUT"] = str(self.index_timeout)
        if self.index_retries is not None:
            env["PIP_RETRIES"] = str(self.index_retries)
        return env

    def as_environment(self) -> dict[str, str]:
        """These settings as ``BOOTSTRAP_*`` variables, every one of them: a child process built from them
        gets exactly these (an empty value is the default, as ``env_ignore_empty`` reads it)."""
        if self.workspace is not None:  # an org's settings reach a child as the workspace's (and `--org`)
            return self.workspace.as_environment()
        env = {}
        for name in Settings.model_fields:
            value = getattr(self, name)
            if value is None:
                text = ""
            elif isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, frozenset):
                text = ",".join(sorted(value))
            else:
                text = str(value)
            env[f"{ENV_PREFIX}{name.upper()}"] = text
        return env

    @property
    def org(self) -> str | None:
        """The organisation these settings are for (``for_org``); None: the workspace, the repo's own set."""
        scope = self.__dict__.get("_org_scope")
        return scope[0] if scope else None

    @property
    def workspace(self) -> Settings | None:
        """An organisation's settings: the workspace's, whose set its own is built on; None for the workspace."""
        scope = self.__dict__.get("_org_scope")
        return scope[1] if scope else None

    @property
    def orgs_folder(self) -> Path:
        """Where the organisations' files are: ``orgs_dir``, default ``orgs`` beside the requirements file."""
        workspace = self.workspace if self.workspace is not None else self
        if workspace.orgs_dir is not None:
            return workspace.orgs_dir
        return workspace.requirements_file.parent / ORGS_DIR

    def for_org(self, org: str) -> Settings:
        """The same settings for organisation ``org``: its file ``<orgs>/<org>/requirements.txt`` (and its lock
        beside it), its packages folder ``<packages>/orgs/<org>``, its state ``<state>/orgs/<org>``; the rest
        (policy, timeouts, backend) the workspace's. ``SettingsError`` for an id that is none."""
        workspace = self.workspace if self.workspace is not None else self
        if not valid_org_id(org):
            raise SettingsError(f"{str(org)[:80]!r} is not an org id: {ORG_ID_RULE}")
        where = workspace.sources.for_org(org, str(workspace.orgs_folder))  # the one place that lays an org out
        values = {name: getattr(workspace, name) for name in Settings.model_fields}
        values.update(
            requirements_file=Path(where.requirements_file),
            packages_dir=Path(where.packages_dir),
            state_dir=Path(where.state_dir),
            lock_file=None,  # its default, beside its file: ``where.lock_file``
            orgs_dir=None,
        )
        made = Settings.model_construct(**values)  # no environment read: these values are the ones
        made.__dict__["_org_scope"] = (org, workspace)
        return made

    @property
    def committed_lock_file(self) -> Path:
        """The committed lock: ``requirements.lock`` beside the requirements file unless set."""
        return self.lock_file if self.lock_file is not None else Path(default_lock_file(str(self.requirements_file)))

    @property
    def state_folder(self) -> Path:
        """``state_dir``, or its default: ``.bootstrap`` beside the packages folder (never in the repo folder)."""
        if self.state_dir is not None:
            return self.state_dir
        return Path(default_state_dir(str(self.packages_dir), str(self.requirements_file)))

    @cached_property
    def layout(self) -> Layout:
        """The packages folder's parts and the state folder's (built once, with the settings)."""
        return Layout(self.packages_dir, self.state_folder, lease_seconds=self.lease_seconds)

    @property
    def sources(self) -> Sources:
        """The files the active generation's freshness is judged by (see ``store.freshness``)."""
        return Sources(
            str(self.requirements_file),
            str(self.committed_lock_file),
            str(self.packages_dir),
            allow_world_writable=self.allow_world_writable,
            state_dir=str(self.state_folder),
            workspace_packages_dir=str(self.workspace.packages_dir) if self.workspace is not None else None,
        )


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment; a bad value is a ``SettingsError``, not a traceback.

    A ``BOOTSTRAP_*`` variable that is no setting (``BOOTSTRAP_PACKAGE_DIR``) is a warning naming the
    closest real one: a typo would otherwise silently leave the default in force.
    """
    _warn_of_unknown_variables()
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{ENV_PREFIX}{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            if err["loc"]
            else str(err["msg"]).removeprefix("Value error, ")
            for err in exc.errors()
        )
        raise SettingsError(f"invalid setting: {problems}") from None


def _warn_of_unknown_variables() -> None:
    known = sorted(name.upper() for name in Settings.model_fields)
    for variable in sorted(os.environ):
        name = variable.upper()[len(ENV_PREFIX) :]
        if variable.upper().startswith(ENV_PREFIX) and name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
            hint = f"; did you mean {ENV_PREFIX}{close[0]}?" if close else "; the README lists the settings"
            logging.getLogger("bootstrap").warning("%s is not a bootstrap setting (ignored)%s", variable, hint)
