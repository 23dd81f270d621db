"""Hermetic test set-up: pip sees only a fixture wheelhouse and an empty config file.

This machine has a global pip.conf (find-links, extra index URLs) and
``PIP_FIND_LINKS`` set: an autouse fixture strips every ``PIP_*`` and
``BOOTSTRAP_*`` variable and points ``PIP_CONFIG_FILE`` at an empty file, so
nothing of the machine leaks in. Packages come from tiny wheels written by
``tests/wheels.py``, through pip's own settings (``PIP_NO_INDEX``,
``PIP_FIND_LINKS``), which is also how an operator points at a wheelhouse.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bootstrap import cli
from bootstrap.settings import Settings, load_settings
from tests.wheels import build_wheelhouse

BACKEND = os.environ.get("BOOTSTRAP_TEST_BACKEND", "pip")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under the uv backend, tests of pip's own behaviour (marked ``pip_only``) do not apply."""
    if BACKEND != "uv":
        return
    skip = pytest.mark.skip(reason="pip's own behaviour: not the uv backend's")
    for item in items:
        if "pip_only" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheelhouse(tmp_path_factory.mktemp("wheelhouse"))


@pytest.fixture(scope="session")
def empty_pip_conf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pipconf") / "pip.conf"
    path.write_text("")
    return path


@pytest.fixture(scope="session")
def cache_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """pip's and pip-tools' caches for this session only (fixture wheels change between sessions)."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def isolated_pip(
    monkeypatch: pytest.MonkeyPatch, wheelhouse: Path, empty_pip_conf: Path, cache_home: Path, tmp_path: Path
) -> None:
    for key in list(os.environ):
        if key.startswith(("PIP_", "BOOTSTRAP_")) or key in ("PYTHONPATH", "VIRTUAL_ENV_PROMPT"):
            monkeypatch.delenv(key)
    # Never the machine's /home/repo or /home/.packages, even in a test that forgets the `repo` fixture.
    monkeypatch.setenv("BOOTSTRAP_REQUIREMENTS_FILE", str(tmp_path / "unset-repo" / "requirements.txt"))
    monkeypatch.setenv("BOOTSTRAP_PACKAGES_DIR", str(tmp_path / "unset-packages"))
    monkeypatch.setenv("PIP_CONFIG_FILE", str(empty_pip_conf))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheelhouse))
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_home))
    # `make test` runs the suite with pip-tools and pip, then its backend-neutral part again with uv.
    monkeypatch.setenv("BOOTSTRAP_BACKEND", BACKEND)


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """A test must not leave threads running (the subprocess helper starts some)."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive() and not t.daemon]
    assert not leaked, f"leaked threads: {leaked}"


@pytest.fixture
def slow_index(wheelhouse: Path) -> Iterator[str]:
    """A real find-links server on 127.0.0.1 that serves each wheel slowly (for kills mid-download)."""
    import functools
    import http.server
    import time

    class SlowHandler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.endswith(".whl"):
                time.sleep(1.5)
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:
            pass

    with local_server(functools.partial(SlowHandler, directory=str(wheelhouse))) as url:
        yield url + "/"


@contextlib.contextmanager
def local_server(handler: Any) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 in a thread, for as long as the block runs: its base URL."""
    import http.server

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Repo:
    """A workflow repo and a packages folder, with BOOTSTRAP_* pointing at them."""

    root: Path
    packages_dir: Path

    @property
    def requirements(self) -> Path:
        return self.root / "requirements.txt"

    @property
    def state_dir(self) -> Path:
        """The default state folder: ``.bootstrap`` beside the packages folder (the runtime overlay lives there)."""
        return self.packages_dir.parent / ".bootstrap"

    def write(self, *lines: str) -> None:
        self.requirements.write_text("".join(line + "\n" for line in lines))

    def settings(self, **overrides: object) -> Settings:
        return load_settings(**overrides)

    @property
    def manifest_path(self) -> Path:
        return self.packages_dir / "manifest.json"

    def manifest(self) -> dict:  # type: ignore[type-arg]
        return json.loads(self.manifest_path.read_text())

    def installed(self) -> dict[str, str]:
        return {p["name"]: p["version"] for p in self.manifest()["packages"]}


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Repo:
    root = tmp_path / "repo"
    root.mkdir()
    packages = tmp_path / "packages"
    monkeypatch.setenv("BOOTSTRAP_REQUIREMENTS_FILE", str(root / "requirements.txt"))
    monkeypatch.setenv("BOOTSTRAP_PACKAGES_DIR", str(packages))
    return Repo(root, packages)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def clean_process(tmp_path: Path) -> Iterator[None]:
    """Undo what activations, in-process org executions and workers do to this process."""
    from bootstrap.host import isolation, workers
    from tests.test_workflow import process_state_restored

    with process_state_restored(tmp_path):
        isolation.reset()
        try:
            yield
        finally:
            workers.POOL.shutdown()
            isolation.reset()


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Call the CLI in-process, as ``python -m bootstrap ARGS``."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = cli.main(list(args))
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


def python_in(site_dir: str | Path, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter that has activated ``site_dir`` like a host would."""
    script = f"import site, sys; site.addsitedir({str(site_dir)!r})\n{code}"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)


def python_with_bootstrap(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter of the test environment (bootstrap importable)."""
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env=env or dict(os.environ),
        cwd=str(Path(__file__).resolve().parent.parent),
    )


def session_processes(session: int) -> dict[int, str]:
    """The processes of ``session`` (one we started with start_new_session): pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) == session:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ProcessLookupError):
            continue
    return found


def children_running(session: int, needle: str) -> bool:
    return any(needle in cmdline for cmdline in session_processes(session).values())


def kill_session(session: int) -> None:
    """The whole host dies at once: the sync, pip, and anything pip started."""
    for pid in session_processes(session):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
