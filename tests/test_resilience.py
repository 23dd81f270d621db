"""What a production host throws at a sync: odd files, odd settings, failures at awkward moments."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bootstrap.errors import BootstrapError
from bootstrap.pipeline import publish
from bootstrap.pipeline import sync as sync_module
from bootstrap.pipeline.sync import sync
from tests.conftest import Repo, python_with_bootstrap


def test_a_gc_failure_after_publishing_keeps_the_new_generation(
    repo: Repo, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    repo.write("bsf-alpha==1.0")
    sync(repo.settings(generations_kept=1))

    def refuse(path: Path, trash: Path, keep_if: object = None) -> bool:
        raise OSError(16, "Device or resource busy", str(path))

    monkeypatch.setattr(publish, "remove_tree", refuse)
    repo.write("bsf-alpha==2.0")
    with caplog.at_level(logging.WARNING, logger="bootstrap"):
        result = sync(repo.settings(generations_kept=1))
    assert result.changed
    m = repo.manifest()
    assert m["status"] == "ok" and repo.installed() == {"bsf-alpha": "2.0"} and Path(m["site_dir"]).is_dir()
    assert any("could not remove generation" in r.getMessage() for r in caplog.records)


def test_options_in_a_committed_lock_never_reach_pip(repo: Repo, run_cli: Any, tmp_path: Path) -> None:
    repo.write("bsf-alpha")
    assert run_cli("lock").code == 0
    lock = repo.root / "requirements.lock"
    lock.write_text(lock.read_text() + f"--find-links {tmp_path}\n")
    result = run_cli("sync", "-q")
    assert result.code == 1
    assert "options are not allowed in a lock (--find-links)" in result.err
    assert repo.manifest()["site_dir"] is None


def test_a_committed_lock_that_does_not_satisfy_the_file_is_not_used(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-beta==2.0", "bsf-gamma")
    assert run_cli("lock").code == 0
    lock = repo.root / "requirements.lock"
    # Same header (so the file "matches"), but gamma dropped and beta downgraded by hand.
    text = "\n".join(line for line in lock.read_text().splitlines() if not line.startswith(("bsf-gamma", "bsf-beta")))
    lock.write_text(text + "\nbsf-beta==1.0\n")
    result = run_cli("sync")
    assert result.code == 0, result.err
    assert "does not satisfy" in result.err
    assert repo.installed() == {"bsf-alpha": "2.0", "bsf-beta": "2.0", "bsf-gamma": "1.0"}
    assert repo.manifest()["lock_source"] != "committed"


def test_startup_survives_an_unexpected_error_and_serves(repo: Repo, tmp_path: Path) -> None:
    repo.write("bsf-alpha==1.0")
    sync(repo.settings())
    repo.write("bsf-alpha==2.0")
    # A bug in the sync, in the child process start-up runs it in: every interpreter on this PYTHONPATH has it.
    bug = tmp_path / "bug"
    bug.mkdir()
    (bug / "sitecustomize.py").write_text(
        "import bootstrap.pipeline.sync\n"
        "def broken(settings): raise RuntimeError('a bug')\n"
        "bootstrap.pipeline.sync.sync = broken\n"
    )
    code = "import bootstrap; bootstrap.startup(); import bsf_alpha; print(bsf_alpha.__version__)"
    proc = python_with_bootstrap(code, env={**os.environ, "PYTHONPATH": str(bug)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1.0"
    assert "sync failed unexpectedly" in proc.stderr and "RuntimeError: a bug" in proc.stderr


def test_an_included_file_replaced_by_a_folder_is_a_clear_error(repo: Repo) -> None:
    (repo.root / "extra.txt").write_text("bsf-gamma\n")
    repo.write("bsf-alpha", "-r extra.txt")
    sync(repo.settings())
    (repo.root / "extra.txt").unlink()
    (repo.root / "extra.txt").mkdir()
    proc = python_with_bootstrap("import bootstrap; bootstrap.startup(); import bsf_gamma; print('served')")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "served"
    assert repo.manifest()["status"] == "failed"


def test_waiters_do_not_repeat_a_failure_recorded_while_they_waited(repo: Repo) -> None:
    repo.write("bsf-nonexistent")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bootstrap", "sync"], stderr=subprocess.PIPE, text=True, env=dict(os.environ)
        )
        for _ in range(3)
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [1, 1, 1]
    finals = {err.strip().splitlines()[-1] for err in errors}
    assert len(finals) == 1 and "bsf-nonexistent" in finals.pop()
    resolved = sum("resolving 1 requirement" in err for err in errors)
    skipped = sum("just failed on the same inputs" in err for err in errors)
    assert resolved >= 1 and resolved + skipped == 3
    assert resolved < 3, "every waiter repeated the same failing resolution"


def test_requested_flags_follow_the_file_when_the_pins_do_not_change(repo: Repo) -> None:
    repo.write("bsf-beta==1.0")
    sync(repo.settings())
    assert {p["name"]: p["requested"] for p in repo.manifest()["packages"]}["bsf-alpha"] is False
    repo.write("bsf-beta==1.0", "bsf-alpha")
    result = sync(repo.settings())
    assert not result.changed  # same pins, same generation
    assert {p["name"]: p["requested"] for p in repo.manifest()["packages"]}["bsf-alpha"] is True


def test_an_unreachable_index_is_named_without_its_password(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIP_NO_INDEX")
    monkeypatch.delenv("PIP_FIND_LINKS")
    monkeypatch.setenv("PIP_INDEX_URL", "http://alice:S3cretPw@127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "1")  # with 0, pip does not even say it could not connect
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    repo.write("bsf-alpha")
    with pytest.raises(BootstrapError) as failure:
        sync(repo.settings())
    message = str(failure.value)
    assert "could not reach" in message and "127.0.0.1:9" in message, message
    assert "S3cretPw" not in message and "S3cretPw" not in repo.manifest_path.read_text()


def test_changing_the_lock_file_setting_is_noticed(repo: Repo, run_cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    repo.write("bsf-alpha")
    sync(repo.settings())
    assert run_cli("check").code == 0
    monkeypatch.setenv("BOOTSTRAP_LOCK_FILE", str(repo.root / "prod.lock"))
    result = run_cli("check")
    assert result.code == 1 and "prod.lock" in result.out


@pytest.mark.pip_only  # the speculative install is the pip backend's
def test_a_failed_resolution_stops_the_speculative_install(
    repo: Repo, monkeypatch: pytest.MonkeyPatch, slow_index: str
) -> None:
    monkeypatch.setenv("PIP_FIND_LINKS", slow_index)
    repo.write("bsf-alpha", "bsf-gamma")
    with pytest.raises(BootstrapError) as failure:
        sync(repo.settings(resolve_timeout=1.0))
    assert "timed out" in str(failure.value)
    mine = [
        p.name for p in Path("/proc").iterdir() if p.name.isdigit() and str(repo.packages_dir).encode() in _cmdline(p)
    ]
    assert mine == [], "a pip process of the failed sync is still running"
    assert not any((repo.packages_dir / "staging").iterdir())


def _cmdline(proc_dir: Path) -> bytes:
    try:
        return (proc_dir / "cmdline").read_bytes()
    except OSError:
        return b""


def test_status_reports_a_damaged_generation_instead_of_failing(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-alpha")
    sync(repo.settings())
    site_dir = Path(repo.manifest()["site_dir"])
    next(site_dir.glob("*.dist-info")).joinpath("METADATA").unlink()
    status = run_cli("status")
    assert status.code == 0 and "NOT healthy" in status.out
    check = run_cli("check")
    assert check.code == 1 and "incomplete" in check.out
    assert sync_module.sync(repo.settings()).changed  # and the next sync repairs it


def test_a_requirements_path_that_is_a_folder_is_an_error_not_an_empty_set(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-alpha")
    sync(repo.settings())
    repo.requirements.unlink()
    repo.requirements.mkdir()
    result = run_cli("sync", "-q")
    assert result.code == 1 and "requirements.txt: is not a regular file but a folder" in result.err
    assert repo.installed() == {"bsf-alpha": "2.0"}


def test_a_manifest_missing_its_keys_is_told_not_a_traceback(repo: Repo, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo.write("bsf-alpha")
    repo.packages_dir.mkdir()
    repo.manifest_path.write_text('{"schema_version": 1}')  # a manifest some tool wrote by hand
    verify = run_cli("verify")
    assert verify.code == 1 and "there is no active generation to verify" in verify.err, verify.err
    check = run_cli("check")
    assert check.code == 1 and "never synced" in check.out
    assert run_cli("status").code == 0
    assert sync(repo.settings()).changed  # and a sync repairs it


def test_a_requirements_file_that_vanished_never_empties_the_folder(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-alpha")
    sync(repo.settings())
    served = repo.manifest()["generation"]
    repo.requirements.unlink()  # a typo in the setting, or the repo not checked out yet
    result = run_cli("sync", "-q")
    assert result.code == 1 and len(result.err.splitlines()) == 1
    assert "requirements.txt: does not exist" in result.err and "BOOTSTRAP_REQUIREMENTS_FILE" in result.err
    assert repo.manifest()["generation"] == served and repo.installed() == {"bsf-alpha": "2.0"}
    check = run_cli("check")
    assert check.code == 1 and "does not exist" in check.out
    repo.write()  # an empty file is a real request for nothing
    assert sync(repo.settings()).changed and repo.installed() == {}


def test_a_fresh_folder_with_no_requirements_file_is_a_healthy_empty_set(repo: Repo, run_cli: Any) -> None:
    result = run_cli("sync", "-q")
    assert result.code == 0, result.err
    assert repo.installed() == {} and run_cli("check").code == 0


def test_links_and_files_in_staging_are_removed_and_never_followed(repo: Repo, tmp_path: Path) -> None:
    repo.write("bsf-alpha==1.0")
    sync(repo.settings())
    precious = tmp_path / "outside"
    precious.mkdir()
    (precious / "keep.txt").write_text("not bootstrap's")
    staging = repo.packages_dir / "staging"
    staging.mkdir(exist_ok=True)
    (staging / "link-out").symlink_to(precious, target_is_directory=True)
    (staging / "link-nowhere").symlink_to(tmp_path / "nowhere")
    (staging / "a-file").write_text("debris")
    from bootstrap.ops.health import check

    notes = check(repo.settings())["notes"]
    assert sum("the next sync removes it" in note for note in notes) == 3, notes
    repo.write("bsf-alpha==2.0")
    sync(repo.settings())  # ... and it does
    assert sorted(os.listdir(staging)) == [], "a link or a file in staging was left"
    assert (precious / "keep.txt").read_text() == "not bootstrap's", "the link was followed"
    assert not [note for note in check(repo.settings())["notes"] if "staging/" in note]


def test_a_trash_folder_a_gc_could_not_empty_is_named_with_what_to_do(tmp_path: Path) -> None:
    """An unprivileged gc renames a generation a privileged sync wrote into staging/trash-*, but cannot empty
    it: the sync says so (never a promise that the next one removes it), and so do check and status."""
    import json
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="bsf-trash-", dir="/tmp"))  # reachable by the unprivileged user
    try:
        root.chmod(0o755)
        packages = root / "packages"
        stuck = packages / "staging" / "trash-20260101T000000-abc-1a2b3c4d" / "site" / "bsf_alpha"
        stuck.mkdir(parents=True)
        (stuck / "__init__.py").write_text("")
        (root / "requirements.txt").write_text("bsf-alpha\n")
        privileged = os.geteuid() == 0
        if privileged:  # the unprivileged user owns the folder, but not what a root sync wrote inside
            for path in [root, *root.rglob("*")]:
                if stuck not in (path, *path.parents):
                    os.chown(path, 65534, 65534)
        else:
            stuck.chmod(0o555)
        code = (  # everything imported first: the interpreter's own folders may be root's alone
            "import json, logging, os\n"
            "from bootstrap.ops.health import check\nfrom bootstrap.pipeline import publish\n"
            "from bootstrap.settings import load_settings\n"
            f"if {privileged}:\n    os.setgid(65534); os.setuid(65534)\n"
            "logging.basicConfig(level=logging.WARNING, format='%(message)s')\n"
            "settings = load_settings()\npublish.clean_staging(settings.layout)\n"
            "print(json.dumps(check(settings)['notes']))\n"
        )
        env = dict(
            os.environ, BOOTSTRAP_PACKAGES_DIR=str(packages), BOOTSTRAP_REQUIREMENTS_FILE=str(root / "requirements.txt")
        )
        result = python_with_bootstrap(code, env)
        assert result.returncode == 0, result.stderr
        owner = "uid 0" if privileged else f"uid {os.geteuid()}"
        assert f"cannot remove staging/trash-20260101T000000-abc-1a2b3c4d: {stuck.parent}" in result.stderr
        assert f"{stuck} belongs to {owner}" in result.stderr and "delete it as a user that may" in result.stderr
        (note,) = json.loads(result.stdout.splitlines()[-1])
        assert note.startswith("staging/trash-20260101T000000-abc-1a2b3c4d cannot be removed by bootstrap (")
        assert f"{stuck} belongs to {owner}" in note and note.endswith("delete it as its owner")
        assert "next sync" not in note
    finally:
        for path in root.rglob("*"):
            if path.is_dir() and not path.is_symlink():
                path.chmod(0o755)
        shutil.rmtree(root)
