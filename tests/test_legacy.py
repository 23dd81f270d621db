"""The old habit keeps working: ``pip install --target`` content is adopted, an old ``sys.path`` line is taken off."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bootstrap.host import child
from bootstrap.store.paths import HOST_PATH_VARIABLE
from tests.conftest import Repo, python_with_bootstrap
from tests.test_watch import running, serves, wait_for


def pip_install_target(folder: Path, *requirements: str) -> None:
    """What the platform's workflows run: a real ``pip install --target`` (from the fixture wheelhouse)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--target", str(folder), *requirements],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def local_build(folder: Path, name: str, version: str) -> None:
    """A legacy distribution no index has (built and installed by hand): a dist-info and its module."""
    module = name.replace("-", "_")
    dist_info = folder / f"{module}-{version}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (dist_info / "RECORD").write_text(f"{module}.py,,\n")
    (folder / f"{module}.py").write_text("LOCAL = True\n")


def snapshot(folder: Path) -> dict[str, bytes]:
    """The legacy files: everything at the top level that is not bootstrap's, with contents."""
    from bootstrap.store.layout import Layout

    layout = Layout(folder)
    found = {}
    for top in folder.iterdir():
        if layout.is_managed(top.name):
            continue
        for path in [top] if top.is_file() else sorted(top.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                found[str(path.relative_to(folder))] = path.read_bytes()
    return found


def sources(repo: Repo) -> dict[str, tuple[str, str | None]]:
    return {p["name"]: (p["version"], p["source"]) for p in repo.manifest()["packages"]}


def overlay_lines(repo: Repo) -> list[str]:
    path = repo.state_dir / "runtime-requirements.txt"
    return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]


