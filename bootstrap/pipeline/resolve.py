"""Resolve the desired set to exact pins with pip-tools (or uv), reusing what it can.

In order: a committed lock that still matches the file is used as is; then a
lock cached by the hash of every input (normalised requirements, interpreter,
pip's index configuration, pip-tools version); only then the resolver, run as
a program (pip-tools' Python API is private), seeded with the active pins so
an edit to one line does not move every other package.

Nothing here changes the ``Desired`` it is given: what a step derives (the
committed pins that runtime additions are resolved around) is returned.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bootstrap.errors import CommandError, ResolutionError, redact
from bootstrap.inputs.requirements import Desired, decode
from bootstrap.pipeline.lockfile import Lock, Pin, header_sha, lock_header, parse_lock, read_committed
from bootstrap.settings import Settings
from bootstrap.store import manifest, safety
from bootstrap.store.fs import MAX_LOCK_BYTES, atomic_write_text, read_limited, text_sha256
from bootstrap.store.layout import Layout
from bootstrap.tools import runner
from bootstrap.tools.backends import Backend, Tools

log = logging.getLogger("bootstrap")

# pip settings that change *what* resolves; the rest (logging, timeouts, cache) do not.
_IRRELEVANT_PIP_ENV = frozenset(
    {
        "PIP_LOG",
        "PIP_LOG_FILE",
        "PIP_NO_INPUT",
        "PIP_DISABLE_PIP_VERSION_CHECK",
        "PIP_DEFAULT_TIMEOUT",
        "PIP_TIMEOUT",
        "PIP_RETRIES",
        "PIP_CACHE_DIR",
        "PIP_NO_CACHE_DIR",
        "PIP_PROGRESS_BAR",
        "PIP_VERBOSE",
        "PIP_QUIET",
        "PIP_NO_COLOR",
        "PIP_ROOT_USER_ACTION",
    }
)


@dataclass(frozen=True)
class Found:
    """What ``reuse`` found without resolving: a lock, or the pins a resolution must keep.

    ``lock`` is None when the resolver has to run; ``around`` then holds the committed lock's
    pins (``name==version`` lines) when only runtime additions are new: they stay in force.
    """

    lock: Lock | None
    around: str = ""


def pip_config_fingerprint() -> str:
    """A hash of pip's configuration (env and config files): part of the cache key, never stored in clear."""
    # Redacted: credentials do not change what resolves, and even a hash of them is not kept in a file name.
    parts = [
        f"{k}={redact(v)}"
        for k, v in sorted(os.environ.items())
        if k.startswith("PIP_") and k not in _IRRELEVANT_PIP_ENV
    ]
    candidates = [os.environ.get("PIP_CONFIG_FILE", ""), "/etc/pip.conf", os.path.join(sys.prefix, "pip.conf")]
    candidates += [os.path.join(d, "pip", "pip.conf") for d in os.environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":")]
    candidates += [os.path.expanduser("~/.pip/pip.conf"), os.path.expanduser("~/.config/pip/pip.conf")]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate):
            try:
                parts.append(f"{candidate}:{redact(Path(candidate).read_text(errors='replace'))}")
            except OSError:
                continue
    return text_sha256("\n".join(parts))


def cache_key(desired: Desired, *, hashes: bool, backend: str = "pip", around: str = "", shared: bool = False) -> str:
    """The hash of everything a resolution depends on: the name of its cache entry.

    ``shared``: the key of the remote cache's entry (``remote.cache.lock_key``), without pip's configuration:
    where an instance reaches the index (a mirror, a wheelhouse, none at all) must not change which versions
    it serves; that every instance serves the same ones is the point."""
    from importlib.metadata import version

    key = {
        "input": desired.input_text(),
        "constraints": desired.constraints_text(),
        "host": desired.host_constraints,
        "lock": around,
        "python": manifest.interpreter(),
        "pip_config": "shared" if shared else pip_config_fingerprint(),
        "hashes": hashes,
        "pip_tools": version("pip-tools"),
        "backend": _backend_version(backend),
    }
    return text_sha256(json.dumps(key, sort_keys=True))


# The distribution whose version a backend's resolutions depend on.
_RESOLVER_DISTRIBUTION = {"pip": "pip-tools", "uv": "uv"}


