"""The state folder (``BOOTSTRAP_STATE_DIR``): what was added at run time outlives an emptied packages folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bootstrap.settings import load_settings
from bootstrap.store.paths import Sources
from tests.conftest import Repo, python_with_bootstrap

OVERLAY = "runtime-requirements.txt"


def overlay_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]


def test_an_addition_comes_back_after_a_restart_on_an_emptied_packages_folder(repo: Repo, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo.write("bsf-alpha==1.0")
    assert run_cli("sync").code == 0
    assert run_cli("add", "bsf-gamma").code == 0
    inputs = repo.manifest()["inputs"]

    shutil.rmtree(repo.packages_dir)  # the platform's ephemeral .packages: gone with the restart

    # A restarted host: startup() finds nothing, syncs (in a child), and serves the addition again.
    proc = python_with_bootstrap("import bootstrap; bootstrap.startup(); import bsf_gamma; print(bsf_gamma.__file__)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith(str(repo.packages_dir / "generations"))
    assert {p["name"]: p["source"] for p in repo.manifest()["packages"]} == {
        "bsf-alpha": "repo",
        "bsf-gamma": "runtime",
    }
    assert run_cli("check").code == 0
    assert overlay_lines(repo.state_dir / OVERLAY) == ["bsf-gamma"]
    assert str(repo.state_dir / OVERLAY) in inputs  # freshness judges by it


def test_the_state_folder_lies_beside_the_packages_folder_and_status_names_it(repo: Repo, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo.write("bsf-alpha==1.0")
    assert run_cli("sync").code == 0

    assert load_settings().layout.state == repo.packages_dir.parent / ".bootstrap"
    assert Sources.from_env().runtime_file == str(repo.state_dir / OVERLAY)  # the fast path agrees
    assert repo.state_dir.is_dir()
    assert f"state folder     {repo.state_dir}" in run_cli("status").out


def test_an_old_overlay_in_the_packages_folder_moves_on_the_first_sync(repo: Repo, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo.write("bsf-alpha==1.0")
    repo.packages_dir.mkdir()
    old = repo.packages_dir / OVERLAY  # where bootstrap kept it before the state folder
    old.write_text("# an older bootstrap's overlay\nbsf-gamma\n")

    assert run_cli("sync").code == 0

    assert overlay_lines(repo.state_dir / OVERLAY) == ["bsf-gamma"]
    assert repo.installed() == {"bsf-alpha": "1.0", "bsf-gamma": "1.0"}
    # Left for an older bootstrap on another instance that shares the folder; never read again here.
    assert old.read_text() == "# an older bootstrap's overlay\nbsf-gamma\n"
    assert run_cli("remove", "bsf-gamma").code == 0
    assert run_cli("sync").code == 0
    assert repo.installed() == {"bsf-alpha": "1.0"}


def test_an_add_before_any_sync_keeps_the_old_overlay_lines(repo: Repo, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo.write("bsf-alpha==1.0")
    repo.packages_dir.mkdir()
    (repo.packages_dir / OVERLAY).write_text("bsf-gamma\n")

    assert run_cli("add", "jaraco.context").code == 0

    assert overlay_lines(repo.state_dir / OVERLAY) == ["bsf-gamma", "jaraco.context"]
    assert repo.installed() == {"bsf-alpha": "1.0", "bsf-gamma": "1.0", "jaraco.context": "1.0"}


def test_the_setting_moves_the_state_folder_for_sync_and_the_fast_path_alike(
    repo: Repo, run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    state = tmp_path / "elsewhere" / "state"
    monkeypatch.setenv("BOOTSTRAP_STATE_DIR", str(state))
    repo.write("bsf-alpha==1.0")

    assert run_cli("add", "bsf-gamma").code == 0

    assert overlay_lines(state / OVERLAY) == ["bsf-gamma"]
    assert not (repo.state_dir / OVERLAY).exists()
    assert Sources.from_env().runtime_file == str(state / OVERLAY)
    proc = python_with_bootstrap(
        "import bootstrap.host.boot as b, bootstrap.store.freshness as f, bootstrap.store.manifest as m\n"
        "s = b.sources_of(None); print(f.is_fresh(m.read(s.manifest_file), s))"
    )
    assert proc.stdout.strip() == "True", proc.stderr  # the fast path judges by the same overlay


def test_a_state_folder_inside_the_repo_is_refused(repo: Repo, run_cli, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    repo.write("bsf-alpha==1.0")
    monkeypatch.setenv("BOOTSTRAP_STATE_DIR", str(repo.root / ".bootstrap"))

    result = run_cli("sync")

    assert result.code != 0
    assert "BOOTSTRAP_STATE_DIR" in result.err and "inside the repo folder" in result.err
    assert not (repo.root / ".bootstrap").exists()


def test_the_default_is_never_inside_the_repo_folder(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    inside = repo.root / ".packages"  # a packages folder kept in the repo's checkout
    monkeypatch.setenv("BOOTSTRAP_PACKAGES_DIR", str(inside))

    expected = repo.root.parent / ".bootstrap"
    assert load_settings().layout.state == expected
    assert Sources.from_env().state_dir == str(expected)
