"""What the host imports is what was verified: a site folder that lost a package, or gained a file no
RECORD lists, is named by ``check`` and ``verify``; a ``.pth`` written during the import check is refused."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from bootstrap.errors import VerificationError
from bootstrap.pipeline.sync import sync
from tests.conftest import Repo, python_in
from tests.wheels import Dist, build_wheel, module


def synced(repo: Repo, *lines: str) -> Path:
    """Sync ``lines``; return the active site folder."""
    repo.write(*lines)
    sync(repo.settings())
    return Path(repo.manifest()["site_dir"])


def test_a_deleted_package_is_named_and_the_next_sync_rebuilds_it(repo: Repo, run_cli: Any) -> None:
    site = synced(repo, "bsf-beta==2.0", "bsf-gamma")
    generation = repo.manifest()["generation"]
    for path in site.glob("bsf_alpha*"):  # `rm -rf site/bsf_alpha*`: the package and its dist-info
        shutil.rmtree(path)

    check = run_cli("check")
    assert check.code == 1
    assert "missing: bsf-alpha 2.0: the whole distribution" in check.out and "next sync rebuilds it" in check.out
    verify = run_cli("verify")
    assert verify.code == 1, verify.out
    assert "missing: bsf-alpha 2.0: the whole distribution (its dist-info is gone)" in verify.out

    result = sync(repo.settings())
    assert result.changed and result.manifest["generation"] != generation
    site = Path(result.manifest["site_dir"])
    assert python_in(site, "import bsf_alpha, bsf_beta; print(bsf_alpha.__version__)").stdout.strip() == "2.0"
    assert run_cli("check").code == 0
    assert run_cli("verify").code == 0


def test_an_emptied_site_is_never_a_pass(repo: Repo, run_cli: Any) -> None:
    site = synced(repo, "bsf-beta==2.0", "bsf-gamma")
    for path in site.iterdir():
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    verify = run_cli("verify", "--json")
    report = json.loads(verify.out)
    assert verify.code == 1 and report["ok"] is False and report["files"] == 0
    assert sorted(p.split(":")[1].strip() for p in report["problems"]) == [
        "bsf-alpha 2.0",
        "bsf-beta 2.0",
        "bsf-gamma 1.0",
    ]
    assert "files match" not in run_cli("verify").out
    check = run_cli("check")
    assert check.code == 1 and all(f"missing: {name}" in check.out for name in ("bsf-alpha", "bsf-beta", "bsf-gamma"))

    assert sync(repo.settings()).changed  # never "up to date"
    assert python_in(repo.manifest()["site_dir"], "import bsf_beta, bsf_gamma").returncode == 0
    assert run_cli("verify").code == 0


def test_host_packages_are_not_counted_missing(repo: Repo, run_cli: Any) -> None:
    """A package the host provides is in the manifest (``provided_by: host``) but never in the site."""
    synced(repo, "packaging", "bsf-needs-host")
    assert any(p["provided_by"] == "host" for p in repo.manifest()["packages"])
    assert run_cli("check").code == 0
    assert run_cli("verify").code == 0
    assert not sync(repo.settings()).changed


def test_a_pth_planted_in_the_active_site_is_named_and_not_carried_on(repo: Repo, run_cli: Any) -> None:
    site = synced(repo, "bsf-alpha==1.0")
    (site / "zz_planted.pth").write_text("import os\n")

    check = run_cli("check")
    assert check.code == 1 and "zz_planted.pth" in check.out and "listed in no RECORD" in check.out
    verify = run_cli("verify")
    assert verify.code == 1 and "unlisted: zz_planted.pth" in verify.out

    result = sync(repo.settings())  # the active generation is no longer what was verified: a clean one
    assert result.changed
    assert not (Path(result.manifest["site_dir"]) / "zz_planted.pth").exists()
    assert (site / "zz_planted.pth").exists()  # reported, never deleted (the old generation, until gc)
    assert run_cli("check").code == 0


def test_verify_names_every_file_no_record_lists(repo: Repo, run_cli: Any) -> None:
    site = synced(repo, "bsf-beta==2.0", "bsf-gamma")
    if repo.settings().compile_bytecode:  # what bootstrap compiled counts as listed
        assert list(site.glob("bsf_alpha/__pycache__/__init__.*.pyc"))
    host_written = (
        site / "__pycache__" / f"bsf_gamma.{sys.implementation.cache_tag}.opt-1.pyc"
    )  # a host writing bytecode
    host_written.parent.mkdir(exist_ok=True)
    host_written.write_bytes(b"compiled by a host")
    assert run_cli("verify").code == 0

    (site / "bsf_alpha" / "notes.txt").write_text("planted\n")
    (site / "bsf_alpha" / "evil.py").write_text("")
    (site / "bsf_alpha" / "__pycache__").mkdir(exist_ok=True)
    (site / "bsf_alpha" / "__pycache__" / f"evil.{sys.implementation.cache_tag}.pyc").write_bytes(
        b""
    )  # beside an unlisted .py
    os.symlink(site / "bsf_alpha", site / "linked")
    verify = run_cli("verify")
    assert verify.code == 1
    unlisted = sorted(line.strip() for line in verify.out.splitlines() if "unlisted:" in line)
    assert unlisted == [
        f"unlisted: bsf_alpha/__pycache__/evil.{sys.implementation.cache_tag}.pyc",
        "unlisted: bsf_alpha/evil.py",
        "unlisted: bsf_alpha/notes.txt",
        "unlisted: linked",
    ]
    # check stays cheap (a listing of the site's top, a stat per listed file): only a .pth makes it unhealthy
    assert run_cli("check").code == 0


def test_a_module_that_writes_a_pth_at_import_is_refused(
    repo: Repo, wheelhouse: Path, run_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = synced(repo, "bsf-alpha==1.0")
    good = repo.manifest()["generation"]
    links = wheelhouse.parent / "planter"
    links.mkdir(exist_ok=True)
    body = (
        "import os\n"
        "with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), 'zz_planted.pth'), 'w') as f:\n"
        "    f.write('import sys\\n')\n"
    )
    build_wheel(Dist("bsf-planter", "1.0", module("bsf_planter", "1.0", body)), links)
    monkeypatch.setenv("PIP_FIND_LINKS", f"{wheelhouse} {links}")

    repo.write("bsf-alpha==1.0", "bsf-planter")
    with pytest.raises(VerificationError, match=r"zz_planted\.pth was created while importing bsf-planter 1\.0"):
        sync(repo.settings())

    after = repo.manifest()
    assert after["generation"] == good and after["status"] == "failed" and "zz_planted.pth" in after["error"]["message"]
    assert [p.name for p in (repo.packages_dir / "generations").iterdir()] == [good]  # nothing published
    staging = repo.packages_dir / "staging"
    assert not staging.exists() or not list(staging.iterdir())
    assert not (site / "zz_planted.pth").exists()
    assert python_in(site, "import bsf_alpha; print(bsf_alpha.__version__)").stdout.strip() == "1.0"