def test_legacy_content_is_adopted_on_the_first_sync_and_left_as_it_is(repo: Repo, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo.write("bsf-gamma")
    pip_install_target(repo.packages_dir, "bsf-alpha==1.0")  # the old way, before bootstrap
    before = snapshot(repo.packages_dir)
    assert any(name.startswith("bsf_alpha-1.0.dist-info") for name in before)

    result = run_cli("sync")

    assert result.code == 0, result.err
    assert sources(repo) == {"bsf-alpha": ("1.0", "runtime"), "bsf-gamma": ("1.0", "repo")}
    assert overlay_lines(repo) == ["bsf-alpha==1.0"]
    assert snapshot(repo.packages_dir) == before  # never changed, never removed
    status = run_cli("status").out
    assert re.search(r"bsf-alpha\s+1\.0\s+added at run time \(adopted from the packages folder", status), status
    # A host imports it from the generation (the legacy folder is not on its path).
    proc = python_with_bootstrap("import bootstrap; bootstrap.startup(); import bsf_alpha; print(bsf_alpha.__file__)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith(str(repo.packages_dir / "generations"))


def test_a_removed_adoption_is_not_adopted_again(repo: Repo, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo.write("bsf-gamma")
    pip_install_target(repo.packages_dir, "bsf-alpha==1.0")
    assert run_cli("sync").code == 0
    assert "bsf-alpha" in repo.installed()

    assert run_cli("remove", "bsf-alpha").code == 0
    repo.write("bsf-gamma", "jaraco.context")  # a real sync follows, not the up-to-date answer
    assert run_cli("sync").code == 0

    assert "bsf-alpha" not in repo.installed()
    assert (repo.packages_dir / "bsf_alpha-1.0.dist-info").is_dir()  # still there, unserved
    record = json.loads((repo.state_dir / "adopted.json").read_text())["distributions"]
    assert record["bsf-alpha==1.0"]["outcome"] == "adopted"


def test_a_local_build_is_a_warning_naming_it_and_the_rest_is_adopted(repo: Repo, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo.write("bsf-gamma")
    pip_install_target(repo.packages_dir, "bsf-alpha==1.0")
    local_build(repo.packages_dir, "bsf-homemade", "0.1")

    result = run_cli("sync")

    assert result.code == 0, result.err
    assert "bsf-homemade 0.1 (bsf_homemade-0.1.dist-info" in result.err and "cannot be adopted" in result.err
    assert sources(repo) == {"bsf-alpha": ("1.0", "runtime"), "bsf-gamma": ("1.0", "repo")}
    assert repo.manifest()["status"] == "ok"
    assert "bsf-homemade" in run_cli("status").out.split("legacy packages not adopted")[1]
    repo.write("bsf-gamma", "jaraco.context")
    again = run_cli("sync")
    assert again.code == 0 and "bsf-homemade" not in again.err  # warned once, not at every sync


def test_the_committed_file_decides_a_legacy_package_it_names(repo: Repo, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo.write("bsf-alpha==2.0")
    pip_install_target(repo.packages_dir, "bsf-alpha==1.0")

    result = run_cli("sync")

    assert result.code == 0, result.err
    assert sources(repo) == {"bsf-alpha": ("2.0", "repo")}
    record = json.loads((repo.state_dir / "adopted.json").read_text())["distributions"]
    assert record["bsf-alpha==1.0"]["outcome"] == "committed"
    repo.write("bsf-gamma")  # dropped from the committed file on purpose: the old 1.0 does not come back
    assert run_cli("sync").code == 0
    assert sources(repo) == {"bsf-gamma": ("1.0", "repo")}


def test_a_workflow_still_running_pip_target_is_adopted_by_the_next_sync(repo: Repo, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo.write("bsf-alpha==1.0")
    assert run_cli("sync").code == 0

    pip_install_target(repo.packages_dir, "bsf-gamma")  # pip says "Successfully installed"

    assert run_cli("sync").code == 0
    assert sources(repo) == {"bsf-alpha": ("1.0", "repo"), "bsf-gamma": ("1.0", "runtime")}


def test_a_watching_host_adopts_a_pip_target_install(repo: Repo) -> None:
    repo.write("bsf-alpha==1.0")
    with running(repo):
        pip_install_target(repo.packages_dir, "bsf-gamma")
        wait_for(serves(repo, {"bsf-alpha": "1.0", "bsf-gamma": "1.0"}), "the watcher to adopt bsf-gamma")
    assert sources(repo)["bsf-gamma"] == ("1.0", "runtime")


def test_startup_takes_the_packages_root_off_sys_path_and_says_which_line_to_delete(repo: Repo, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo.write("bsf-alpha==2.0")
    pip_install_target(repo.packages_dir, "bsf-alpha==1.0")
    assert run_cli("sync").code == 0
    root = str(repo.packages_dir)

    proc = python_with_bootstrap(
        f"import sys; sys.path.insert(0, {root!r})\n"  # the platform's documented function_app.py line
        "import bootstrap; bootstrap.startup()\n"
        f"import bsf_alpha; print(bsf_alpha.__version__, {root!r} in sys.path)"
    )

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["2.0", "False"]  # the generation's, not the legacy file's
    warnings = [line for line in proc.stderr.splitlines() if "function_app.py" in line]
    assert len(warnings) == 1 and f"sys.path.insert(0, {root!r})" in warnings[0], proc.stderr


def test_check_names_the_packages_root_while_the_host_has_it_on_sys_path(
    repo: Repo, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    repo.write("bsf-alpha==1.0")
    assert run_cli("sync").code == 0
    root = str(repo.packages_dir)
    monkeypatch.setattr(sys, "path", [root, *sys.path])

    env = child._environment(repo.settings())  # what a host's `check` child is told of the host's sys.path
    assert root in env[HOST_PATH_VARIABLE].split(os.pathsep)
    monkeypatch.setenv(HOST_PATH_VARIABLE, env[HOST_PATH_VARIABLE])
    report = json.loads(run_cli("check", "--json").out)
    assert any(root in note and "function_app.py" in note for note in report["notes"]), report

    monkeypatch.setenv(HOST_PATH_VARIABLE, os.pathsep.join(entry for entry in sys.path if entry != root))
    report = json.loads(run_cli("check", "--json").out)
    assert not any("function_app.py" in note for note in report["notes"]), report


def test_a_failure_not_of_the_legacy_packages_is_recorded_and_adoption_waits_for_the_next_sync(
    repo: Repo, run_cli
) -> None:  # type: ignore[no-untyped-def]
    repo.write("bsf-nowhere-at-all")  # the committed file's own problem
    pip_install_target(repo.packages_dir, "bsf-alpha==1.0")

    failed = run_cli("sync")

    assert failed.code == 1 and "bsf-nowhere-at-all" in failed.err
    assert repo.manifest()["status"] == "failed"  # recorded as any failed sync is
    assert (
        not (repo.state_dir / "adopted.json").exists()
        or "bsf-alpha==1.0" not in (json.loads((repo.state_dir / "adopted.json").read_text())["distributions"])
    )
    repo.write("bsf-gamma")
    assert run_cli("sync").code == 0
    assert sources(repo) == {"bsf-alpha": ("1.0", "runtime"), "bsf-gamma": ("1.0", "repo")}
