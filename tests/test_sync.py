"""The heart: requirements.txt -> pinned lock -> verified generation -> manifest."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bootstrap.errors import BootstrapError
from bootstrap.pipeline.sync import sync
from bootstrap.store import manifest as manifest_mod
from tests.conftest import Repo, python_in


def dist_infos(site_dir: str) -> list[str]:
    return sorted(p.name for p in Path(site_dir).glob("*.dist-info"))


def test_first_sync_installs_the_resolved_set(repo: Repo) -> None:
    repo.write("bsf-beta==1.0")
    result = sync(repo.settings())
    assert result.changed
    m = repo.manifest()
    assert m["status"] == "ok" and m["error"] is None
    assert repo.installed() == {"bsf-alpha": "2.0", "bsf-beta": "1.0"}
    requested = {p["name"]: p["requested"] for p in m["packages"]}
    assert requested == {"bsf-alpha": False, "bsf-beta": True}
    assert dist_infos(m["site_dir"]) == ["bsf_alpha-2.0.dist-info", "bsf_beta-1.0.dist-info"]
    proc = python_in(m["site_dir"], "import bsf_beta, bsf_alpha; print(bsf_alpha.__version__)")
    assert proc.stdout.strip() == "2.0", proc.stderr


def test_added_removed_upgraded_downgraded_all_converge(repo: Repo) -> None:
    repo.write("bsf-alpha==1.0", "bsf-gamma")
    sync(repo.settings())
    first = repo.manifest()["site_dir"]
    assert dist_infos(first) == ["bsf_alpha-1.0.dist-info", "bsf_gamma-1.0.dist-info"]

    repo.write("bsf-alpha==2.0", "bsf-beta==2.0")  # upgrade alpha, remove gamma, add beta
    sync(repo.settings())
    second = repo.manifest()["site_dir"]
    assert second != first
    assert dist_infos(second) == ["bsf_alpha-2.0.dist-info", "bsf_beta-2.0.dist-info"]
    assert not (Path(second) / "bsf_gamma.py").exists()

    repo.write("bsf-alpha==1.0")  # downgrade alpha, remove beta
    sync(repo.settings())
    third = repo.manifest()["site_dir"]
    assert dist_infos(third) == ["bsf_alpha-1.0.dist-info"]
    assert sorted(p.name for p in Path(third).iterdir()) == ["bsf_alpha", "bsf_alpha-1.0.dist-info"]
    proc = python_in(third, "import bsf_alpha; print(bsf_alpha.__version__)")
    assert proc.stdout.strip() == "1.0", proc.stderr


def test_namespace_packages_share_a_folder_and_survive_each_other(repo: Repo) -> None:
    repo.write("jaraco.functools==1.0", "jaraco.context")
    sync(repo.settings())
    code = "import jaraco.functools as f, jaraco.context as c; print(f.__version__, c.__version__)"
    assert python_in(repo.manifest()["site_dir"], code).stdout.strip() == "1.0 1.0"

    repo.write("jaraco.functools==2.0", "jaraco.context")  # upgrade one
    sync(repo.settings())
    assert python_in(repo.manifest()["site_dir"], code).stdout.strip() == "2.0 1.0"

    repo.write("jaraco.context")  # remove the other
    sync(repo.settings())
    site_dir = repo.manifest()["site_dir"]
    proc = python_in(site_dir, "import jaraco.context as c; print(c.__version__)\nimport jaraco.functools")
    assert proc.stdout.strip() == "1.0"
    assert "No module named 'jaraco.functools'" in proc.stderr


def test_nothing_changed_means_nothing_done(repo: Repo) -> None:
    repo.write("bsf-alpha")
    first = sync(repo.settings())
    mtime = repo.manifest_path.stat().st_mtime_ns
    second = sync(repo.settings())
    assert first.changed and not second.changed
    assert repo.manifest_path.stat().st_mtime_ns == mtime  # not even rewritten


def test_a_comment_edit_keeps_the_generation(repo: Repo) -> None:
    repo.write("bsf-alpha==1.0")
    sync(repo.settings())
    before = repo.manifest()
    repo.write("# pinned for the reporting workflow", "bsf-alpha == 1.0")
    result = sync(repo.settings())
    after = repo.manifest()
    assert not result.changed
    assert after["generation"] == before["generation"]
    assert after["requirements_sha256"] != before["requirements_sha256"]


def test_resolution_is_cached_by_its_inputs(repo: Repo, tmp_path: Path) -> None:
    repo.write("bsf-beta==1.0")
    sync(repo.settings())
    assert repo.manifest()["lock_source"] == "resolved"
    # A new instance with an empty packages folder but the same cache would not
    # re-resolve; here: the same folder, generation lost, file unchanged.
    generation = Path(repo.manifest()["site_dir"]).parent
    import shutil

    shutil.rmtree(generation)
    sync(repo.settings())
    assert repo.manifest()["lock_source"] == "cache"
    assert repo.installed() == {"bsf-alpha": "2.0", "bsf-beta": "1.0"}


def test_missing_requirements_file_is_an_empty_set(repo: Repo) -> None:
    result = sync(repo.settings())
    m = repo.manifest()
    assert result.changed and m["status"] == "ok"
    assert m["packages"] == [] and os.listdir(m["site_dir"]) == []


def test_generation_for_another_interpreter_is_rebuilt(repo: Repo) -> None:
    repo.write("bsf-alpha")
    sync(repo.settings())
    m = repo.manifest()
    m["python"] = {**m["python"], "tag": "cpython-39", "version": "3.9.18"}
    manifest_mod.write(repo.manifest_path, m)
    from bootstrap.host.activation import activate

    assert activate(repo.packages_dir) is None  # never activated
    result = sync(repo.settings())
    assert result.changed
    assert repo.manifest()["python"]["tag"] == manifest_mod.interpreter()["tag"]


def test_files_the_bootstrapper_did_not_create_are_left_alone(repo: Repo) -> None:
    repo.packages_dir.mkdir()
    (repo.packages_dir / "colorama").mkdir()  # a legacy `pip install --target` leftover
    (repo.packages_dir / "colorama" / "__init__.py").write_text("")
    repo.write("bsf-alpha")
    sync(repo.settings())
    repo.write("bsf-gamma")
    sync(repo.settings())
    assert (repo.packages_dir / "colorama" / "__init__.py").exists()


def test_old_generations_are_collected_beyond_the_setting(repo: Repo) -> None:
    for version in ("1.0", "2.0", "1.0", "2.0"):
        repo.write(f"bsf-alpha=={version}")
        sync(repo.settings(generations_kept=2))
    generations = sorted(p.name for p in (repo.packages_dir / "generations").iterdir())
    assert len(generations) == 2
    assert repo.manifest()["generation"] in generations


@pytest.mark.pip_only
def test_a_cold_sync_installs_while_resolving_and_keeps_it_only_if_it_matches(
    repo: Repo, caplog: pytest.LogCaptureFixture
) -> None:
    repo.write("bsf-beta==1.0", "jaraco.context")
    with caplog.at_level("INFO", logger="bootstrap"):
        sync(repo.settings())
    assert any("matches the lock: kept" in r.getMessage() for r in caplog.records)
    site_dir = Path(repo.manifest()["site_dir"])
    assert sorted(p.name for p in site_dir.parent.iterdir()) == ["generation.json", "lock.txt", "site"]
    assert repo.installed() == {"bsf-alpha": "2.0", "bsf-beta": "1.0", "jaraco.context": "1.0"}


@pytest.mark.pip_only
def test_a_speculative_install_that_differs_from_the_lock_is_not_adopted(repo: Repo, tmp_path: Path) -> None:
    from bootstrap.inputs import requirements
    from bootstrap.pipeline import build
    from bootstrap.pipeline.lockfile import Lock, Pin
    from bootstrap.store.layout import Layout

    repo.write("bsf-beta==1.0")
    layout = Layout(repo.packages_dir)
    from bootstrap.tools.backends import backend_for

    tools = backend_for(repo.settings())
    staging = build.build_speculatively(layout, requirements.read(repo.requirements), tools, timeout=120)
    # pip's own resolver took bsf-alpha 2.0; a lock that pinned 1.0 must not adopt it.
    other = Lock((Pin("bsf-alpha", "1.0"), Pin("bsf-beta", "1.0")), "", "resolved")
    assert not build.adopt(staging, other)
    same = Lock((Pin("bsf-alpha", "2.0"), Pin("bsf-beta", "1.0")), "bsf-alpha==2.0\nbsf-beta==1.0\n", "resolved")
    assert build.adopt(staging, same)
    assert (staging / "lock.txt").read_text() == same.text


def test_a_failed_resolution_leaves_no_speculative_debris(repo: Repo) -> None:
    repo.write("bsf-nonexistent")
    with pytest.raises(BootstrapError):
        sync(repo.settings())
    staging = repo.packages_dir / "staging"
    assert not staging.exists() or not any(staging.iterdir())


def test_a_sync_that_runs_no_tool_needs_no_backend(repo: Repo, monkeypatch: pytest.MonkeyPatch, run_cli) -> None:  # type: ignore[no-untyped-def]
    """The pins are the committed lock's and unchanged: nothing resolves or installs, so a backend that cannot
    be had (uv chosen, not installed) is no reason to fail."""
    import sys

    repo.write("bsf-alpha")
    assert run_cli("lock").code == 0
    sync(repo.settings())
    repo.write("bsf-alpha  # the same pin, a new comment")
    monkeypatch.setenv("BOOTSTRAP_BACKEND", "uv")
    monkeypatch.setitem(sys.modules, "uv", None)  # `import uv` fails, as where it is not installed
    result = sync(repo.settings())
    assert not result.changed and result.manifest["status"] == "ok"
    repo.write()  # nothing to resolve: `lock` needs no tool either
    assert run_cli("lock").code == 0


def test_the_same_package_across_includes_resolves_once(repo: Repo) -> None:
    """celery's and mypy's files name a package on two lines: pip merges them, and so does the sync."""
    (repo.root / "more.txt").write_text('bsf-alpha<3\nbsf-gamma; python_version >= "3"\n')
    repo.write("bsf-alpha>=1", "bsf-gamma", "-r more.txt")
    sync(repo.settings())
    assert repo.installed() == {"bsf-alpha": "2.0", "bsf-gamma": "1.0"}
