"""Incremental generations: unchanged distributions are carried over, only the new ones installed."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from bootstrap.pipeline.sync import sync
from tests.conftest import BACKEND, Repo, python_in


def _inode(path: Path) -> int:
    return path.stat().st_ino


def test_adding_one_package_installs_only_that_one(repo: Repo, caplog: pytest.LogCaptureFixture) -> None:
    repo.write("bsf-beta==1.0", "bsf-gamma")
    sync(repo.settings())
    old_site = Path(repo.manifest()["site_dir"])

    repo.write("bsf-beta==1.0", "bsf-gamma", "jaraco.context")
    with caplog.at_level(logging.INFO, logger="bootstrap"):
        assert sync(repo.settings()).changed
    messages = [r.getMessage() for r in caplog.records]
    assert "reusing 3 unchanged distributions" in messages
    assert "installing 1 distribution into a new generation" in messages
    new_site = Path(repo.manifest()["site_dir"])
    assert new_site != old_site
    # the same file, not a copy: hard-linked from the active generation
    assert _inode(new_site / "bsf_gamma.py") == _inode(old_site / "bsf_gamma.py")
    assert repo.installed() == {"bsf-alpha": "2.0", "bsf-beta": "1.0", "bsf-gamma": "1.0", "jaraco.context": "1.0"}
    code = "import bsf_beta, bsf_gamma, jaraco.context; print(bsf_beta.__version__)"
    assert python_in(new_site, code).stdout.strip() == "1.0"


def test_a_namespace_shared_by_a_kept_and_a_new_distribution_merges(repo: Repo) -> None:
    repo.write("jaraco.functools==1.0")
    sync(repo.settings())
    repo.write("jaraco.functools==1.0", "jaraco.context")
    sync(repo.settings())
    site_dir = repo.manifest()["site_dir"]
    code = "import jaraco.functools as f, jaraco.context as c; print(f.__version__, c.__version__)"
    assert python_in(site_dir, code).stdout.strip() == "1.0 1.0"


def test_an_upgraded_package_is_installed_and_the_rest_carried(repo: Repo, caplog: pytest.LogCaptureFixture) -> None:
    repo.write("bsf-alpha==1.0", "bsf-gamma")
    sync(repo.settings())
    repo.write("bsf-alpha==2.0", "bsf-gamma")
    with caplog.at_level(logging.INFO, logger="bootstrap"):
        sync(repo.settings())
    messages = [r.getMessage() for r in caplog.records]
    assert "reusing 1 unchanged distribution" in messages
    site_dir = repo.manifest()["site_dir"]
    assert sorted(p.name for p in Path(site_dir).glob("*.dist-info")) == [
        "bsf_alpha-2.0.dist-info",
        "bsf_gamma-1.0.dist-info",
    ]
    assert python_in(site_dir, "import bsf_alpha; print(bsf_alpha.__version__)").stdout.strip() == "2.0"


def test_a_damaged_distribution_is_not_carried_over(repo: Repo, caplog: pytest.LogCaptureFixture) -> None:
    repo.write("bsf-alpha==1.0", "bsf-gamma")
    sync(repo.settings())
    old_site = Path(repo.manifest()["site_dir"])
    (old_site / "bsf_gamma.py").unlink()  # damaged by hand
    repo.write("bsf-alpha==1.0", "bsf-gamma", "jaraco.context")
    with caplog.at_level(logging.INFO, logger="bootstrap"):
        sync(repo.settings())
    assert "reusing 1 unchanged distribution" in [r.getMessage() for r in caplog.records]
    assert (Path(repo.manifest()["site_dir"]) / "bsf_gamma.py").exists()


def test_a_shared_file_edited_in_place_shows_up_in_verify(repo: Repo, run_cli: object) -> None:
    """Some platforms patch files after install (certifi's CA bundle): with hard links that edit reaches
    every generation sharing the file, so `verify` must name it rather than let it pass silently."""
    repo.write("bsf-gamma")
    sync(repo.settings())
    old_site = Path(repo.manifest()["site_dir"])
    repo.write("bsf-gamma", "bsf-alpha")
    sync(repo.settings())
    new_site = Path(repo.manifest()["site_dir"])
    assert _inode(new_site / "bsf_gamma.py") == _inode(old_site / "bsf_gamma.py")
    with open(old_site / "bsf_gamma.py", "a") as handle:  # patched in the old generation, in place
        handle.write("PATCHED = True\n")
    result = run_cli("verify")  # type: ignore[operator]
    assert result.code == 1 and "changed: bsf-gamma 1.0: bsf_gamma.py" in result.out


def test_only_what_changed_and_what_depends_on_it_is_import_checked_again(
    repo: Repo, caplog: pytest.LogCaptureFixture
) -> None:
    from bootstrap.pipeline.sync import sync

    repo.write("bsf-beta==1.0", "bsf-alpha==1.0", "bsf-gamma")
    sync(repo.settings())
    repo.write("bsf-beta==1.0", "bsf-alpha==2.0", "bsf-gamma")  # alpha changes; beta depends on it
    caplog.clear()
    with caplog.at_level("INFO", logger="bootstrap"):
        sync(repo.settings())
    assert "1 unchanged distribution import-checked before" in caplog.text  # bsf-gamma only
    assert "import-checking 2 modules" in caplog.text  # bsf_alpha (changed), bsf_beta (depends on it)


def test_a_dependency_only_for_an_extra_nobody_asks_for_does_not_make_its_user_checked_again(
    repo: Repo, caplog: pytest.LogCaptureFixture
) -> None:
    from bootstrap.pipeline.sync import sync

    repo.write("bsf-extra-user", "bsf-alpha")
    sync(repo.settings())
    repo.write("bsf-extra-user", "bsf-alpha", "bsf-gamma")  # needed by bsf-extra-user[fancy] only
    caplog.clear()
    with caplog.at_level("INFO", logger="bootstrap"):
        sync(repo.settings())
    assert "2 unchanged distributions import-checked before" in caplog.text
    assert "import-checking 1 module " in caplog.text  # bsf_gamma alone


def test_a_dependency_for_an_extra_a_line_asks_for_makes_its_user_checked_again(
    repo: Repo, caplog: pytest.LogCaptureFixture
) -> None:
    from bootstrap.pipeline.sync import sync

    repo.write("bsf-extra-user", "bsf-alpha")
    sync(repo.settings())
    repo.write("bsf-extra-user[fancy]", "bsf-alpha")  # now bsf-gamma comes, for the extra asked for
    caplog.clear()
    with caplog.at_level("INFO", logger="bootstrap"):
        sync(repo.settings())
    assert repo.installed()["bsf-gamma"] == "1.0"
    assert "1 unchanged distribution import-checked before" in caplog.text  # bsf-alpha only
    assert "import-checking 2 modules" in caplog.text  # bsf_gamma and bsf_extra_user


def test_a_file_edited_in_place_is_not_carried_into_the_next_generation(
    repo: Repo, caplog: pytest.LogCaptureFixture
) -> None:
    from bootstrap.pipeline.sync import sync

    repo.write("bsf-gamma", "bsf-alpha==1.0")
    sync(repo.settings())
    patched = Path(repo.manifest()["site_dir"]) / "bsf_gamma.py"
    original = patched.read_text()
    with open(patched, "a") as handle:  # in place, as a platform patching certifi's CA bundle would
        handle.write("PATCHED = True\n")
    repo.write("bsf-gamma", "bsf-alpha==1.0", "jaraco.context")
    with caplog.at_level("WARNING", logger="bootstrap"):
        sync(repo.settings())
    fresh = Path(repo.manifest()["site_dir"]) / "bsf_gamma.py"
    assert fresh.read_text() == original
    assert fresh.stat().st_ino != patched.stat().st_ino
    assert "not reusing bsf-gamma 1.0: changed: bsf-gamma 1.0: bsf_gamma.py" in caplog.text


def test_an_edit_that_keeps_the_size_is_caught_by_its_time(repo: Repo, caplog: pytest.LogCaptureFixture) -> None:
    from bootstrap.pipeline.sync import sync

    repo.write("bsf-gamma", "bsf-alpha==1.0")
    sync(repo.settings())
    patched = Path(repo.manifest()["site_dir"]) / "bsf_gamma.py"
    original = patched.read_bytes()
    with open(patched, "r+b") as handle:  # same size, new bytes, in place
        handle.write(original[:-1].upper() + original[-1:])
    assert patched.read_bytes() != original and len(patched.read_bytes()) == len(original)
    repo.write("bsf-gamma", "bsf-alpha==1.0", "jaraco.context")
    with caplog.at_level("WARNING", logger="bootstrap"):
        sync(repo.settings())
    assert "not reusing bsf-gamma 1.0: changed: bsf-gamma 1.0: bsf_gamma.py" in caplog.text
    assert (Path(repo.manifest()["site_dir"]) / "bsf_gamma.py").read_bytes() == original


def test_carried_files_are_read_only_when_their_stat_says_they_may_have_changed(
    repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bootstrap.pipeline.sync import sync
    from bootstrap.store import records

    repo.write("bsf-gamma", "bsf-alpha==1.0")
    sync(repo.settings())
    site = Path(repo.manifest()["site_dir"])
    os.utime(site / "bsf_alpha" / "__init__.py")  # touched after publication: read again, found intact
    read: list[str] = []

    def recording_open(file: str, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if mode == "rb":  # a file read to be hashed
            read.append("/".join(Path(file).parts[-2:]))
        return open(file, mode, *args, **kwargs)

    monkeypatch.setattr(records, "open", recording_open, raising=False)
    repo.write("bsf-gamma", "bsf-alpha==1.0", "jaraco.context")
    sync(repo.settings())
    monkeypatch.undo()
    assert read.count("bsf_alpha/__init__.py") == 1
    assert not [path for path in read if path.endswith("bsf_gamma.py")]
    assert "bsf-alpha" in repo.installed() and Path(repo.manifest()["site_dir"]) != site


@pytest.mark.skipif(BACKEND != "uv", reason="uv's cache links: the uv backend's")
def test_a_file_edited_through_uvs_cache_links_is_dropped_from_the_cache_not_spread(
    repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from bootstrap.pipeline.sync import sync
    from bootstrap.store.records import changed_files, installed

    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))  # this test spoils its cache on purpose
    repo.write("bsf-gamma", "bsf-alpha==1.0")
    sync(repo.settings())
    patched = Path(repo.manifest()["site_dir"]) / "bsf_gamma.py"
    if patched.stat().st_nlink < 2:
        pytest.skip("uv copied instead of linking on this filesystem")
    original = patched.read_text()
    with open(patched, "a") as handle:  # in place: through the link, uv's cache file changes too
        handle.write("PATCHED = True\n")
    other = repo.settings(packages_dir=tmp_path / "another-instance")
    with caplog.at_level("WARNING", logger="bootstrap"):
        sync(other)
    assert "uv's cache holds files edited after install (changed: bsf-gamma 1.0: bsf_gamma.py)" in caplog.text
    assert "dropping bsf-gamma from uv's cache" in caplog.text
    fresh_site = Path(json.loads((tmp_path / "another-instance" / "manifest.json").read_text())["site_dir"])
    assert (fresh_site / "bsf_gamma.py").read_text() == original
    assert (fresh_site / "bsf_gamma.py").stat().st_ino != patched.stat().st_ino
    assert not changed_files(fresh_site, installed(fresh_site))
    # The edited generation still tells on itself, and the next install links the clean file again.
    assert changed_files(patched.parent, installed(patched.parent)) == ["changed: bsf-gamma 1.0: bsf_gamma.py"]
    caplog.clear()
    third = repo.settings(packages_dir=tmp_path / "a-third-instance")
    with caplog.at_level("WARNING", logger="bootstrap"):
        sync(third)
    assert "edited after install" not in caplog.text


@pytest.mark.skipif(BACKEND != "uv", reason="uv's cache links: the uv backend's")
def test_the_uv_backend_links_from_its_cache_as_uv_does(repo: Repo) -> None:
    from bootstrap.pipeline.sync import sync

    repo.write("bsf-gamma")
    sync(repo.settings())
    assert (Path(repo.manifest()["site_dir"]) / "bsf_gamma.py").stat().st_nlink >= 2, "hard-linked, not copied"


@pytest.mark.skipif(BACKEND != "uv", reason="uv's cache links: the uv backend's")
def test_only_files_uv_did_not_just_unpack_are_hash_checked(
    repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bootstrap.pipeline.sync import sync
    from bootstrap.store import records

    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))  # cold: uv unpacks every wheel now
    hashed: list[str] = []
    real_new = records.hashlib.new

    def counting_new(name: str, data: bytes = b"") -> object:
        hashed.append(name)
        return real_new(name, data)

    monkeypatch.setattr(records.hashlib, "new", counting_new)
    repo.write("bsf-gamma", "bsf-alpha==1.0")
    sync(repo.settings())
    assert hashed == [], "fresh from the wheels: nothing to read again"
    sync(repo.settings(packages_dir=tmp_path / "another-instance"))  # a warm cache: files from before
    assert len(hashed) >= 2, "every file linked from an older cache entry is checked"