def _backend_version(backend: str) -> str:
    """uv resolves a little differently from pip-tools: a resolution cached by one is not the other's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{backend} {version(_RESOLVER_DISTRIBUTION.get(backend, backend))}"
    except PackageNotFoundError:
        return backend


def reuse(settings: Settings, layout: Layout, desired: Desired) -> Found:
    """A lock that needs no resolution: the empty set, the committed lock, or the cached one."""
    if not desired.requirements:
        return Found(Lock(pins=(), text="", source="empty"))
    committed = settings.committed_lock_file
    if not os.path.lexists(committed):  # a FIFO or a folder there is refused by read_committed, not ignored
        return Found(_cached(settings, layout, desired))
    text = read_committed(committed)
    recorded = header_sha(text)
    if recorded == desired.committed_sha256:
        pins = parse_lock(text, str(committed), desired.direct_references)
        unmet = unsatisfied(desired, pins)
        if desired.require_hashes and any(not pin.hashes for pin in pins):
            raise ResolutionError(
                f"BOOTSTRAP_REQUIRE_HASHES is set, but {committed} has pins without hashes; "
                "write it with `python -m bootstrap lock --hashes`"
            )
        if not unmet:
            log.info("using the committed lock %s", committed)
            return Found(Lock(pins, text, "committed", committed))
        if not unsatisfied(desired, pins, committed_only=True):  # only the runtime additions are new
            # The committed pins stay in force: the additions are resolved around them (constraints).
            around = "".join(f"{pin.spec()}\n" for pin in pins if pin.version)
            log.info("the committed lock does not cover %s (added at run time): resolving around it", unmet[0])
            return Found(_cached(settings, layout, desired, around), around)
        why = f"it does not satisfy {unmet[0]}"
    elif recorded is None:
        why = "it was not written by `bootstrap lock`"
    else:  # an organisation's lock holds the workspace's pins too
        also = " or the workspace's pins" if settings.org is not None else ""
        why = f"{desired.requirements_file.name}{also} changed since it was written"
    log.warning(
        "the committed lock %s is stale (%s): resolving afresh; run `python -m bootstrap lock%s` and commit it",
        committed,
        why,
        f" --org {settings.org}" if settings.org is not None else "",
    )
    return Found(_cached(settings, layout, desired))


def _cached(settings: Settings, layout: Layout, desired: Desired, around: str = "") -> Lock | None:
    """The cached resolution of these very inputs, if it still satisfies them as a committed lock must.

    The cache is a file in the packages folder, trusted no more than a committed lock: one edited (or
    damaged) so that it no longer meets the requirements is resolved afresh, and the result replaces it.
    """
    cached = _cache_path(layout, desired, settings.backend, around)
    if not cached.is_file():
        return _remote(settings, cached, desired, around)
    try:
        text = decode(read_limited(cached, MAX_LOCK_BYTES))
        pins = parse_lock(text, str(cached), desired.direct_references)
    except (OSError, ValueError, ResolutionError) as exc:
        log.warning("the cached resolution %s cannot be used (%s): resolving afresh", cached.name[:12], exc)
        return None
    unmet = unsatisfied(desired, pins)
    if not unmet and desired.require_hashes and any(not pin.hashes for pin in pins):
        unmet = ["BOOTSTRAP_REQUIRE_HASHES (pins without hashes)"]
    if unmet:
        log.warning(
            "the cached resolution %s does not satisfy %s (edited or damaged): resolving afresh",
            cached.name[:12],
            unmet[0],
        )
        return None
    log.info("using the cached resolution %s", cached.name[:12])
    return Lock(pins, text, "cache")


def _remote(settings: Settings, cached: Path, desired: Desired, around: str) -> Lock | None:
    """The lock another instance resolved from the same inputs (BOOTSTRAP_REMOTE_CACHE), kept in the local cache
    too; None when there is none (or it does not satisfy the requirements: then a resolution here)."""
    if settings.remote_cache is None or settings.org is not None:
        return None
    from bootstrap.remote import cache  # slow path: the remote cache only when it is set

    key = cache_key(desired, hashes=desired.has_hashes, backend=settings.backend, around=around, shared=True)
    text = cache.fetch_lock(settings, key)
    if text is None:
        return None
    try:
        pins = parse_lock(text, "the remote cache's lock", desired.direct_references)
    except ResolutionError as exc:
        log.warning("the remote cache's lock %s cannot be used (%s): resolving afresh", key[:12], redact(str(exc)))
        return None
    unmet = unsatisfied(desired, pins)
    if unmet or (desired.require_hashes and any(not pin.hashes for pin in pins)):
        log.warning(
            "the remote cache's lock %s does not satisfy %s: resolving afresh", key[:12], (unmet or ["hashes"])[0]
        )
        return None
    safety.make_private_dir(cached.parent)
    atomic_write_text(cached, text)
    log.info("using the remote cache's resolution %s (another instance's)", key[:12])
    return Lock(pins, text, "remote-cache")


def unsatisfied(desired: Desired, pins: tuple[Pin, ...], *, committed_only: bool = False) -> list[str]:
    """The requirements (for this interpreter) that ``pins`` do not meet, as ``file:line: spec``.

    Runtime additions kept as constraints (their package is in the committed file too) count as well.
    """
    pinned = {pin.name: pin for pin in pins}
    unmet = []
    lines = [*desired.requirements, *(line for line in desired.constraints if line.runtime)]
    for line in lines:
        if committed_only and line.runtime:
            continue
        requirement = line.requirement
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        pin = pinned.get(line.name)
        if pin is None:
            unmet.append(f"{line.path.name}:{line.line}: {requirement}")
        elif requirement.url:
            if pin.url != requirement.url:
                unmet.append(f"{line.path.name}:{line.line}: {requirement}")
        elif pin.version is None or not requirement.specifier.contains(pin.version, prereleases=True):
            unmet.append(f"{line.path.name}:{line.line}: {requirement}")
    return unmet


def _cache_path(layout: Layout, desired: Desired, backend: str, around: str = "") -> Path:
    return layout.lock_cache / f"{cache_key(desired, hashes=desired.has_hashes, backend=backend, around=around)}.txt"


def compile_and_cache(
    settings: Settings, layout: Layout, desired: Desired, tools: Backend, *, seed: str | None, around: str = ""
) -> Lock:
    """Resolve and cache the result under the hash of its inputs."""
    cached = _cache_path(layout, desired, settings.backend, around)
    text = compile_lock(settings, desired, tools, hashes=desired.has_hashes, seed=seed, around=around)
    safety.make_private_dir(cached.parent)
    atomic_write_text(cached, text)
    lock = Lock(parse_lock(text, "pip-compile output", desired.direct_references), text, "resolved")
    if settings.remote_cache is not None and settings.org is None:  # every instance takes this resolution
        from bootstrap.remote import cache  # slow path: the remote cache only when it is set

        key = cache_key(desired, hashes=desired.has_hashes, backend=settings.backend, around=around, shared=True)
        cache.upload_lock(settings, key, text)
    return lock


def write_committed_lock(settings: Settings, desired: Desired, make_tools: Tools, *, hashes: bool) -> Lock:
    """Resolve afresh (keeping the committed pins where they still fit) and write the lock for committing."""
    committed = settings.committed_lock_file
    seed = read_committed(committed) if os.path.lexists(committed) else None
    text = (
        compile_lock(settings, desired, make_tools(), hashes=hashes or desired.has_hashes, seed=seed)
        if desired.requirements
        else lock_header(desired)
    )
    atomic_write_text(committed, text)
    return Lock(parse_lock(text, str(committed), desired.direct_references), text, "committed", committed)


def compile_lock(
    settings: Settings, desired: Desired, tools: Backend, *, hashes: bool, seed: str | None, around: str = ""
) -> str:
    """Run the resolver on the normalised input; return the lock text with bootstrap's header."""
    layered = len(desired.layered_on)
    count = len(desired.requirements) - layered
    around_pins = f" around the workspace's {layered} pin{'' if layered == 1 else 's'}" if layered else ""
    log.info("resolving %d requirement%s with %s%s", count, "" if count == 1 else "s", tools.resolver, around_pins)
    with tempfile.TemporaryDirectory(prefix="bootstrap-resolve-") as folder:
        work = Path(folder)
        input_file = desired.write_compile_input(work, around)
        output = work / "requirements.lock"
        if seed:
            output.write_text(seed, encoding="utf-8")  # the resolver keeps existing pins that still fit
        argv = tools.compile_argv(input_file.name, output.name, hashes=hashes)
        try:
            runner.run(
                argv, cwd=work, timeout=settings.resolve_timeout, on_line=tools.resolution_progress, env=tools.env
            )
        except CommandError as exc:
            explained = tools.diagnose_resolution(exc, desired, wheels_only=not settings.allow_source_builds)
            raise ResolutionError(explained) from exc
        body = output.read_text(encoding="utf-8")
    return lock_header(desired) + body + _layered_pins(desired, body)


def _layered_pins(desired: Desired, body: str) -> str:
    """An organisation's lock: the workspace's pins its own lines did not pull in (they were constraints), as they
    are, so that the lock holds its whole set."""
    if not desired.layered_on:
        return ""
    pinned = {pin.name for pin in parse_lock(body, "pip-compile output", desired.direct_references)}
    missing = [line for line in desired.layered_on if line.name not in pinned]
    return "".join(f"{line.requirement}\n" for line in missing)
