"""Resolve the desired set to exact pins with pip-tools, reusing what it can.

In order: a committed lock that still matches the file is used as is; then a
lock cached by the hash of every input (normalised requirements, interpreter,
pip's index configuration, pip-tools version); only then ``pip-compile``,
run as a program (its Python API is private), seeded with the active pins so
an edit to one line does not move every other package.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from bootstrap import _subprocess, manifest, safety
from bootstrap._fs import atomic_write_text, text_sha256
from bootstrap._pipout import indexes, last_error, redact, uv_error, uv_places
from bootstrap.errors import CommandError, ResolutionError
from bootstrap.layout import Layout
from bootstrap.requirements import Desired
from bootstrap.settings import Settings

log = logging.getLogger("bootstrap")

_HEADER_KEY = "# bootstrap: input-sha256="
_HASH_VALUE = re.compile(r"^(sha256|sha384|sha512):[0-9a-fA-F]+$")

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
class Pin:
    name: str
    version: str | None  # None for a direct reference (``name @ URL``), pinned by its URL
    hashes: tuple[str, ...] = ()
    url: str | None = None

    def line(self) -> str:
        pin = f"{self.name} @ {self.url}" if self.url else f"{self.name}=={self.version}"
        return " ".join([pin, *(f"--hash={h}" for h in self.hashes)])


@dataclass(frozen=True)
class Lock:
    """Exact pins, the text pip installs them from, and where they came from."""

    pins: tuple[Pin, ...]
    text: str
    source: str  # "committed", "cache", "resolved" or "empty"
    committed_file: Path | None = None

    @property
    def pins_text(self) -> str:
        """The pins alone, one per line: what pip installs, whatever else the lock file said."""
        return "".join(pin.line() + "\n" for pin in sorted(self.pins, key=lambda p: p.name))

    @property
    def sha256(self) -> str:
        """Identifies the pins themselves: the same set has the same hash whatever its comments."""
        return text_sha256(self.pins_text)


def parse_lock(text: str, origin: str, urls_allowed_for: frozenset[str] = frozenset()) -> tuple[Pin, ...]:
    """Pins from a lock written by pip-compile (``name==version``, optional ``--hash`` lines).

    ``name @ URL`` is accepted only for the names the (policy-checked) requirements file
    itself gives as direct references: a lock can never bring in a URL of its own.
    """
    pins: list[Pin] = []
    for number, line in _joined_lines(text):
        if line.startswith("-"):
            raise ResolutionError(
                f"{origin}:{number}: options are not allowed in a lock ({line.split()[0]}): where packages come "
                "from is pip's configuration; write the lock again with `python -m bootstrap lock`"
            )
        spec, *options = line.split(" --hash")
        hashes = tuple(option.lstrip("=").strip() for option in options)
        for value in hashes:  # written back for pip: a "hash" with a space in it would be another option
            if not _HASH_VALUE.match(value):
                raise ResolutionError(f"{origin}:{number}: {redact(value)!r} is not a hash (algorithm:hexdigest)")
        try:
            requirement = Requirement(spec.strip())
        except InvalidRequirement as exc:
            raise ResolutionError(f"{origin}:{number}: not a valid pin ({exc}); regenerate the lock") from None
        if requirement.url:
            name = canonicalize_name(requirement.name)
            if name not in urls_allowed_for:
                raise ResolutionError(
                    f"{origin}:{number}: {name} is pinned to a URL that the requirements file does not name; "
                    "write the lock again with `python -m bootstrap lock`"
                )
            pins.append(Pin(name, None, hashes, requirement.url))
            continue
        specifiers = list(requirement.specifier)
        if len(specifiers) != 1 or specifiers[0].operator != "==" or "*" in specifiers[0].version:
            raise ResolutionError(f"{origin}:{number}: {spec.strip()} is not an exact pin (name==version)")
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        pins.append(Pin(canonicalize_name(requirement.name), specifiers[0].version, hashes))
    return tuple(pins)


def _joined_lines(text: str) -> list[tuple[int, str]]:
    result: list[tuple[int, str]] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip() if not raw.lstrip().startswith("--hash") else raw.strip()
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        line = (pending + line).strip()
        pending = ""
        if line:
            result.append((start, line))
    return result


def lock_header(desired: Desired) -> str:
    name = desired.requirements_file.name
    return (
        f"# Written by `python -m bootstrap lock` from {name}: commit it beside {name}.\n"
        f"# `sync` installs exactly these pins while {name} is unchanged; run `lock` again after editing it.\n"
        f"{_HEADER_KEY}{desired.committed_sha256}\n"
    )


def _header_sha(text: str) -> str | None:
    for line in text.splitlines()[:10]:
        if line.startswith(_HEADER_KEY):
            return line[len(_HEADER_KEY) :].strip()
    return None


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


def cache_key(desired: Desired, *, hashes: bool, backend: str = "pip") -> str:
    from importlib.metadata import version

    key = {
        "input": desired.input_text(),
        "constraints": desired.constraints_text(),
        "host": desired.host_constraints,
        "lock": desired.lock_constraints,
        "python": manifest.interpreter(),
        "pip_config": pip_config_fingerprint(),
        "hashes": hashes,
        "pip_tools": version("pip-tools"),
        "backend": _backend_version(backend),
    }
    return text_sha256(json.dumps(key, sort_keys=True))


def _backend_version(backend: str) -> str:
    """uv resolves a little differently from pip-tools: a resolution cached by one is not the other's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"{backend} {version('uv' if backend == 'uv' else 'pip-tools')}"
    except PackageNotFoundError:
        return backend


