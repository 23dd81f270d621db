"""The tools that resolve and install: pip-tools and pip (the default), or uv (``BOOTSTRAP_BACKEND=uv``).

Only the command lines differ. The policy, the staging folder, verification,
the generation, the manifest and the one-line errors are the same either way.

uv hard-links from its cache (its default); ``install`` checks what it linked
against the RECORD hashes and drops an edited file's package from uv's cache.

uv does not read pip's configuration. So that one set of settings serves both,
pip's index settings in the environment are handed on to uv: ``PIP_INDEX_URL``
``PIP_EXTRA_INDEX_URL`` and ``PIP_FIND_LINKS`` through uv's environment
variables (credentials stay out of the command line, which any local user can
read), ``PIP_NO_INDEX`` and ``PIP_TRUSTED_HOST`` as options. A ``UV_*`` variable the
operator set wins. pip.conf files are pip's alone: with uv, configure uv
(``UV_*``, ``uv.toml``). uv runs in a scratch folder, so no project
configuration (a ``pyproject.toml`` or ``uv.toml`` of the repo) reaches it.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bootstrap.errors import SettingsError
from bootstrap.settings import Settings

_TRUE = frozenset({"1", "true", "yes", "on"})


@dataclass(frozen=True)
class Backend:
    name: str  # "pip" or "uv"
    env: dict[str, str] = field(default_factory=dict)  # added to the children's environment
    uv: str | None = None  # the uv program
    uv_options: tuple[str, ...] = ()  # index options handed on from pip's settings

    @property
    def resolver(self) -> str:
        """How messages name the resolver."""
        return "uv pip compile" if self.uv else "pip-compile"

    @property
    def installer(self) -> str:
        return "uv pip install" if self.uv else "pip install"

    def compile_argv(self, input_file: str, output_file: str, *, hashes: bool) -> list[str]:
        """Resolve ``input_file`` into ``output_file`` (run in their folder); existing pins there are kept."""
        if self.uv:
            argv = [self.uv, "pip", "compile", "--no-header", "--python", sys.executable, *self.uv_options]
            argv += ["--no-progress", "--output-file", output_file, input_file]
        else:
            argv = [sys.executable, "-m", "piptools", "compile", "--verbose", "--no-header", "--strip-extras"]
            argv += ["--no-emit-options", "--allow-unsafe", "--output-file", output_file, input_file]
        if hashes:
            argv.insert(argv.index("--output-file"), "--generate-hashes")
        return argv

    def cache_clean_argv(self, names: list[str]) -> list[str]:
        """Drop these packages from uv's cache (their next install unpacks them afresh)."""
        assert self.uv
        return [self.uv, "cache", "clean", *names]

    def install_command(
        self, target: Path, requirements: Path, *, no_deps: bool, index_args: list[str]
    ) -> tuple[list[str], dict[str, str]]:
        """Install ``requirements`` into the empty folder ``target`` (no bytecode: compiled once, later).

        Returns the command and its environment. ``index_args``: the index options the operator allowed
        the committed file to give; for uv, its find-links join ``UV_FIND_LINKS`` (an option would replace
        the variable's links, not add to them).
        """
        deps = ["--no-deps"] if no_deps else []
        if not self.uv:
            argv = [sys.executable, "-m", "pip", "install", "--target", str(target), "--no-warn-script-location"]
            argv += ["--no-compile", *index_args, "--progress-bar", "off", *deps, "-r", str(requirements)]
            return argv, self.env
        env, rest = dict(self.env), []
        links = [link for link in (env.get("UV_FIND_LINKS") or os.environ.get("UV_FIND_LINKS", "")).split(",") if link]
        tokens = iter(index_args)
        for token in tokens:
            if token in ("-f", "--find-links"):
                links.append(next(tokens, ""))
            elif token.startswith("--find-links="):
                links.append(token.split("=", 1)[1])
            else:
                rest.append(token)
        if links:
            env["UV_FIND_LINKS"] = ",".join(link for link in links if link)
        argv = [self.uv, "pip", "install", "--target", str(target), "--python", sys.executable]
        return [*argv, *self.uv_options, *rest, "--no-progress", *deps, "-r", str(requirements)], env


def backend_for(settings: Settings) -> Backend:
    """The backend the settings select, with its environment; a missing uv is a settings error."""
    if settings.backend == "pip":
        return Backend("pip", env=settings.pip_environment())
    try:
        from uv import find_uv_bin
    except ImportError:
        raise SettingsError(
            "BOOTSTRAP_BACKEND=uv needs uv: install it with `pip install 'bootstrap-packages[uv]'`, "
            "or unset BOOTSTRAP_BACKEND to use pip"
        ) from None
    env: dict[str, str] = {}
    options: list[str] = []
    if not settings.allow_source_builds:  # no package's build code runs at host start-up
        options += ["--only-binary", ":all:"]
    _hand_on(env, "PIP_INDEX_URL", "UV_INDEX_URL")
    _hand_on(env, "PIP_EXTRA_INDEX_URL", "UV_EXTRA_INDEX_URL")
    if os.environ.get("PIP_NO_INDEX", "").strip().lower() in _TRUE:
        options.append("--no-index")
    links = shlex.split(os.environ.get("PIP_FIND_LINKS", ""))
    if links and "UV_FIND_LINKS" not in os.environ:  # through the environment: a link may carry a password
        env["UV_FIND_LINKS"] = ",".join(links)
    for trusted in shlex.split(os.environ.get("PIP_TRUSTED_HOST", "")):
        options += ["--allow-insecure-host", trusted]
    if settings.index_timeout is not None and "UV_HTTP_TIMEOUT" not in os.environ:
        env["UV_HTTP_TIMEOUT"] = str(int(settings.index_timeout) or 1)
    if settings.index_retries is not None and "UV_HTTP_RETRIES" not in os.environ:
        env["UV_HTTP_RETRIES"] = str(settings.index_retries)
    return Backend("uv", env=env, uv=find_uv_bin(), uv_options=tuple(options))


def _hand_on(env: dict[str, str], pip_name: str, uv_name: str) -> None:
    value = os.environ.get(pip_name)
    if value and uv_name not in os.environ:
        env[uv_name] = value
