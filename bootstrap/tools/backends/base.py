"""What every backend does: the command lines that resolve and install, and what their failures mean.

Only the tools differ. The policy, the staging folder, verification, the
generation, the manifest and the one-line errors are the same either way.
"""

from __future__ import annotations

import logging
import os
import subprocess
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

from bootstrap.errors import CommandError, InstallError, redact
from bootstrap.inputs.requirements import Desired
from bootstrap.tools import pipout, runner

log = logging.getLogger("bootstrap")

OnStart = Callable[[subprocess.Popen[str]], None]


class Backend(ABC):
    """pip-tools and pip (``PipBackend``), or uv (``UvBackend``)."""

    name: str  # "pip" or "uv": a setting's value
    resolver: str  # how messages name the resolver
    installer: str  # how messages name the installer
    #: A cold sync installs with the tool's own resolver beside the resolution, and keeps it if it matches.
    speculates: bool

    def __init__(self, env: dict[str, str] | None = None) -> None:
        self.env = dict(env or {})  # added to the children's environment

    @abstractmethod
    def compile_argv(self, input_file: str, output_file: str, *, hashes: bool) -> list[str]:
        """Resolve ``input_file`` into ``output_file`` (run in their folder); existing pins there are kept."""

    @abstractmethod
    def install_command(
        self, target: Path, requirements: Path, *, no_deps: bool, index_args: list[str]
    ) -> tuple[list[str], dict[str, str]]:
        """Install ``requirements`` into the empty folder ``target`` (no bytecode: compiled once, later).

        Returns the command and its environment. ``index_args``: the index options the operator allowed
        the committed file to give.
        """

    @abstractmethod
    def explain_resolution(self, exc: CommandError, desired: Desired, *, wheels_only: bool) -> str:
        """The resolver's failure as one line: what failed, where it was asked, what to do."""

    @abstractmethod
    def places(self, output: str) -> str:
        """Where the tool looked for packages, redacted (from its output where it says)."""

    @abstractmethod
    def last_error(self, output: str) -> str:
        """The tool's own account of what went wrong, as one line, redacted."""

    def diagnose_resolution(self, exc: CommandError, desired: Desired, *, wheels_only: bool) -> str:
        """``explain_resolution``, after asking the index more where the tool's own output says too little."""
        return self.explain_resolution(exc, desired, wheels_only=wheels_only)

    def resolution_progress(self, line: str) -> None:
        log.debug("%s: %s", self.resolver, redact(line))

    def explain_install(self, exc: CommandError) -> str:
        output = exc.stderr + "\n" + exc.stdout
        mismatch = pipout.hash_mismatch(output)
        if mismatch:
            return mismatch
        where = self.places(output)
        if exc.timed_out:
            return f"{self.installer} timed out on {where}; is it reachable? (raise BOOTSTRAP_INSTALL_TIMEOUT if slow)"
        if "No space left on device" in output or "os error 28" in output:
            return "the disk is full: free space in the packages folder's filesystem and sync again"
        return f"{self.installer} failed on {where}: {self.last_error(output)}"

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
        """Install ``requirements`` into the empty folder ``site_dir``; an ``InstallError`` says why not."""
        argv, env = self.install_command(site_dir, requirements, no_deps=no_deps, index_args=index_args or [])
        progress = _quiet_progress if quiet else _progress

        def run() -> None:
            try:
                runner.run(argv, timeout=timeout, on_line=progress, on_start=on_start, env=env, cwd=site_dir)
            except CommandError as exc:
                raise InstallError(self.explain_install(exc)) from exc

        self.run_install(site_dir, run, timeout=timeout)

    def run_install(self, site_dir: Path, run: Callable[[], None], *, timeout: float) -> None:
        """Run the install (``run``); a backend may check what it wrote, and run it again."""
        run()


def _quiet_progress(line: str) -> None:
    log.debug("pip (speculative): %s", redact(line))


def _progress(line: str) -> None:
    if line.startswith(("Collecting ", "Processing ")):  # one per distribution fetched
        what = line.split(" ", 1)[1].split(" (from ", 1)[0]
        log.info("  fetching %s", redact(os.path.basename(what)))
    elif line.startswith("Installing collected packages"):
        log.info("  %s", redact(line))
    else:
        log.debug("pip: %s", redact(line))
