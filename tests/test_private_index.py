"""A real private index with basic auth: bootstrap installs from it, and its password never shows.

A module-scoped fixture runs pypiserver on 127.0.0.1 (an htpasswd file,
authentication for download and list, no fallback to PyPI) serving the
fixture wheelhouse. pip reaches it only through the operator's own
configuration (``PIP_INDEX_URL``, pip.conf, or ``PIP_FIND_LINKS`` with
``PIP_NO_INDEX``), with credentials in the URL and a password full of
URL-special characters. Whatever happens (success,
wrong password, unknown package or version, index down), the password, raw or
URL-encoded, alone or as ``user:password`` (or as a Basic header), appears in
no message, no output of any command (pip's own lines under ``-v`` included,
and a real child process's), no log record, and no file of the packages folder.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bootstrap.errors import BootstrapError
from bootstrap.pipeline.sync import sync
from tests.conftest import BACKEND, CliResult, Repo

PROJECT_ROOT = Path(__file__).resolve().parent.parent

USER = "alice"
PASSWORD = "s3cr@t:P4ss/w%rd#?"  # @ : / % # ?: each must be percent-encoded in a URL's userinfo
ENCODED = urllib.parse.quote(PASSWORD, safe="")  # s3cr%40t%3AP4ss%2Fw%25rd%23%3F
WRONG = "wr0ng%40guess"

# What must never show, compared case-insensitively (%3a is %3A): the password raw and encoded (fully, and with
# "/" left alone as urllib's default does), the user:password pair in both forms, the Basic auth header's
# payload, and distinctive fragments of the password (a redaction that stops half-way still leaks).
SECRETS = (
    PASSWORD,
    ENCODED,
    urllib.parse.quote(PASSWORD),
    f"{USER}:{PASSWORD}",
    f"{USER}:{ENCODED}",
    base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
    "s3cr@t",
    "s3cr%40t",
    "P4ss",
)


def assert_secret_free(data: str | bytes, where: str) -> None:
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    lowered = text.lower()
    for secret in SECRETS:
        at = lowered.find(secret.lower())
        assert at < 0, f"the index password leaked into {where}: ...{text[max(0, at - 80) : at + 80]!r}..."


def assert_folder_secret_free(folder: Path) -> int:
    """Every file under ``folder`` (hidden ones too), read as bytes; returns how many were read."""
    count = 0
    for parent, _dirs, files in os.walk(folder):
        for name in files:
            path = Path(parent) / name
            if path.is_symlink():
                continue
            assert_secret_free(path.read_bytes(), str(path))
            count += 1
    return count


# -- the index ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrivateIndex:
    port: int
    log: Path

    def url(self, password: str = ENCODED, *, port: int | None = None) -> str:
        return f"http://{USER}:{password}@127.0.0.1:{port or self.port}/simple/"

    def redacted(self, *, port: int | None = None) -> str:
        """How bootstrap names the index in its messages."""
        return f"http://****@127.0.0.1:{port or self.port}/simple/"

    def pip_says(self, *, port: int | None = None) -> str:
        """pip's own line naming the index, as bootstrap logs it (pip hides the password, bootstrap the user too).

        uv names no index when all goes well: its report of what it resolved shows its output is logged.
        """
        if BACKEND == "uv":
            return "uv pip compile: "  # uv's own lines, as bootstrap logs them
        return f"Looking in indexes: http://****@127.0.0.1:{port or self.port}/simple/"

    def links_say(self) -> str:
        """pip's own line naming the find-links page (uv names none: its own lines, as for the index)."""
        if BACKEND == "uv":
            return "uv pip compile: "
        return f"Looking in links: http://****@127.0.0.1:{self.port}/packages/"

    @property
    def links_url(self) -> str:
        """The same wheels as a find-links page (pypiserver's /packages/), behind the same password."""
        return f"http://{USER}:{ENCODED}@127.0.0.1:{self.port}/packages/"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _get(url: str, *, auth: tuple[str, str] | None = None) -> str:
    request = urllib.request.Request(url)
    if auth is not None:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    with _NO_PROXY.open(request, timeout=5) as response:
        return str(response.read().decode())


def _wait_until_serving(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            pytest.fail(f"pypiserver exited with code {process.returncode}:\n{log.read_text(errors='replace')}")
        try:
            _get(f"http://127.0.0.1:{port}/health")
            return
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"pypiserver did not answer within 30s:\n{log.read_text(errors='replace')}")
            time.sleep(0.1)