def reuse(settings: Settings, layout: Layout, desired: Desired) -> Lock | None:
    """A lock that needs no resolution: the empty set, the committed lock, or the cached one."""
    if not desired.requirements:
        return Lock(pins=(), text="", source="empty")
    committed = settings.committed_lock_file
    if committed.is_file():
        text = _read_lock(committed)
        recorded = _header_sha(text)
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
                return Lock(pins, text, "committed", committed)
            if not unsatisfied(desired, pins, committed_only=True):  # only the runtime additions are new
                # The committed pins stay in force: the additions are resolved around them (constraints).
                desired.lock_constraints = "".join(f"{pin.name}=={pin.version}\n" for pin in pins if pin.version)
                log.info("the committed lock does not cover %s (added at run time): resolving around it", unmet[0])
                return _cached(layout, desired, settings.backend)
            why = f"it does not satisfy {unmet[0]}"
        elif recorded is None:
            why = "it was not written by `bootstrap lock`"
        else:
            why = f"{desired.requirements_file.name} changed since it was written"
        log.warning(
            "the committed lock %s is stale (%s): resolving afresh; run `python -m bootstrap lock` and commit it",
            committed,
            why,
        )
    return _cached(layout, desired, settings.backend)


def _cached(layout: Layout, desired: Desired, backend: str) -> Lock | None:
    cached = _cache_path(layout, desired, backend)
    if cached.is_file():
        text = cached.read_text(encoding="utf-8")
        log.info("using the cached resolution %s", cached.name[:12])
        return Lock(parse_lock(text, str(cached), desired.direct_references), text, "cache")
    return None


def _read_lock(path: Path) -> str:
    real, folder = Path(os.path.realpath(path)), Path(os.path.realpath(path.parent))
    if real.parent != folder and folder not in real.parents:
        raise ResolutionError(f"{path} is a link to {real}, outside its folder; commit the lock itself")
    try:
        return path.read_text(encoding="utf-8-sig")  # -sig: a BOM some editors add is not content
    except UnicodeDecodeError:
        raise ResolutionError(f"{path} is not UTF-8 text; write it again with `python -m bootstrap lock`") from None


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


def _cache_path(layout: Layout, desired: Desired, backend: str) -> Path:
    return layout.lock_cache / f"{cache_key(desired, hashes=desired.has_hashes, backend=backend)}.txt"


def compile_and_cache(settings: Settings, layout: Layout, desired: Desired, *, seed: str | None) -> Lock:
    """Resolve with pip-compile and cache the result under the hash of its inputs."""
    cached = _cache_path(layout, desired, settings.backend)
    text = compile_lock(settings, desired, hashes=desired.has_hashes, seed=seed)
    safety.make_private_dir(cached.parent)
    atomic_write_text(cached, text)
    return Lock(parse_lock(text, "pip-compile output", desired.direct_references), text, "resolved")


