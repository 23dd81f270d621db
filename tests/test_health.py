"""`check`'s three states: healthy, degraded (a sync pending, a rollback: a probe passes) and unhealthy,
each reason its own; and what `status` prints of them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bootstrap.ops import health
from bootstrap.pipeline.sync import sync
from tests.conftest import Repo, python_with_bootstrap


def check_json(run_cli: Any) -> dict[str, Any]:
    result = run_cli("check", "--json")
    report: dict[str, Any] = json.loads(result.out)
    assert result.code == (1 if report["state"] == "unhealthy" else 0), report
    return report


def test_a_healthy_folder_says_so_in_every_key(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-alpha==1.0")
    sync(repo.settings())
    report = check_json(run_cli)
    assert report["state"] == "healthy" and report["healthy"] is True
    assert report["problems"] == [] and report["pending"] == [] and report["rolled_back_from"] is None


def test_a_newly_committed_lock_is_a_pending_sync_not_unhealthy(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-alpha<2")
    assert run_cli("sync").code == 0
    assert run_cli("lock").code == 0  # what `make lock` does: a new input, not yet synced

    report = check_json(run_cli)
    assert report["state"] == "degraded" and report["healthy"] is True and report["problems"] == []
    [reason] = report["pending"]
    assert reason.startswith("sync pending: ") and "requirements.lock changed since the last sync" in reason
    text = run_cli("check")
    assert text.code == 0 and text.out.startswith("degraded: sync pending: ")

    assert run_cli("sync").code == 0
    assert check_json(run_cli)["state"] == "healthy"


def test_a_missing_requirements_file_is_its_own_reason(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-alpha==1.0")
    sync(repo.settings())
    repo.requirements.unlink()  # a typo in the setting, a repo not checked out

    report = check_json(run_cli)
    assert report["state"] == "unhealthy" and report["pending"] == []
    [problem] = report["problems"]
    assert problem.startswith(f"the requirements file {repo.requirements} does not exist")
    assert "BOOTSTRAP_REQUIREMENTS_FILE" in problem


def test_a_requirements_file_missing_before_the_first_sync_is_named_too(repo: Repo, run_cli: Any) -> None:
    report = check_json(run_cli)
    assert report["state"] == "unhealthy"
    assert any("does not exist" in problem for problem in report["problems"]), report
    assert "never synced" in report["problems"]


def test_a_world_writable_folder_is_its_own_reason(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-alpha==1.0")
    sync(repo.settings())
    site_dir = Path(repo.manifest()["site_dir"])
    os.chmod(site_dir, site_dir.stat().st_mode | 0o002)
    try:
        report = check_json(run_cli)
    finally:
        os.chmod(site_dir, site_dir.stat().st_mode & ~0o002)
    assert report["state"] == "unhealthy" and report["pending"] == []
    [problem] = report["problems"]
    assert problem.startswith(f"{site_dir} is writable by every local user") and "chmod o-w" in problem


def test_after_a_rollback_check_says_what_the_file_asks_for_and_sync_builds_it(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-alpha==1.0")
    sync(repo.settings())
    first = repo.manifest()["generation"]
    repo.write("bsf-alpha==2.0", "bsf-gamma")
    sync(repo.settings())
    second = repo.manifest()["generation"]
    assert run_cli("rollback").code == 0

    report = check_json(run_cli)
    assert report["state"] == "degraded" and report["healthy"] is True and report["problems"] == []
    [reason] = report["pending"]
    assert reason.startswith(f"rolled back to {first}; the file asks for generation {second} (")
    assert "bsf-alpha==2.0 (not served)" in reason and "bsf-gamma==1.0 (not served)" in reason
    assert "no bsf-alpha==1.0" in reason
    assert report["rolled_back_from"] == {"generation": second, "pins": ["bsf-alpha==2.0", "bsf-gamma==1.0"]}
    text = run_cli("check")
    assert text.code == 0 and text.out.startswith(f"degraded: rolled back to {first}; the file asks for")
    assert "degraded" in run_cli("status").out

    # A restart keeps serving the rolled-back generation (the fast path syncs nothing) ...
    restarted = python_with_bootstrap("import bootstrap; print(bootstrap.startup()['generation'])")
    assert restarted.stdout.strip() == first, restarted.stderr
    assert repo.manifest()["generation"] == first

    # ... and an explicit sync builds what the file asks for: it is not "up to date".
    result = run_cli("sync")
    assert result.code == 0, result.err
    assert "up to date" not in result.out + result.err
    assert repo.installed() == {"bsf-alpha": "2.0", "bsf-gamma": "1.0"}
    assert check_json(run_cli)["state"] == "healthy"


def test_rolling_back_twice_still_names_what_the_file_asks_for(repo: Repo, run_cli: Any) -> None:
    generations = []  # in the order they were built (ids are their contents' hashes: no order by name)
    for lines in (["bsf-alpha==1.0"], ["bsf-alpha==2.0"], ["bsf-alpha==2.0", "bsf-gamma"]):
        repo.write(*lines)
        sync(repo.settings())
        generations.append(repo.manifest()["generation"])
    newest = repo.manifest()["generation"]
    assert run_cli("rollback").code == 0
    assert run_cli("rollback", "--to", generations[0]).code == 0
    assert repo.manifest()["rolled_back_from"]["generation"] == newest


def test_status_columns_hold_long_versions_and_counts_are_singular_for_one(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-alpha==1.0")
    sync(repo.settings())
    report = health.status(repo.settings())
    report["manifest"]["packages"].append(
        {"name": "x", "version": "2024.12.31.post1234567890", "requested": True, "provided_by": "generation"}
    )
    lines = health.format_status(report).splitlines()
    rows = [line for line in lines if line.startswith(("  bsf-alpha ", "  x "))]
    assert len(rows) == 2
    # the third column starts at the same place in both rows, one version however long
    assert rows[0].index("requested") == rows[1].index("requested"), rows
    assert "2024.12.31.post1234567890  requested" in rows[1]
    text = "\n".join(lines)
    assert "1 packages" not in text
    assert "(1 package," in run_cli("status").out
    assert " 1 package  active" in run_cli("status").out  # the generations table
