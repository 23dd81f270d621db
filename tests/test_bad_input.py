"""Bad input never breaks what is serving: one clear line, the failure recorded, the last good generation kept."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bootstrap.errors import BootstrapError, RequirementsError
from bootstrap.pipeline.sync import sync
from tests.conftest import BACKEND, CliResult, Repo, local_server, python_in


def good_sync(repo: Repo) -> dict[str, Any]:
    """A first, successful sync of bsf-alpha==1.0; returns its manifest."""
    repo.write("bsf-alpha==1.0")
    assert sync(repo.settings()).changed
    m = repo.manifest()
    assert m["status"] == "ok"
    return m


def assert_one_line_error(result: CliResult, *needles: str) -> str:
    """Exit non-zero, exactly one ``bootstrap: error:`` line on stderr, no traceback; returns that line."""
    assert result.code != 0
    assert "Traceback" not in result.err and "Traceback" not in result.out
    errors = [line for line in result.err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, result.err
    line = errors[0]
    assert line.startswith("bootstrap: error: ")
    assert result.err.rstrip("\n").splitlines()[-1] == line  # the error is the last thing said
    for needle in needles:
        assert needle in line, line
    return line


def assert_still_serving(repo: Repo, previous: dict[str, Any], *, stage: str) -> dict[str, Any]:
    """The previous generation is still the active one, intact, and the failure is recorded."""
    m = repo.manifest()
    assert m["generation"] == previous["generation"]
    assert m["site_dir"] == previous["site_dir"]
    assert m["packages"] == previous["packages"]
    assert m["lock_sha256"] == previous["lock_sha256"]
    assert Path(m["site_dir"]).is_dir()
    proc = python_in(m["site_dir"], "import bsf_alpha; print(bsf_alpha.__version__, bsf_alpha.__file__)")
    assert proc.returncode == 0, proc.stderr
    version, location = proc.stdout.split()
    assert version == "1.0" and location.startswith(m["site_dir"])
    assert m["status"] == "failed"
    error = m["error"]
    assert isinstance(error, dict)
    assert error["stage"] == stage
    assert error["message"] and isinstance(error["message"], str)
    assert isinstance(error["at"], str) and error["at"].endswith("Z")
    generations = sorted(p.name for p in (repo.packages_dir / "generations").iterdir())
    assert generations == [previous["generation"]]  # nothing half-built was published
    return m


def assert_no_staging_debris(repo: Repo) -> None:
    staging = repo.packages_dir / "staging"
    assert not staging.exists() or list(staging.iterdir()) == []


# -- the requirements file itself is bad --------------------------------------------------------


def test_malformed_line_via_the_cli(repo: Repo, run_cli: Any) -> None:
    previous = good_sync(repo)
    repo.write("bsf-alpha==1.0", "colorama>=>1")
    result = run_cli("sync")
    assert result.code != 0
    assert "Traceback" not in result.err + result.out
    assert len(result.err.splitlines()) == 1, result.err
    line = result.err.splitlines()[0]
    assert line.startswith("bootstrap: error:")
    assert "requirements.txt:2:" in line and "colorama>=>1" in line
    m = assert_still_serving(repo, previous, stage="read")
    assert "requirements.txt:2:" in m["error"]["message"]


def test_malformed_line_via_the_api(repo: Repo) -> None:
    previous = good_sync(repo)
    repo.write("# pinned", "bsf-alpha==1.0 --install-option=--fast")
    with pytest.raises(RequirementsError) as info:
        sync(repo.settings())
    assert info.value.stage == "read" and info.value.line == 2
    assert str(info.value).startswith(f"{repo.requirements}:2: ")
    m = assert_still_serving(repo, previous, stage="read")
    assert m["error"]["message"] == str(info.value)


def test_index_option_in_the_file_is_refused(repo: Repo, run_cli: Any) -> None:
    previous = good_sync(repo)
    repo.write("bsf-alpha==1.0", "--extra-index-url https://user:secret@pypi.example/simple")
    line = assert_one_line_error(run_cli("sync"), "requirements.txt:2:", "PIP_INDEX_URL")
    assert_still_serving(repo, previous, stage="read")
    assert "secret" not in repo.manifest()["error"]["message"]
    assert "secret" not in line


def test_reverting_the_file_after_a_failure_is_ok_again(repo: Repo, run_cli: Any) -> None:
    previous = good_sync(repo)
    repo.write("bsf-alpha==1.0", "-e .")
    assert run_cli("sync").code != 0
    assert repo.manifest()["status"] == "failed"

    repo.write("bsf-alpha==1.0")  # back to what the active generation serves
    result = run_cli("sync")
    assert result.code == 0, result.err
    m = repo.manifest()
    assert m["status"] == "ok" and m["error"] is None
    assert m["generation"] == previous["generation"]
    assert run_cli("check").code == 0


def test_failed_first_sync_records_the_failure_with_no_generation(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-alpha", "", "git+https://github.com/example/pkg.git")
    assert_one_line_error(run_cli("sync"), "requirements.txt:3:")
    m = repo.manifest()
    assert m["status"] == "failed"
    assert m["site_dir"] is None and m["generation"] is None
    assert m["packages"] == []
    assert m["error"]["stage"] == "read" and "requirements.txt:3:" in m["error"]["message"]
    assert m["error"]["at"].endswith("Z")


# -- resolution fails -----------------------------------------------------------------------------


def test_unknown_package_names_the_package_and_where_it_looked(repo: Repo, run_cli: Any, wheelhouse: Path) -> None:
    previous = good_sync(repo)
    repo.write("bsf-alpha==1.0", "bsf-nonexistent")
    line = assert_one_line_error(run_cli("sync"), "bsf-nonexistent")
    assert str(wheelhouse) in line or "find-links" in line
    assert "requirements.txt:2" in line  # the line that asked for it
    m = assert_still_serving(repo, previous, stage="resolve")
    assert "bsf-nonexistent" in m["error"]["message"]


def test_impossible_version_names_the_package_and_what_exists(repo: Repo) -> None:
    previous = good_sync(repo)
    repo.write("bsf-alpha==9.9")
    with pytest.raises(BootstrapError) as info:
        sync(repo.settings())
    assert info.value.stage == "resolve"
    message = str(info.value)
    assert "bsf-alpha" in message and "9.9" in message
    if BACKEND == "pip":  # pip lists what is available; uv's report does not
        assert "1.0" in message and "2.0" in message
    assert "\n" not in message
    m = assert_still_serving(repo, previous, stage="resolve")
    assert "bsf-alpha" in m["error"]["message"]


def test_conflict_names_both_sides(repo: Repo, run_cli: Any) -> None:
    previous = good_sync(repo)
    repo.write("bsf-beta==2.0", "bsf-old-alpha-user")
    line = assert_one_line_error(run_cli("sync"), "bsf-beta", "bsf-old-alpha-user", "conflict")
    assert "bsf-alpha>=2" in line and "bsf-alpha<2" in line
    # pip's generic advice and its misleading "no matching distributions" note are noise in one line
    assert "no matching distributions" not in line
    assert "loosen the range" not in line
    # the active generation's pin (bsf-alpha==1.0) only seeds the resolution; it is not what conflicts
    assert "bsf-alpha==1.0" not in line
    assert_still_serving(repo, previous, stage="resolve")


# -- the import check fails ----------------------------------------------------------------------


def test_broken_package_never_goes_live(repo: Repo, run_cli: Any) -> None:
    previous = good_sync(repo)
    repo.write("bsf-alpha==1.0", "bsf-broken")
    line = assert_one_line_error(run_cli("sync"), "bsf-broken", "BOOTSTRAP_SKIP_IMPORT_CHECK")
    assert "boom at import" in line
    m = assert_still_serving(repo, previous, stage="verify")
    assert "bsf-broken" in m["error"]["message"]
    assert "BOOTSTRAP_SKIP_IMPORT_CHECK" in m["error"]["message"]
    assert_no_staging_debris(repo)
    assert run_cli("check").code == 1

    repo.write("bsf-alpha==1.0", "bsf-gamma")  # fixed: drop the broken package, add another
    result = run_cli("sync")
    assert result.code == 0, result.err
    m = repo.manifest()
    assert m["status"] == "ok" and m["error"] is None
    assert m["generation"] != previous["generation"]
    assert repo.installed() == {"bsf-alpha": "1.0", "bsf-gamma": "1.0"}
    assert_no_staging_debris(repo)
    assert run_cli("check").code == 0


def test_package_needing_configuration_passes_once_skipped(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    repo.write("bsf-needs-config")
    with pytest.raises(BootstrapError) as info:
        sync(repo.settings())
    assert info.value.stage == "verify"
    assert "BOOTSTRAP_SKIP_IMPORT_CHECK=bsf-needs-config" in str(info.value)
    assert repo.manifest()["status"] == "failed" and repo.manifest()["site_dir"] is None
    assert_no_staging_debris(repo)

    monkeypatch.setenv("BOOTSTRAP_SKIP_IMPORT_CHECK", "some-other, bsf-needs-config")
    result = sync(repo.settings())
    assert result.changed
    m = repo.manifest()
    assert m["status"] == "ok" and m["error"] is None
    assert repo.installed() == {"bsf-needs-config": "1.0"}
    assert (Path(m["site_dir"]) / "bsf_needs_config" / "__init__.py").is_file()


def test_skip_import_check_as_a_setting_override(repo: Repo) -> None:
    repo.write("bsf-needs-config", "bsf-alpha")
    sync(repo.settings(skip_import_check=frozenset({"bsf-needs-config"})))
    assert repo.manifest()["status"] == "ok"
    assert repo.installed() == {"bsf-needs-config": "1.0", "bsf-alpha": "2.0"}


def test_a_version_only_for_a_newer_python_says_so(repo: Repo, wheelhouse: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    """A version that exists, but not for this interpreter, is not "not found"."""
    import os
    import sys

    from tests.wheels import Dist, build_wheel, module

    links = wheelhouse.parent / "newer-python"
    links.mkdir(exist_ok=True)
    build_wheel(
        Dist("bsf-newpy", "2.0", module("bsf_newpy", "2.0"), extra_metadata=("Requires-Python: >=3.99",)), links
    )
    os.environ["PIP_FIND_LINKS"] = f"{wheelhouse} {links}"  # restored by the autouse fixture
    repo.write("bsf-alpha", "bsf-newpy==2.0")
    result = run_cli("sync", "-q")
    assert result.code == 1 and len(result.err.splitlines()) == 1, result.err
    running = ".".join(map(str, sys.version_info[:3]))
    assert "requirements.txt:2: the versions of bsf-newpy the requirements allow need Python >=3.99" in result.err
    assert f"this interpreter is {running}" in result.err


@pytest.fixture
def failing_index() -> Iterator[str]:
    """An index on 127.0.0.1 that answers every request with HTTP 500."""
    import http.server

    class Failing(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"the index is down")

        def log_message(self, format: str, *args: object) -> None:
            pass

    with local_server(Failing) as url:
        yield url + "/simple"


def test_an_index_answering_http_500_is_not_a_missing_package(
    repo: Repo,
    failing_index: str,
    monkeypatch: pytest.MonkeyPatch,
    run_cli,  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.delenv("PIP_NO_INDEX")
    monkeypatch.delenv("PIP_FIND_LINKS")
    monkeypatch.setenv("PIP_INDEX_URL", failing_index)
    monkeypatch.setenv("BOOTSTRAP_INDEX_RETRIES", "0")
    repo.write("bsf-alpha")
    result = run_cli("sync", "-q")
    assert result.code == 1 and len(result.err.splitlines()) == 1, result.err
    assert "HTTP 500" in result.err and "bsf-alpha" in result.err, result.err
    assert "not found" not in result.err and "no versions at all" not in result.err
