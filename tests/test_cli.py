"""The command line: ``sync``, ``status``, ``check``, settings errors, and ``python -m bootstrap`` for real."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Repo, python_in

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def test_status_shows_generation_packages_and_strangers(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-beta==1.0")
    assert run_cli("sync").code == 0
    legacy = repo.packages_dir / "legacy_pkg"
    legacy.mkdir()
    (legacy / "__init__.py").write_text("")
    generation = repo.manifest()["generation"]

    result = run_cli("status")
    assert result.code == 0, result.err
    out = result.out
    assert generation in out
    assert "bsf-beta" in out and "bsf-alpha" in out
    assert "healthy" in out and "NOT healthy" not in out
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("not created by bootstrap"))
    assert lines[header + 1].strip() == "legacy_pkg"
    # bootstrap's own entries are never listed as strangers
    assert not any(line.strip() in ("generations", "manifest.json", "cache") for line in lines[header + 1 :])
    assert legacy.is_dir()  # and the stranger is left alone


def test_status_json(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-alpha==1.0")
    assert run_cli("sync").code == 0
    (repo.packages_dir / "legacy_pkg").mkdir()
    result = run_cli("status", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert set(report) >= {"packages_dir", "manifest", "check", "generations", "unmanaged", "bytes"}
    assert report["packages_dir"] == str(repo.packages_dir)
    assert report["manifest"]["generation"] == repo.manifest()["generation"]
    assert report["check"]["healthy"] is True
    assert [g["generation"] for g in report["generations"] if g["active"]] == [repo.manifest()["generation"]]
    assert report["unmanaged"] == ["legacy_pkg"]
    assert isinstance(report["bytes"], int) and report["bytes"] > 0


def test_status_before_any_sync(repo: Repo, run_cli: Any) -> None:
    result = run_cli("status")
    assert result.code == 0, result.err
    assert "never synced" in result.out
    report = json.loads(run_cli("status", "--json").out)
    assert report["manifest"] is None and report["generations"] == [] and report["check"]["healthy"] is False


def test_check_tracks_the_file_and_the_generation(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-alpha==1.0")
    before = run_cli("check")
    assert before.code == 1 and "never synced" in before.out

    assert run_cli("sync").code == 0
    healthy = run_cli("check")
    assert healthy.code == 0, healthy.out
    assert healthy.out.startswith("healthy:") and repo.manifest()["generation"] in healthy.out

    repo.write("bsf-alpha==2.0")
    edited = run_cli("check")  # not synced yet: degraded, and a health probe passes
    assert edited.code == 0 and edited.out.startswith("degraded: sync pending:")
    assert "changed since" in edited.out and "requirements.txt" in edited.out

    repo.write("bsf-alpha==1.0")  # back as it was: healthy again, with no sync
    assert run_cli("check").code == 0


def test_check_after_a_failed_sync(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-alpha==1.0")
    assert run_cli("sync").code == 0
    repo.write("bsf-alpha==1.0", "bsf-alpha-typo==>1")
    assert run_cli("sync").code == 1
    result = run_cli("check")
    assert result.code == 1
    assert "failed" in result.out and "read" in result.out and "requirements.txt:2" in result.out

    report = json.loads(run_cli("check", "--json").out)
    assert report["healthy"] is False
    assert isinstance(report["problems"], list)
    assert any("failed" in problem for problem in report["problems"])
    assert report["last_error"]["stage"] == "read"


def test_check_notices_a_file_deleted_from_the_active_generation(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-alpha==1.0")
    assert run_cli("sync").code == 0
    report = json.loads(run_cli("check", "--json").out)
    assert report["healthy"] is True and report["problems"] == []

    site_dir = Path(repo.manifest()["site_dir"])
    (site_dir / "bsf_alpha" / "__init__.py").unlink()
    result = run_cli("check")
    assert result.code == 1
    assert "missing" in result.out and "bsf_alpha/__init__.py" in result.out
    report = json.loads(run_cli("check", "--json").out)
    assert report["healthy"] is False and len(report["problems"]) == 1


def test_sync_repairs_a_damaged_generation(repo: Repo, run_cli: Any) -> None:
    """What `check` calls unhealthy, `sync` must be able to fix (not answer "up to date")."""
    repo.write("bsf-alpha==1.0")
    assert run_cli("sync").code == 0
    damaged = repo.manifest()["site_dir"]
    (Path(damaged) / "bsf_alpha" / "__init__.py").unlink()
    assert run_cli("check").code == 1

    result = run_cli("sync")
    assert result.code == 0, result.err
    assert "up to date" not in result.out
    assert repo.manifest()["site_dir"] != damaged
    assert run_cli("check").code == 0
    proc = python_in(repo.manifest()["site_dir"], "import bsf_alpha; print(bsf_alpha.__version__)")
    assert proc.stdout.strip() == "1.0", proc.stderr


def test_sync_when_up_to_date(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-alpha==1.0")
    first = run_cli("sync")
    assert first.code == 0 and first.out.startswith("synced:")
    generation = repo.manifest()["generation"]
    assert generation in first.out
    second = run_cli("sync")
    assert second.code == 0
    assert "up to date" in second.out and generation in second.out
    assert "resolving" not in second.err


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("BOOTSTRAP_GENERATIONS_KEPT", "zero"),
        ("BOOTSTRAP_GENERATIONS_KEPT", "0"),
        ("BOOTSTRAP_LOCK_TIMEOUT", "-5"),
    ],
)
def test_bad_setting_is_one_line(
    repo: Repo, run_cli: Any, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    repo.write("bsf-alpha")
    monkeypatch.setenv(variable, value)
    for command in ("sync", "check", "status"):
        result = run_cli(command)
        assert result.code != 0
        assert "Traceback" not in result.err + result.out
        lines = result.err.splitlines()
        assert len(lines) == 1, result.err
        assert lines[0].startswith("bootstrap: error:") and variable in lines[0]
    assert not repo.packages_dir.exists()  # nothing was touched


def test_unusable_packages_folder_is_one_line(repo: Repo, run_cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = repo.root / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("BOOTSTRAP_PACKAGES_DIR", str(blocker / "packages"))
    repo.write("bsf-alpha")
    result = run_cli("sync")
    assert result.code != 0
    assert "Traceback" not in result.err
    assert result.err.splitlines()[-1].startswith("bootstrap: error:")
    assert "BOOTSTRAP_PACKAGES_DIR" in result.err


def test_cli_leaves_the_bootstrap_logger_as_it_found_it(repo: Repo, run_cli: Any) -> None:
    """main() is callable in-process (the console script, a host): it must not rewire the host's logging."""
    logger = logging.getLogger("bootstrap")
    before = (logger.level, logger.propagate, list(logger.handlers))
    for args in (("check",), ("-q", "status"), ("-v", "check", "--json")):
        run_cli(*args)
        assert (logger.level, logger.propagate, list(logger.handlers)) == before, args


