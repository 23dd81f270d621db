"""The backends: pip-tools and pip (the default), or uv (``BOOTSTRAP_BACKEND=uv``). ``backend_for`` picks one."""

from __future__ import annotations

import functools
import os
import shlex
from collections.abc import Callable

from bootstrap.errors import SettingsError
from bootstrap.settings import Settings
from bootstrap.tools.backends.base import Backend
from bootstrap.tools.backends.pip import PipBackend
from bootstrap.tools.backends.uv import UvBackend

__all__ = ["Backend", "PipBackend", "Tools", "UvBackend", "backend_for", "lazy_backend"]

#: The backend, made when first asked for: a sync that runs no tool never needs one (nor uv installed).
Tools = Callable[[], Backend]


def lazy_backend(settings: Settings) -> Tools:
    return functools.cache(functools.partial(backend_for, settings))


_TRUE = frozenset({"1", "true", "yes", "on"})


def backend_for(settings: Settings) -> Backend:
    """The backend the settings select, with its environment; a missing uv is a settings error."""
    if settings.backend == "pip":
        return PipBackend(settings.pip_environment())
    try:
        from uv import find_uv_bin  # an optional extra: only for this setting
    except ImportError:
        raise SettingsError(
            "BOOTSTRAP_BACKEND=uv needs uv: install it with `pip install uv` (the `[uv]` extra), "
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
    try:
        program = find_uv_bin()
    except FileNotFoundError:  # the uv package without its program (a broken install): not the packages folder's fault
        raise SettingsError(
            "BOOTSTRAP_BACKEND=uv needs the uv program, and the installed uv package has none: reinstall it with "
            "`pip install --force-reinstall uv`, or unset BOOTSTRAP_BACKEND to use pip"
        ) from None
    return UvBackend(program, env=env, options=tuple(options))


def _hand_on(env: dict[str, str], pip_name: str, uv_name: str) -> None:
    value = os.environ.get(pip_name)
    if value and uv_name not in os.environ:
        env[uv_name] = value