def write_committed_lock(settings: Settings, desired: Desired, *, hashes: bool) -> Lock:
    """Resolve afresh (keeping the committed pins where they still fit) and write the lock for committing."""
    committed = settings.committed_lock_file
    seed = _read_lock(committed) if committed.is_file() else None
    text = (
        compile_lock(settings, desired, hashes=hashes or desired.has_hashes, seed=seed)
        if desired.requirements
        else lock_header(desired)
    )
    atomic_write_text(committed, text)
    return Lock(parse_lock(text, str(committed), desired.direct_references), text, "committed", committed)


def compile_lock(settings: Settings, desired: Desired, *, hashes: bool, seed: str | None) -> str:
    """Run the resolver (pip-compile, or uv) on the normalised input; return the lock text with bootstrap's header."""
    from bootstrap.backend import backend_for

    tools = backend_for(settings)
    count = len(desired.requirements)
    log.info("resolving %d requirement%s with %s", count, "" if count == 1 else "s", tools.resolver)
    with tempfile.TemporaryDirectory(prefix="bootstrap-resolve-") as folder:
        work = Path(folder)
        input_file = desired.write_compile_input(work)
        output = work / "requirements.lock"
        if seed:
            output.write_text(seed, encoding="utf-8")  # the resolver keeps existing pins that still fit
        argv = tools.compile_argv(input_file.name, output.name, hashes=hashes)
        try:
            _subprocess.run(
                argv,
                cwd=work,
                timeout=settings.resolve_timeout,
                on_line=lambda line: _progress(line, tools.resolver),
                env=tools.env,
            )
        except CommandError as exc:
            wheels_only = not settings.allow_source_builds
            explain = explain_uv_failure if tools.uv else explain_failure
            raise ResolutionError(explain(exc, desired, wheels_only=wheels_only)) from exc
        body = output.read_text(encoding="utf-8")
    return lock_header(desired) + body


def _progress(line: str, resolver: str = "pip-compile") -> None:
    stripped = line.strip()
    if stripped.startswith("Collecting "):  # pip-compile: one per distribution considered
        log.info("  resolving %s", stripped[len("Collecting ") :].split(" (from ", 1)[0])
    elif stripped.startswith("Resolved "):  # uv: "Resolved 12 packages in 80ms"
        log.info("  %s", stripped)
    else:
        log.debug("%s: %s", resolver, redact(line))


def explain_failure(exc: CommandError, desired: Desired, *, wheels_only: bool = False) -> str:
    """Turn pip-compile's traceback into one line: what failed, where it was asked, what to do."""
    output = exc.stderr + "\n" + exc.stdout
    where = indexes(output)
    if exc.timed_out:
        return f"resolution timed out on {where}; is it reachable? (raise BOOTSTRAP_RESOLVE_TIMEOUT if it is slow)"
    unreachable = re.search(
        r"(Could not fetch URL \S+|Failed to establish a new connection|Max retries exceeded|Read timed out)", output
    )
    if unreachable:
        return (
            f"could not reach {where} ({redact(unreachable.group(1))}); is it up, and is PIP_INDEX_URL right? "
            "(BOOTSTRAP_INDEX_TIMEOUT and BOOTSTRAP_INDEX_RETRIES set how long pip waits)"
        )
    not_found = re.search(
        r"Could not find a version that satisfies the requirement (\S+) \(from versions: ([^)]*)\)", output
    )
    if not_found:
        spec, versions = not_found.group(1), not_found.group(2).strip()
        name = canonicalize_name(re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0])
        origin = _asked_at(desired, name)
        if _host_pin(desired, name) is not None:
            return _host_lacks(desired, name, origin, where, f" ({versions or 'none'})")
        if versions and versions != "none":
            return f"{origin}no version of {redact(spec)} found on {where} (available: {versions}); check the version"
        return _not_found(origin, spec, where, wheels_only=wheels_only)
    # pip-compile may retry without the seeded pins: the last conflict block is the real one.
    conflicts = re.findall(r"The conflict is caused by:\n((?:[ \t]+\S[^\n]*\n?)+)", output)
    if conflicts:
        sides = "; ".join(line.strip() for line in conflicts[-1].splitlines() if line.strip())
        return f"the requirements conflict: {sides}; relax one of the pins"
    last = last_error(output)
    return f"pip-compile failed on {where}: {last}"


def _asked_at(desired: Desired, name: str) -> str:
    """``requirements.txt:3: `` where the file asks for ``name``, or nothing (a dependency)."""
    return next((f"{line.path.name}:{line.line}: " for line in desired.requirements if line.name == name), "")


