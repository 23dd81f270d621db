"""Rolling back publishes an earlier generation again; old ones go beyond the setting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bootstrap.pipeline.sync import sync
from bootstrap.store import freshness
from tests.conftest import Repo, python_in


def test_rollback_serves_the_previous_generation_until_the_file_changes(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-alpha==1.0")
    sync(repo.settings())
    first = repo.manifest()["generation"]
    repo.write("bsf-alpha==2.0", "bsf-gamma")
    sync(repo.settings())

    result = run_cli("rollback")
    assert result.code == 0, result.err
    m = repo.manifest()
    assert m["generation"] == first and m["lock_source"] == "rollback" and m["status"] == "ok"
    assert repo.installed() == {"bsf-alpha": "1.0"}
    assert python_in(m["site_dir"], "import bsf_alpha; print(bsf_alpha.__version__)").stdout.strip() == "1.0"
    assert freshness.is_fresh(repo.manifest(), repo.settings().sources)  # a restart keeps serving it
    repo.write("bsf-alpha==2.0")  # the next change of the file moves on
    assert sync(repo.settings()).changed
    assert repo.installed() == {"bsf-alpha": "2.0"}


def test_rollback_to_a_named_generation_and_refusals(repo: Repo, run_cli: Any) -> None:
    assert "no earlier generation" in run_cli("rollback").err
    generations = []  # in the order they were built (ids are their contents' hashes: no order by name)
    for version in ("1.0", "2.0"):
        repo.write(f"bsf-alpha=={version}")
        sync(repo.settings())
        generations.append(repo.manifest()["generation"])
    assert run_cli("rollback", "--to", generations[0]).code == 0
    assert repo.manifest()["generation"] == generations[0]
    bad = run_cli("rollback", "--to", "20000101T000000Z-000000")
    assert bad.code == 1 and bad.err.count("\n") == 1 and "not a complete generation" in bad.err


def test_rollback_refuses_a_damaged_generation(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-alpha==1.0")
    sync(repo.settings())
    old_site = Path(repo.manifest()["site_dir"])
    repo.write("bsf-alpha==2.0")
    sync(repo.settings())
    (old_site / "bsf_alpha" / "__init__.py").unlink()
    result = run_cli("rollback")
    assert result.code == 1 and "damaged" in result.err
    assert repo.installed() == {"bsf-alpha": "2.0"}


def test_status_shows_disk_used_per_generation(repo: Repo, run_cli: Any) -> None:
    for version in ("1.0", "2.0"):
        repo.write(f"bsf-alpha=={version}")
        sync(repo.settings())
    import json

    report = json.loads(run_cli("status", "--json").out)
    assert len(report["generations"]) == 2
    assert all(g["bytes"] > 0 for g in report["generations"])
    assert [g["active"] for g in report["generations"]] == [True, False]


def test_verify_names_changed_and_missing_files(repo: Repo, run_cli: Any) -> None:
    assert run_cli("verify").code == 1  # nothing to verify yet: one clear line
    repo.write("bsf-beta==1.0")
    sync(repo.settings())
    ok = run_cli("verify")
    assert ok.code == 0 and "files match their RECORD hashes" in ok.out
    site_dir = Path(repo.manifest()["site_dir"])
    (site_dir / "bsf_alpha" / "__init__.py").write_text("__version__ = 'patched'\n")
    (site_dir / "bsf_beta" / "__init__.py").unlink()
    bad = run_cli("verify")
    assert bad.code == 1
    assert "changed: bsf-alpha 2.0: bsf_alpha/__init__.py" in bad.out
    assert "missing: bsf-beta 1.0: bsf_beta/__init__.py" in bad.out
    import json

    report = json.loads(run_cli("verify", "--json").out)
    assert report["ok"] is False and len(report["problems"]) == 2


def test_a_rolled_back_manifest_records_the_included_files_too(repo: Repo, run_cli: Any) -> None:
    included = repo.root / "more.txt"
    included.write_text("bsf-gamma\n")
    repo.write("bsf-alpha==1.0", "-r more.txt")
    sync(repo.settings())
    repo.write("bsf-alpha==2.0", "-r more.txt")
    sync(repo.settings())
    assert run_cli("rollback").code == 0
    assert str(included) in repo.manifest()["inputs"]
    included.write_text("bsf-gamma\njaraco.context\n")  # an included file changed: the rollback no longer holds
    check = run_cli("check")
    assert check.code == 0 and "sync pending" in check.out and "more.txt changed since the last sync" in check.out
    assert "rolled back" not in check.out  # the file asks for something else now