def test_usage_error_exits_2(run_cli: Any) -> None:
    with pytest.raises(SystemExit) as info:
        run_cli("frobnicate")
    assert info.value.code == 2


def test_python_dash_m_bootstrap_end_to_end(repo: Repo) -> None:
    repo.write("bsf-gamma")
    env = dict(os.environ)  # already isolated by the autouse fixture, BOOTSTRAP_* pointing at the repo
    proc = subprocess.run(
        [sys.executable, "-m", "bootstrap", "sync"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=str(PROJECT_ROOT),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout.startswith("synced:")
    assert "bootstrap: resolving" in proc.stderr
    assert "published generation" not in proc.stderr  # the result is on stdout, once
    m = repo.manifest()
    assert m["status"] == "ok" and repo.installed() == {"bsf-gamma": "1.0"}
    assert python_in(m["site_dir"], "import bsf_gamma; print(bsf_gamma.__version__)").stdout.strip() == "1.0"

    check = subprocess.run(
        [sys.executable, "-m", "bootstrap", "check", "--json"],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        cwd=str(PROJECT_ROOT),
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert json.loads(check.stdout)["healthy"] is True


def test_a_reader_that_leaves_early_is_not_blamed_on_the_packages_folder(repo: Repo) -> None:
    repo.write("bsf-gamma")
    assert subprocess.run([sys.executable, "-m", "bootstrap", "-q", "sync"], check=False).returncode == 0
    # `true` exits at once: bootstrap's first write meets a closed pipe (EPIPE), as with `status | head`.
    shell = f"{sys.executable} -m bootstrap status | true"
    proc = subprocess.run(["bash", "-c", f"set -o pipefail; {shell}"], capture_output=True, text=True, check=False)
    assert "cannot use" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert "Exception ignored" not in proc.stderr, proc.stderr


def test_an_unknown_bootstrap_variable_is_a_warning_naming_the_closest_setting(
    repo: Repo,
    run_cli,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setenv("BOOTSTRAP_PACKAGE_DIR", "/somewhere/else")
    monkeypatch.setenv("BOOTSTRAP_XYZZY", "1")
    result = run_cli("check")
    assert "BOOTSTRAP_PACKAGE_DIR is not a bootstrap setting (ignored); did you mean BOOTSTRAP_PACKAGES_DIR?" in (
        result.err
    )
    assert "BOOTSTRAP_XYZZY is not a bootstrap setting (ignored); the README lists the settings" in result.err