def _host_pin(desired: Desired, name: str) -> str | None:
    return next((line for line in desired.host_constraints.splitlines() if line.startswith(f"{name}==")), None)


def _host_lacks(desired: Desired, name: str, origin: str, where: str, versions: str) -> str:
    """The index does not offer the host's own version of a package the set needs."""
    return (
        f"{origin}the requirements need {name}, which the host has ({_host_pin(desired, name)}), but {where} does "
        f"not offer that version{versions}; the index must carry the host's version, or an operator can let users "
        f"override it with BOOTSTRAP_HOST_OVERRIDES={name}"
    )


def _not_found(origin: str, spec: str, where: str, *, wheels_only: bool) -> str:
    wheels = (
        "; only wheels are installed: if it publishes only a source archive, an operator can allow building "
        "it with BOOTSTRAP_ALLOW_SOURCE_BUILDS=true"
        if wheels_only
        else ""
    )
    return (
        f"{origin}{redact(spec)} was not found on {where} (no versions at all); check the name, and that this "
        "index is the right one, is reachable and (a private index answers a wrong password with no versions) "
        f"accepts its credentials{wheels}"
    )


def explain_uv_failure(exc: CommandError, desired: Desired, *, wheels_only: bool = False) -> str:
    """The same one-line messages as ``explain_failure``, from uv's report."""
    output = exc.stderr + "\n" + exc.stdout
    where = uv_places()
    if exc.timed_out:
        return f"resolution timed out on {where}; is it reachable? (raise BOOTSTRAP_RESOLVE_TIMEOUT if it is slow)"
    unreachable = re.search(
        r"(Failed to fetch[^\n]*|error sending request[^\n]*|dns error[^\n]*|Connection refused|"
        r"operation timed out|Request failed after \d+ retr(?:y|ies))",
        output,
    )
    if unreachable:
        return (
            f"could not reach {where} ({redact(unreachable.group(1).strip())}); is it up, and is PIP_INDEX_URL "
            "right? (BOOTSTRAP_INDEX_TIMEOUT and BOOTSTRAP_INDEX_RETRIES set how long uv waits)"
        )
    decoration = " \u2570\u2500\u25b6\u2502\u00d7"  # uv's report draws with box characters on a terminal
    because = " ".join(line.strip(decoration) for line in output.splitlines() if line.strip()).strip()
    because = re.sub(r"^.*?No solution found when resolving dependencies:?\s*(?:cause:\s*)?", "", because)
    source_only = re.search(r"Because ([A-Za-z0-9._-]+?)(?:[<>=!~]=?\S*)? has no usable wheels", because)
    if source_only and "building from source is disabled" in because:
        name = canonicalize_name(source_only.group(1))
        origin = _asked_at(desired, name)
        return (
            f"{origin}{name} publishes only a source archive on {where}, and only wheels are installed: an operator "
            "can allow building it (which runs its build code) with BOOTSTRAP_ALLOW_SOURCE_BUILDS=true"
        )
    missing = re.search(
        r"(?:Because |and )(?:there are no versions of |)([A-Za-z0-9._-]+) (?:was not found in the|"
        r"has no versions)|there are no versions of ([A-Za-z0-9._-]+)",
        because,
    )
    if missing:
        name = canonicalize_name(missing.group(1) or missing.group(2))
        asked = next((line for line in desired.requirements if line.name == name), None)
        spec = str(asked.requirement) if asked else name
        return _not_found(_asked_at(desired, name), spec, where, wheels_only=wheels_only)
    required = re.search(r"you require ([A-Za-z0-9._-]+)([<>=!~][^ ,]*)", because)
    no_fit = re.search(r"only \S+ (?:is|are) available|there is no version of", because)
    if required and no_fit:
        name = canonicalize_name(required.group(1))
        wanted = required.group(1) + required.group(2)
        origin = _asked_at(desired, name)
        if _host_pin(desired, name) is not None:
            return _host_lacks(desired, name, origin, where, "")
        return f"{origin}no version of {redact(wanted)} found on {where} ({redact(because)}); check the version"
    if "No solution found" in output:
        return f"the requirements conflict: {redact(because)}; relax one of the pins"
    return f"uv pip compile failed on {where}: {uv_error(output)}"
