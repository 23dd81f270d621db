"""The library surface: startup(), activate(), read_manifest(), and the manifest contract."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bootstrap
from bootstrap.errors import BootstrapError, RequirementsError
from bootstrap.pipeline.sync import sync
from bootstrap.store import manifest as manifest_mod
from tests.conftest import Repo, python_with_bootstrap

# The contract other parts rely on: keys may be added, never renamed or removed.
PINNED_MANIFEST_KEYS = {
    "overrides",
    "schema_version",
    "status",
    "generation",
    "site_dir",
    "site",
    "requirements_file",
    "requirements_sha256",
    "lock_file",
    "lock_sha256",
    "lock_source",
    "inputs",
    "relative_inputs",
    "history",
    "packages",
    "python",
    "updated_at",
    "error",
    "rolled_back_from",
    "origin",
}


def test_manifest_keys_are_the_contract(repo: Repo) -> None:
    repo.write("bsf-beta==1.0")
    sync(repo.settings())
    m = repo.manifest()
    assert set(m) == PINNED_MANIFEST_KEYS
    assert m["schema_version"] == 1
    assert m["origin"] == "built"
    assert m["status"] == "ok" and m["error"] is None
    assert Path(m["site_dir"]).is_absolute() and Path(m["site_dir"]).is_dir()
    assert m["requirements_file"] == str(repo.requirements)
    assert len(m["requirements_sha256"]) == 64 and len(m["lock_sha256"]) == 64
    assert all(set(p) >= {"name", "version", "requested"} for p in m["packages"])
    assert set(m["python"]) >= {"version", "platform"}
    assert m["updated_at"].endswith("Z")


def test_failure_record_has_the_error_keys(repo: Repo) -> None:
    repo.write("bsf-alpha")
    sync(repo.settings())
    repo.write("bsf-alpha>=>1")
    with pytest.raises(BootstrapError):
        sync(repo.settings())
    m = repo.manifest()
    assert set(m) == PINNED_MANIFEST_KEYS
    assert m["status"] == "failed"
    assert set(m["error"]) >= {"message", "stage", "at"}


def test_startup_syncs_then_activates_and_imports(repo: Repo) -> None:
    repo.write("bsf-beta==1.0")
    code = "import bootstrap, bsf_beta; m = bootstrap.startup(); import bsf_beta; print(bsf_beta.__file__)"
    # bsf_beta is not importable before startup(): the first import must fail.
    proc = python_with_bootstrap(code)
    assert "No module named 'bsf_beta'" in proc.stderr
    code = "import bootstrap; m = bootstrap.startup(); import bsf_beta; print(bsf_beta.__file__)"
    proc = python_with_bootstrap(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith(str(repo.packages_dir / "generations"))
    assert "not a bootstrap setting" not in proc.stderr  # the sync child's environment holds only real settings


def test_fast_path_starts_no_process_and_imports_nothing_heavy(repo: Repo) -> None:
    repo.write("bsf-alpha")
    sync(repo.settings())
    code = """
import os, subprocess, sys
def refuse(*a, **k):
    raise AssertionError("the fast path started a process")
subprocess.Popen = refuse
os.fork = refuse
os.posix_spawn = refuse
import bootstrap
manifest = bootstrap.startup()
import bsf_alpha
heavy = sorted(m for m in sys.modules if m.split('.')[0] in
               ('pydantic', 'pydantic_settings', 'piptools', 'pip', 'watchdog', 'filelock', 'packaging'))
