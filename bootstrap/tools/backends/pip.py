"""pip-tools resolves (``pip-compile``, run as a program: its Python API is private), pip installs."""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from bootstrap.errors import CommandError, redact
from bootstrap.inputs.requirements import Desired
from bootstrap.tools import pipout, runner
from bootstrap.tools.backends.base import Backend

log = logging.getLogger("bootstrap")


class PipBackend(Backend):
    name = "pip"
    resolver = "pip-compile"
    installer = "pip install"
    speculates = True  # pip-compile takes about as long as an install: guessing beside it pays

    def compile_argv(self, input_file: str, output_file: str, *, hashes: bool) -> list[str]:
        # With hashes: pip-compile taking each file's sha256 from the index (tools.piptools_compile), not
        # downloading every file of every platform to hash it.
        program = [_SHIM] if hashes else ["piptools", "compile"]
        argv = [sys.executable, "-m", *program, "--verbose", "--no-header", "--strip-extras"]
        argv += ["--no-emit-options", "--allow-unsafe"]
        if hashes:
            argv.append("--generate-hashes")
        return [*argv, "--output-file", output_file, input_file]

    def install_command(
        self, target: Path, requirements: Path, *, no_deps: bool, index_args: list[str]
    ) -> tuple[list[str], dict[str, str]]:
        deps = ["--no-deps"] if no_deps else []
        argv = [sys.executable, "-m", "pip", "install", "--target", str(target), "--no-warn-script-location"]
        argv += ["--no-compile", *index_args, "--progress-bar", "off", *deps, "-r", str(requirements)]
        return argv, dict(self.env)

    def places(self, output: str) -> str:
        return pipout.indexes(output)

    def last_error(self, output: str) -> str:
        return pipout.last_error(output)

    def resolution_progress(self, line: str) -> None:
        stripped = line.strip()
        if stripped.startswith("Collecting "):  # one per distribution considered
            log.info("  resolving %s", stripped[len("Collecting ") :].split(" (from ", 1)[0])
        else:
            super().resolution_progress(line)

    def explain_install(self, exc: CommandError) -> str:
        return _missing_tool(exc) or super().explain_install(exc)

    def diagnose_resolution(self, exc: CommandError, desired: Desired, *, wheels_only: bool) -> str:
        """pip says "(from versions: none)" for a package that has only source archives (under wheels
        only), for an index answering HTTP 500, and for a name that does not exist. Which one it was,
        ``pip index versions`` tells (it builds nothing): asked only after such a failure."""
        none = re.search(r"satisfies the requirement (\S+) \(from versions: none\)", exc.stderr + exc.stdout)
        if none:
            spec = none.group(1)
            name = canonicalize_name(re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0])
            found = self._ask_index(name, desired)
            where = pipout.indexes(exc.stderr + "\n" + exc.stdout)
            origin = pipout.asked_at(desired, name)
            status = re.search(r'"GET [^"]*" (5\d\d)', found)
            if status:
                return pipout.index_failed(origin, name, where, status.group(1))
            versions = re.search(r"Available versions: (.+)", found)
            if versions and wheels_only:
                return pipout.source_only(origin, name, where, pipout.newest(versions.group(1), newest_first=True))
        no_wheel = self._no_wheel(exc, desired) if wheels_only else None
        return no_wheel or self.explain_resolution(exc, desired, wheels_only=wheels_only)

    def _no_wheel(self, exc: CommandError, desired: Desired) -> str | None:
        """Other versions have wheels, the one asked for has none for this interpreter (a source archive
        only, or wheels for other Pythons: markupsafe 2.0.0 on 3.11): the index, sources counted, says."""
        output = exc.stderr + "\n" + exc.stdout
        listed = re.search(r"satisfies the requirement (\S+) \(from versions: ([^)]+)\)", output)
        if listed is None or listed.group(2).strip() == "none" or _ignored_for_python(output, listed.group(1)):
            return None
        try:
            requirement = Requirement(listed.group(1))
        except InvalidRequirement:
            return None
        name = canonicalize_name(requirement.name)
        if pipout.host_pin(desired, name) is not None:
            return None  # the host's own version is what is missing: explain_resolution says so
        available = re.search(r"Available versions: (.+)", self._ask_index(name, desired))
        every = [part.strip() for part in available.group(1).split(",")] if available else []
        if not any(_fits(requirement, version) for version in every):
            return None
        origin, where = pipout.asked_at(desired, name), pipout.indexes(output)
        return pipout.no_wheel(origin, listed.group(1), where, pipout.newest(listed.group(2)))

    def _ask_index(self, name: str, desired: Desired) -> str:
        """What ``pip index versions`` says of ``name``, source archives counted (its output, or nothing).

        Asked where pip-compile asked: pip's configuration and the index options the operator allowed the
        file to give (and ``--pre`` if it says so), never anywhere else.
        """
        env = {**self.env, "PIP_ONLY_BINARY": ":none:"}  # asked, never installed: source archives count
        pre = ["--pre"] if "--pre" in desired.global_options else []
        argv = [sys.executable, "-m", "pip", "index", "versions", name, "-vv", *desired.pip_args(), *pre]
        try:
            return runner.run(argv, timeout=120, env=env).stdout
        except CommandError as exc:
            return exc.stdout + exc.stderr

    def explain_resolution(self, exc: CommandError, desired: Desired, *, wheels_only: bool) -> str:
        """Turn pip-compile's traceback into one line: what failed, where it was asked, what to do."""
        missing = _missing_tool(exc)
        if missing:
            return missing
        output = exc.stderr + "\n" + exc.stdout
        mismatch = pipout.hash_mismatch(output, desired)
        if mismatch:
            return mismatch
        where = pipout.indexes(output)
        if exc.timed_out:
            return f"resolution timed out on {where}; is it reachable? (raise BOOTSTRAP_RESOLVE_TIMEOUT if it is slow)"
        unreachable = re.search(
            r"(Could not fetch URL \S+|Failed to establish a new connection|Max retries exceeded|Read timed out)",
            output,
        )
        if unreachable:
            return (
                f"could not reach {where} ({redact(unreachable.group(1))}); is it up, and is PIP_INDEX_URL right? "
                "(BOOTSTRAP_INDEX_TIMEOUT and BOOTSTRAP_INDEX_RETRIES set how long pip waits)"
            )
        python = re.search(r"Package '([^']+)' requires a different Python: (\S+) not in '([^']*)'", output)
        # An index with data-requires-python: pip never fetches those files, it lists them as ignored.
        asked = re.search(r"satisfies the requirement (\S+)", output)
        needed = _ignored_for_python(output, asked.group(1)) if asked else None
        if python is None and asked and needed:
            name = canonicalize_name(re.split(r"[\s<>=!~;\[]", asked.group(1), maxsplit=1)[0])
            running = ".".join(str(part) for part in sys.version_info[:3])
            return pipout.needs_python(pipout.asked_at(desired, name), name, needed, running)
        if python:
            name, running, needed = canonicalize_name(python.group(1)), python.group(2), python.group(3)
            return pipout.needs_python(pipout.asked_at(desired, name), name, needed, running)
        not_found = re.search(
            r"Could not find a version that satisfies the requirement (\S+) \(from versions: ([^)]*)\)", output
        )
        if not_found:
            spec, versions = not_found.group(1), pipout.newest(not_found.group(2))
            name = canonicalize_name(re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0])
            origin = pipout.asked_at(desired, name)
            if pipout.host_pin(desired, name) is not None:
                return pipout.host_lacks(desired, name, origin, where, f" ({versions or 'none'})")
            if versions and versions != "none":
                return (
                    f"{origin}no version of {redact(spec)} found on {where} (available: {versions}); check the version"
                )
            return pipout.not_found(origin, spec, where, wheels_only=wheels_only)
        # pip-compile may retry without the seeded pins: the last conflict block is the real one.
        conflicts = re.findall(r"The conflict is caused by:\n((?:[ \t]+\S[^\n]*\n?)+)", output)
        if conflicts:
            sides = "; ".join(line.strip() for line in conflicts[-1].splitlines() if line.strip())
            return pipout.host_conflict(desired, sides) or f"the requirements conflict: {sides}; relax one of the pins"
        return f"pip-compile failed on {where}: {pipout.last_error(output)}"


