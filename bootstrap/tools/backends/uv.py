"""uv resolves and installs (``BOOTSTRAP_BACKEND=uv``): ``uv pip compile``, ``uv pip install --target``.

uv hard-links from its cache (its default); after each install the linked files
are checked against their RECORD hashes, and an edited file's package is
dropped from uv's cache and installed again (a platform patching certifi's CA
bundle in place edits uv's cache file too).

uv does not read pip's configuration. So that one set of settings serves both,
pip's index settings in the environment are handed on to uv (``backend_for``):
``PIP_INDEX_URL``, ``PIP_EXTRA_INDEX_URL`` and ``PIP_FIND_LINKS`` through uv's
environment variables (credentials stay out of the command line, which any
local user can read), ``PIP_NO_INDEX`` and ``PIP_TRUSTED_HOST`` as options. A
``UV_*`` variable the operator set wins. pip.conf files are pip's alone: with
uv, configure uv (``UV_*``, ``uv.toml``). uv runs in a scratch folder, so no
project configuration (a ``pyproject.toml`` or ``uv.toml`` of the repo) reaches it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from packaging.utils import canonicalize_name

from bootstrap.errors import CommandError, InstallError, redact
from bootstrap.inputs.requirements import Desired
from bootstrap.store.fs import copy_tree, counted, network_filesystem
from bootstrap.store.records import changed_files, installed, shared_files, written_since
from bootstrap.tools import pipout, runner
from bootstrap.tools.backends.base import Backend, OnStart

log = logging.getLogger("bootstrap")


class UvBackend(Backend):
    name = "uv"
    resolver = "uv pip compile"
    installer = "uv pip install"
    speculates = False  # uv resolves in a fraction of an install: nothing to win by guessing beside it

    def __init__(self, uv: str, env: dict[str, str] | None = None, options: tuple[str, ...] = ()) -> None:
        super().__init__(env)
        self.uv = uv  # the uv program
        self.options = options  # index options handed on from pip's settings

    def compile_argv(self, input_file: str, output_file: str, *, hashes: bool) -> list[str]:
        argv = [self.uv, "pip", "compile", "--no-header", "--python", sys.executable, *self.options, "--no-progress"]
        if hashes:
            argv.append("--generate-hashes")
        return [*argv, "--output-file", output_file, input_file]

    def cache_clean_argv(self, names: list[str]) -> list[str]:
        """Drop these packages from uv's cache (their next install unpacks them afresh)."""
        return [self.uv, "cache", "clean", *names]

    def install_command(
        self, target: Path, requirements: Path, *, no_deps: bool, index_args: list[str]
    ) -> tuple[list[str], dict[str, str]]:
        """The committed file's allowed find-links join ``UV_FIND_LINKS`` (an option would replace the
        variable's links, not add to them)."""
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
        deps = ["--no-deps"] if no_deps else []
        argv = [self.uv, "pip", "install", "--target", str(target), "--python", sys.executable]
        return [*argv, *self.options, *rest, "--no-progress", *deps, "-r", str(requirements)], env

    def places(self, output: str) -> str:
        return pipout.uv_places()

    def last_error(self, output: str) -> str:
        return pipout.uv_error(output)

    def resolution_progress(self, line: str) -> None:
        if line.strip().startswith("Resolved "):  # "Resolved 12 packages in 80ms"
            log.info("  %s", line.strip())
        else:
            super().resolution_progress(line)

    def install(
        self,
        site_dir: Path,
        requirements: Path,
        *,
        no_deps: bool,
        timeout: float,
        quiet: bool = False,
        on_start: OnStart | None = None,
        index_args: list[str] | None = None,
    ) -> None:
        """On a network share, into a local folder first, then copied over: uv writes each file as a temp
        file it renames while still holding it open, which SMB refuses (EBUSY, measured through smbnetfs);
        where uv can hard-link from its cache it does so into the local folder."""
        options: dict[str, Any] = {
            "no_deps": no_deps,
            "timeout": timeout,
            "quiet": quiet,
            "on_start": on_start,
            "index_args": index_args,
        }
        kind = network_filesystem(site_dir)
        if kind is None:
            super().install(site_dir, requirements, **options)
            return
        scratch = Path(tempfile.mkdtemp(prefix="bootstrap-uv-"))
        try:
            super().install(scratch, requirements, **options)
            count = copy_tree(scratch, site_dir)
            log.info(
                "copied %s onto the %s share (uv installed them into a local folder)", counted(count, "file"), kind
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def run_install(self, site_dir: Path, run: Callable[[], None], *, timeout: float) -> None:
        """Install, then check what uv linked from its cache; an edited cache entry is cleaned and installed again."""

        def once() -> dict[str, str]:
            started = time.time_ns()
            run()
            (site_dir / ".lock").unlink(missing_ok=True)  # uv's lock on the target folder, not part of the set
            return _edited_in_cache(site_dir, started)

        edited = once()
        if edited:
            self._clean_cache(edited, timeout=timeout)
            _empty(site_dir)
            edited = once()
        if edited:
            raise InstallError(
                f"uv's cache holds a file that was edited after install ({next(iter(edited.values()))}), even "
                "after cleaning it; run `uv cache clean` and sync again"
            )

    def _clean_cache(self, edited: dict[str, str], *, timeout: float) -> None:
        log.warning(
            "uv's cache holds files edited after install (%s): dropping %s from uv's cache and installing again",
            "; ".join(edited.values()),
            ", ".join(sorted(edited)),
        )
        # `uv cache clean` waits for every other uv process reading the cache: not for long.
        try:
            runner.run(self.cache_clean_argv(sorted(edited)), timeout=min(timeout, 60), env=self.env)
        except CommandError as exc:
            why = (
                "timed out: uv processes are using the cache"
                if exc.timed_out
                else pipout.uv_error(exc.stderr + exc.stdout)
            )
            raise InstallError(
                f"uv's cache holds a file that was edited after install ({next(iter(edited.values()))}) and "
                f"`uv cache clean` failed ({why}); run `uv cache clean {' '.join(sorted(edited))}` and sync again"
            ) from exc

    def explain_resolution(self, exc: CommandError, desired: Desired, *, wheels_only: bool) -> str:
        """The same one-line messages as pip's, from uv's report."""
        output = exc.stderr + "\n" + exc.stdout
        where = pipout.uv_places()
        fetching = _fetching_failed(exc, output, desired, where)
        if fetching:
            return fetching
        because = _because(output)
        python = re.search(
            r"Because ([A-Za-z0-9._-]+?)(?:[<>=!~]=?\S*)? (?:requires|depends on) Python ?([<>=!~][^ ,]*)", because
        ) or re.search(
            r"current Python version \([^)]*\) does not satisfy Python ?[^ ]* and ([A-Za-z0-9._-]+?)(?:[<>=!~]=?\S*)?"
            r" depends on Python ?([<>=!~][^ ,]*)",
            because,
        )
        if python:
            name = canonicalize_name(python.group(1))
            running = ".".join(str(part) for part in sys.version_info[:3])
            return pipout.needs_python(pipout.asked_at(desired, name), name, python.group(2), running)
        source_only = re.search(r"Because ([A-Za-z0-9._-]+?)(?:[<>=!~]=?\S*)? has no usable wheels", because)
        if source_only and "building from source is disabled" in because:
            name = canonicalize_name(source_only.group(1))
            return (
                f"{pipout.asked_at(desired, name)}{name} publishes only a source archive on {where}, and only wheels "
                "are installed: an operator can allow building it (which runs its build code) with "
                "BOOTSTRAP_ALLOW_SOURCE_BUILDS=true"
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
            return pipout.not_found(pipout.asked_at(desired, name), spec, where, wheels_only=wheels_only)
        required = re.search(r"you require ([A-Za-z0-9._-]+)([<>=!~][^ ,]*)", because)
        no_fit = re.search(r"only \S+ (?:is|are) available|there is no version of", because)
        if required and no_fit:
            name = canonicalize_name(required.group(1))
            wanted = required.group(1) + required.group(2)
            origin = pipout.asked_at(desired, name)
            if pipout.host_pin(desired, name) is not None:
                return pipout.host_lacks(desired, name, origin, where, "")
            return f"{origin}no version of {redact(wanted)} found on {where} ({redact(because)}); check the version"
        if "No solution found" in output:
            host = pipout.host_conflict(desired, because)
            return host or f"the requirements conflict: {redact(because)}; relax one of the pins"
        return f"uv pip compile failed on {where}: {pipout.uv_error(output)}"


def _fetching_failed(exc: CommandError, output: str, desired: Desired, where: str) -> str | None:
    """What went wrong before any resolving: a hash, a time-out, an index error, an index out of reach."""
    mismatch = pipout.hash_mismatch(output, desired)
    if mismatch:
        return mismatch
    if exc.timed_out:
        return f"resolution timed out on {where}; is it reachable? (raise BOOTSTRAP_RESOLVE_TIMEOUT if it is slow)"
    failed = re.search(r"Failed to fetch: \S*?/([A-Za-z0-9._-]+)/?\s.*?server error \((5\d\d)", output, re.DOTALL)
    if failed:
        name = canonicalize_name(failed.group(1))
        return pipout.index_failed(pipout.asked_at(desired, name), name, where, failed.group(2))
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
    return None


def _because(output: str) -> str:
    """uv's resolution report as one line, without its box drawing and preamble."""
    decoration = " \u2570\u2500\u25b6\u2502\u00d7"  # uv's report draws with box characters on a terminal
    because = " ".join(line.strip(decoration) for line in output.splitlines() if line.strip()).strip()
    return re.sub(r"^.*?No solution found when resolving dependencies:?\s*(?:cause:\s*)?", "", because)


def _edited_in_cache(site_dir: Path, started_ns: int) -> dict[str, str]:
    """Distributions (and a file of each) that do not match their RECORD right after uv installed them.

    uv hard-links files from its cache (its default: fast, no copy). A file once edited in place
    through a generation (a platform patching certifi's CA bundle, say) is then the cache's file too:
    never build on such a file. Files uv unpacked into its cache during this install (written
    since it ``started_ns``: a cold cache) come straight from their wheel and are not read again.
    """
    edited = {}
    dists = installed(site_dir)
    # A file two distributions install differently matches one RECORD only: verification's to refuse, by name.
    conflicting = {dist.name for _, *pair in shared_files(dists) for dist in pair}
    for dist in dists:
        if dist.name in conflicting:
            continue
        changed = changed_files(site_dir, [dist], quick=written_since(started_ns))
        changed = [problem for problem in changed if problem.startswith("changed:")]
        if changed:  # (a missing file is verification's to report, not a sign of an edited cache)
            edited[dist.name] = changed[0]
    return edited


def _empty(folder: Path) -> None:
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