@pytest.fixture(scope="module")
def private_index(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateIndex]:
    """pypiserver on a free port of 127.0.0.1, basic auth (htpasswd) on download and list, no PyPI fallback."""
    with warnings.catch_warnings():  # passlib imports the crypt module, deprecated since Python 3.11
        warnings.simplefilter("ignore", DeprecationWarning)
        from passlib.apache import HtpasswdFile

    folder = tmp_path_factory.mktemp("private-index")
    htpasswd = folder / "htpasswd"
    passwords = HtpasswdFile(str(htpasswd), new=True, default_scheme="apr_md5_crypt")
    passwords.set_password(USER, PASSWORD)
    passwords.save()
    port = _free_port()
    log = folder / "pypiserver.log"
    argv = [sys.executable, "-m", "pypiserver", "run", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--authenticate", "download,list", "--passwords", str(htpasswd), "--disable-fallback"]
    argv += ["--server", "wsgiref", str(wheelhouse)]
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    with log.open("wb") as output:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        _wait_until_serving(process, port, log)
        # The index really is private: no answer without the password, the wheels with it.
        with pytest.raises(urllib.error.HTTPError) as denied:
            _get(f"http://127.0.0.1:{port}/simple/bsf-beta/")
        assert denied.value.code == 401
        assert "bsf_beta-1.0-py3-none-any.whl" in _get(
            f"http://127.0.0.1:{port}/simple/bsf-beta/", auth=(USER, PASSWORD)
        )
        yield PrivateIndex(port, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def index_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """pip sees no wheelhouse: only what the test configures (the private index)."""
    monkeypatch.delenv("PIP_NO_INDEX", raising=False)
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")  # a machine's proxy must not sit between pip and the index


@pytest.fixture
def bootstrap_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every record of logger ``bootstrap`` at DEBUG, also while the CLI runs (it turns propagation off)."""
    logger = logging.getLogger("bootstrap")
    caplog.set_level(logging.DEBUG, logger="bootstrap")
    logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)


# -- helpers ------------------------------------------------------------------------------------


def run_process(*args: str) -> subprocess.CompletedProcess[str]:
    """``python -m bootstrap ARGS`` as a real process: whatever its children print reaches its output."""
    return subprocess.run(
        [sys.executable, "-m", "bootstrap", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=str(PROJECT_ROOT),
        env=dict(os.environ),
        timeout=300,
    )


def assert_log_secret_free(caplog: pytest.LogCaptureFixture) -> None:
    assert caplog.records, "nothing was logged: the check below would prove nothing"
    for record in caplog.records:
        assert_secret_free(record.getMessage(), f"log record {record.levelname} {record.msg!r}")
    assert_secret_free(caplog.text, "the formatted log (tracebacks included)")


def assert_outputs_secret_free(outputs: dict[str, CliResult]) -> None:
    for name, result in outputs.items():
        assert_secret_free(result.out, f"stdout of `{name}`")
        assert_secret_free(result.err, f"stderr of `{name}`")


def inspect_commands(run_cli: Any) -> dict[str, CliResult]:
    return {
        " ".join(args): run_cli(*args)
        for args in (("status",), ("status", "--json"), ("check",), ("check", "--json"), ("verify", "--json"))
    }


def assert_secret_free_so_far(repo: Repo, caplog: pytest.LogCaptureFixture) -> None:
    """The manifest, every file of the packages folder, and everything logged until now."""
    assert_secret_free(repo.manifest_path.read_bytes(), "manifest.json")
    assert assert_folder_secret_free(repo.packages_dir) > 0
    assert_log_secret_free(caplog)


# -- a and b: a sync from the private index works and says nothing secret ------------------------


def _sync_without_leaking(repo: Repo, run_cli: Any, caplog: pytest.LogCaptureFixture, pip_says: str) -> None:
    """A cold ``sync -v`` in-process and again in a real process; then the other commands: nothing secret."""
    repo.write("bsf-beta==1.0")
    outputs: dict[str, CliResult] = {}

    verbose = outputs["-v sync"] = run_cli("-v", "sync")
    assert verbose.code == 0, verbose.err
    assert repo.installed() == {"bsf-alpha": "2.0", "bsf-beta": "1.0"}
    assert pip_says in verbose.err, verbose.err  # pip's own lines are there, so checking them means something
    assert any(pip_says in record.getMessage() for record in caplog.records)
    assert_secret_free_so_far(repo, caplog)

    # Again from nothing, as a real process: what pip-compile, pip and the import check print reaches its output.
    first = repo.packages_dir.rename(repo.packages_dir.with_name("packages-first"))
    process = run_process("-v", "sync")
    assert process.returncode == 0, process.stderr
    assert repo.installed() == {"bsf-alpha": "2.0", "bsf-beta": "1.0"}
    assert pip_says in process.stderr, process.stderr
    assert_secret_free(process.stdout, "stdout of `python -m bootstrap -v sync`")
    assert_secret_free(process.stderr, "stderr of `python -m bootstrap -v sync`")

    caplog.clear()
    outputs["sync"] = run_cli("sync")
    assert outputs["sync"].code == 0 and "up to date" in outputs["sync"].out
    outputs.update(inspect_commands(run_cli))
    assert outputs["check"].code == 0, outputs["check"].out
    assert outputs["verify --json"].code == 0
    assert_outputs_secret_free(outputs)
    assert repo.manifest()["status"] == "ok"
    assert_secret_free_so_far(repo, caplog)
    assert assert_folder_secret_free(repo.packages_dir) > 10  # manifest, locks, generation records, the wheels' files
    assert_folder_secret_free(first)


def test_sync_from_a_private_index_in_pip_index_url(
    repo: Repo,
    run_cli: Any,
    private_index: PrivateIndex,
    index_only: None,
    bootstrap_log: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", private_index.url())
    _sync_without_leaking(repo, run_cli, bootstrap_log, private_index.pip_says())

    # `lock` runs the same pip-compile: the lock written for committing names no index, let alone a password.
    bootstrap_log.clear()
    result = run_cli("-v", "lock")
    assert result.code == 0, result.err
    assert_outputs_secret_free({"-v lock": result})
    assert_log_secret_free(bootstrap_log)
    lock = repo.root / "requirements.lock"
    assert "bsf-alpha==2.0" in lock.read_text() and "bsf-beta==1.0" in lock.read_text()
    assert_secret_free(lock.read_bytes(), "requirements.lock")
    assert "127.0.0.1" not in lock.read_text()


@pytest.mark.pip_only  # uv does not read pip.conf (the README says so)
def test_sync_from_a_private_index_in_pip_conf(
    repo: Repo,
    run_cli: Any,
    private_index: PrivateIndex,
    index_only: None,
    bootstrap_log: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    conf = tmp_path / "pip.conf"
    conf.write_text(f"[global]\nindex-url = {private_index.url()}\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    _sync_without_leaking(repo, run_cli, bootstrap_log, private_index.pip_says())


def test_sync_from_private_find_links(
    repo: Repo,
    run_cli: Any,
    private_index: PrivateIndex,
    bootstrap_log: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A wheelhouse behind the password (``PIP_NO_INDEX`` + ``PIP_FIND_LINKS``): bootstrap names it itself."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("PIP_FIND_LINKS", private_index.links_url)
    _sync_without_leaking(repo, run_cli, bootstrap_log, private_index.links_say())


def test_without_the_password_the_index_refuses(
    repo: Repo, run_cli: Any, private_index: PrivateIndex, index_only: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The successes above are owed to the credentials: the same URL without them installs nothing."""
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{private_index.port}/simple/")
    repo.write("bsf-beta==1.0")
    result = run_cli("sync")
    assert result.code == 1
    assert not repo.manifest().get("packages")


# -- c: every failure is one clear line, and says nothing secret ----------------------------------


def _one_line_error(result: CliResult, needles: tuple[str, ...]) -> str:
    """Exit 1, one ``bootstrap: error:`` line, said last, with no traceback; returns that line."""
    assert result.code == 1
    assert "Traceback" not in result.err + result.out
    errors = [line for line in result.err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, result.err
    line = errors[0]
    assert line.startswith("bootstrap: error: ")
    assert result.err.rstrip("\n").splitlines()[-1] == line
    for needle in needles:
        assert needle in line, line
    return line


def _fails_without_leaking(
    repo: Repo, run_cli: Any, caplog: pytest.LogCaptureFixture, needles: tuple[str, ...], pip_says: str
) -> None:
    # The library: the exception, its cause (the failed command, shown under -v) and every log record.
    with pytest.raises(BootstrapError) as caught:
        sync(repo.settings())
    message = str(caught.value)
    for needle in needles:
        assert needle in message, message
    assert_secret_free(message, "the exception message")
    assert_secret_free(caught.value.message, "the exception's .message")
    assert_secret_free(repr(caught.value.__cause__), "the exception's cause")
    assert_secret_free(str(caught.value.__cause__), "the exception's cause")
    assert any(pip_says in record.getMessage() for record in caplog.records)
    assert_secret_free_so_far(repo, caplog)

    # The CLI in-process: one line (the line alone under -q); under -v pip's own output too.
    caplog.clear()
    outputs = {"sync": run_cli("sync"), "-q sync": run_cli("-q", "sync"), "-v sync": run_cli("-v", "sync")}
    line = _one_line_error(outputs["sync"], needles)
    assert outputs["-q sync"].code == 1 and outputs["-q sync"].err == line + "\n"
    assert outputs["-v sync"].code == 1
    assert outputs["-v sync"].err.rstrip("\n").splitlines()[-1] == line
    assert pip_says in outputs["-v sync"].err
    assert_secret_free_so_far(repo, caplog)

    # A real process: what the children print.
    process = run_process("-v", "sync")
    assert process.returncode == 1
    assert process.stderr.rstrip("\n").splitlines()[-1] == line
    assert pip_says in process.stderr
    assert_secret_free(process.stdout, "stdout of `python -m bootstrap -v sync`")
    assert_secret_free(process.stderr, "stderr of `python -m bootstrap -v sync`")

    # What records the failure and what reports on it.
    outputs.update(inspect_commands(run_cli))
    assert outputs["check"].code == 1
    assert_outputs_secret_free(outputs)
    manifest = repo.manifest()
    assert manifest["status"] == "failed"
    assert manifest["error"]["message"] == line.removeprefix("bootstrap: error: ")
    assert_secret_free_so_far(repo, caplog)


FAILURES = {  # case -> the requirements file
    "wrong-password": "bsf-beta==1.0",
    "unknown-package": "bsf-nonexistent",
    "unknown-version": "bsf-beta==9.9",
    "index-down": "bsf-beta==1.0",
}


@pytest.mark.parametrize("case", sorted(FAILURES))
def test_a_failure_is_one_line_and_never_shows_the_password(
    case: str,
    repo: Repo,
    run_cli: Any,
    private_index: PrivateIndex,
    index_only: None,
    bootstrap_log: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = _free_port() if case == "index-down" else private_index.port  # nothing listens there
    password = WRONG if case == "wrong-password" else ENCODED
    monkeypatch.setenv("PIP_INDEX_URL", private_index.url(password, port=port))
    if case == "index-down":  # one retry: pip says why it gave up (with none it only finds "no versions")
        monkeypatch.setenv("BOOTSTRAP_INDEX_RETRIES", "1")
        monkeypatch.setenv("BOOTSTRAP_INDEX_TIMEOUT", "5")
    repo.write(FAILURES[case])
    where = private_index.redacted(port=port)
    needles = {
        "wrong-password": ("requirements.txt:1:", "bsf-beta==1.0", where),
        "unknown-package": ("requirements.txt:1:", "bsf-nonexistent", "was not found", where),
        "unknown-version": ("requirements.txt:1:", "no version of bsf-beta==9.9", where)
        + (("available: 1.0, 2.0",) if BACKEND == "pip" else ()),  # uv's report does not list them
        "index-down": ("could not reach", where),
    }[case]
    _fails_without_leaking(repo, run_cli, bootstrap_log, needles, private_index.pip_says(port=port))


def test_a_failure_on_private_find_links_names_them_without_the_password(
    repo: Repo,
    run_cli: Any,
    private_index: PrivateIndex,
    bootstrap_log: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """pip hides the password in what it prints; the find-links bootstrap names come from the environment."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("PIP_FIND_LINKS", private_index.links_url)
    repo.write("bsf-nonexistent")
    where = f"find-links http://****@127.0.0.1:{private_index.port}/packages/"
    pip_says = private_index.links_say()
    _fails_without_leaking(repo, run_cli, bootstrap_log, ("bsf-nonexistent", "was not found", where), pip_says)