def _fits(requirement: Requirement, version: str) -> bool:
    try:
        return requirement.specifier.contains(Version(version), prereleases=True)
    except InvalidVersion:
        return False


def _ignored_for_python(output: str, spec: str) -> str | None:
    """The Python a version ``spec`` allows would need, from pip's "Ignored the following versions that
    require a different python version" line; None when no version listed there fits ``spec``.

    pip prints that line for the whole resolution, not for the failed requirement: a Django 6 skipped
    for Python 3.12 is listed beside ``djhtml==1.4.13``, which has no such version. Only an ignored
    version the failed requirement allows explains it.
    """
    ignored = re.search(r"require a different python version: (.+)", output)
    if ignored is None:
        return None
    try:
        specifier = Requirement(spec).specifier
    except InvalidRequirement:
        return None
    for entry in ignored.group(1).split(";"):
        parts = entry.split()
        if len(parts) >= 3 and parts[1] == "Requires-Python":
            with contextlib.suppress(InvalidVersion):
                if specifier.contains(Version(parts[0]), prereleases=True):
                    return parts[2].rstrip(",")
    return None


_TOOL_MODULES = {"piptools": "pip-tools", "pip": "pip", "bootstrap": "bootstrap"}
_SHIM = "bootstrap.tools.piptools_compile"


def _missing_tool(exc: CommandError) -> str | None:
    """The interpreter could not even start the tool: say which, not that the index failed."""
    for module, distribution in _TOOL_MODULES.items():
        # `-m piptools` says "No module named piptools"; an import in bootstrap's shim "... named 'piptools'".
        # Exactly that module: never 'pipes' or 'pip._internal.x' (a package's build failing in its own way).
        said = re.search(rf"No module named (?:{module}$|'{module}')", exc.stderr, re.MULTILINE)
        if said and exc.argv[1:2] == ["-m"] and exc.argv[2:3] in ([module], [_SHIM]):
            return (
                f"{exc.argv[0]} cannot run {distribution} (No module named {module}): install bootstrap's tools where "
                "this interpreter finds them (its site-packages, or a folder named in PYTHONPATH)"
            )
    return None