print(manifest['generation'], heavy)
"""
    proc = python_with_bootstrap(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [repo.manifest()["generation"], "[]"]


def test_activate_is_idempotent_and_follows_a_new_generation(repo: Repo) -> None:
    repo.write("bsf-alpha==1.0")
    sync(repo.settings())
    first = bootstrap.activate(repo.packages_dir)
    try:
        assert bootstrap.activate(repo.packages_dir) == first
        assert sys.path.count(first) == 1
        repo.write("bsf-alpha==2.0")
        sync(repo.settings())
        second = bootstrap.activate(repo.packages_dir)
        assert second != first and second in sys.path and first not in sys.path
    finally:
        for entry in (first, bootstrap.activate(repo.packages_dir)):
            while entry in sys.path:
                sys.path.remove(entry)


def test_host_keeps_serving_when_a_sync_fails_at_startup(repo: Repo) -> None:
    repo.write("bsf-alpha==1.0")
    sync(repo.settings())
    repo.write("bsf-alpha==1.0", "this is not a requirement")
    proc = python_with_bootstrap(
        "import bootstrap; bootstrap.startup(); import bsf_alpha; print(bsf_alpha.__version__)"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1.0"
    assert "requirements.txt:2:" in proc.stderr  # logged through the 'bootstrap' logger
    assert repo.manifest()["status"] == "failed"


def test_read_manifest_is_tolerant(repo: Repo) -> None:
    assert bootstrap.read_manifest(repo.packages_dir) is None
    repo.packages_dir.mkdir()
    repo.manifest_path.write_text('{"schema_version": 1, "status": "o')  # truncated
    assert bootstrap.read_manifest(repo.packages_dir) is None
    data, why = manifest_mod.load(repo.manifest_path)
    assert data is None and why is not None and "not valid JSON" in why


def test_a_damaged_manifest_is_repaired_by_the_next_sync(repo: Repo) -> None:
    repo.write("bsf-alpha")
    sync(repo.settings())
    repo.manifest_path.write_text("garbage")
    result = sync(repo.settings())
    assert result.changed
    assert repo.manifest()["status"] == "ok"


def test_library_reports_through_the_bootstrap_logger(repo: Repo, caplog: pytest.LogCaptureFixture) -> None:
    repo.write("bsf-alpha")
    with caplog.at_level("INFO", logger="bootstrap"):
        sync(repo.settings())
    messages = [r.getMessage() for r in caplog.records if r.name == "bootstrap"]
    assert any("resolving" in m for m in messages)
    assert any("published generation" in m for m in messages)


@pytest.mark.network
def test_colorama_from_the_public_index(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    """As a user would: the public index, no find-links."""
    monkeypatch.delenv("PIP_NO_INDEX")
    monkeypatch.delenv("PIP_FIND_LINKS")
    repo.write("colorama")
    result = subprocess.run(
        [sys.executable, "-m", "bootstrap", "sync"], capture_output=True, text=True, env=dict(os.environ)
    )
    assert result.returncode == 0, result.stderr
    m = repo.manifest()
    assert [p["name"] for p in m["packages"]] == ["colorama"]
    proc = python_with_bootstrap("import bootstrap; bootstrap.startup(); import colorama; print(colorama.Fore.RED)")
    assert proc.returncode == 0 and "\x1b[31m" in proc.stdout, proc.stderr
    assert json.loads(repo.manifest_path.read_text())["lock_source"] == "resolved"


def test_fast_path_imports_no_more_than_json_hashlib_and_site(repo: Repo) -> None:
    """Measured without site-packages (-S), so nothing else preloads pathlib or typing."""
    repo.write("bsf-alpha")
    sync(repo.settings())
    root = str(Path(__file__).resolve().parent.parent)
    probe = "import sys; before = set(sys.modules)\n{}\nprint(sorted(set(sys.modules) - before))"
    baseline = subprocess.run(
        [sys.executable, "-S", "-c", probe.format("import json, hashlib, site")], capture_output=True, text=True
    )
    ours = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            f"import sys; sys.path.insert(0, {root!r})\n" + probe.format("import bootstrap; bootstrap.startup()"),
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ),
    )
    assert ours.returncode == 0, ours.stderr
    extra = set(ast.literal_eval(ours.stdout)) - set(ast.literal_eval(baseline.stdout))
    assert {m for m in extra if not m.startswith("bootstrap")} <= {"__future__"}, extra


def test_package_entries_and_the_error_record_have_exactly_the_contract_keys(repo: Repo) -> None:
    from bootstrap.store.manifest import ERROR_KEYS, PACKAGE_KEYS

    repo.write("bsf-beta==1.0")
    sync(repo.settings())
    assert [tuple(package) for package in repo.manifest()["packages"]] == [PACKAGE_KEYS] * 2
    repo.write("bsf-beta>=>1")
    with pytest.raises(BootstrapError):
        sync(repo.settings())
    assert tuple(repo.manifest()["error"]) == ERROR_KEYS


def test_an_error_of_the_sync_child_is_raised_as_its_own_class_with_its_parts(repo: Repo) -> None:
    """The sync runs in a child process (bootstrap.host.child): its error comes back whole."""
    repo.write("bsf-alpha", "bsf-alpha>=>1")
    with pytest.raises(RequirementsError) as caught:
        bootstrap.startup(raise_errors=True)
    error = caught.value
    assert str(error).startswith(f"{repo.requirements}:2: ") and error.line == 2 and error.stage == "read"
    assert error.path == str(repo.requirements) and "not a valid requirement" in error.why
