"""One packages folder seen at other paths: a share mounted elsewhere, a checkout and a state folder of its own.

Several host instances see one packages folder over SMB, not necessarily at the same mount point, each with
its own checkout of the repo. The manifest one instance writes must read the same on the others: the folder
served is this instance's ``<packages_dir>/generations/<id>/site`` (never the absolute ``site_dir`` the writer
saw), and the files freshness judges by are recorded by role or relative to their folder (``relative_inputs``).
Here the whole tree (repo, packages folder, state folder) is synced at one path and moved (``os.rename``) to
another, or seen at two paths at once (a link, as two mounts of one share).
"""

from __future__ import annotations

import json
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bootstrap.pipeline.sync import _failed_while_waiting
from bootstrap.settings import load_settings
from bootstrap.store import manifest as manifest_mod
from tests.conftest import Repo, python_with_bootstrap
from tests.test_live import host, let_exit, read_json_line


def check_json(run_cli: Any) -> dict[str, Any]:
    result = run_cli("check", "--json")
    report: dict[str, Any] = json.loads(result.out)
    assert result.code == (1 if report["state"] == "unhealthy" else 0), report
    return report


def instance_at(tree: Path, monkeypatch: pytest.MonkeyPatch) -> Repo:
    """The instance that sees the tree at ``tree``: its repo checkout, packages folder and (default) state folder."""
    monkeypatch.setenv("BOOTSTRAP_REQUIREMENTS_FILE", str(tree / "repo" / "requirements.txt"))
    monkeypatch.setenv("BOOTSTRAP_PACKAGES_DIR", str(tree / "packages"))
    return Repo(tree / "repo", tree / "packages")


@dataclass
class Moved:
    old: Path  # where it was synced: gone
    here: Repo  # the instance that sees it now, at another path
    generation: str
    manifest_text: str  # as the instance at the old path wrote it

    @property
    def site(self) -> Path:
        return self.here.packages_dir / "generations" / self.generation / "site"


def synced_at(tree: Path, monkeypatch: pytest.MonkeyPatch, run_cli: Any) -> Repo:
    """An instance at ``tree`` that synced a committed file (with an include, a committed lock) and added a
    package at run time (the overlay in the state folder beside the packages folder)."""
    (tree / "repo").mkdir(parents=True)
    repo = instance_at(tree, monkeypatch)
    repo.write("bsf-alpha==1.0", "-r base.txt")
    (repo.root / "base.txt").write_text("jaraco.context\n")
    assert run_cli("lock").code == 0
    assert run_cli("sync").code == 0
    assert run_cli("add", "bsf-gamma").code == 0
    assert run_cli("check").code == 0
    return repo


@pytest.fixture
def moved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli: Any) -> Moved:
    old = tmp_path / "home"
    synced_at(old, monkeypatch, run_cli)
    text = (old / "packages" / "manifest.json").read_text()
    new = tmp_path / "mnt" / "share"
    new.parent.mkdir()
    os.rename(old, new)  # the share mounted elsewhere, the checkout and the state folder too
    here = instance_at(new, monkeypatch)
    return Moved(old, here, json.loads(text)["generation"], text)


def test_the_manifest_records_the_site_and_the_inputs_relative_to_their_folders(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-alpha==1.0", "-r base.txt")
    (repo.root / "base.txt").write_text("jaraco.context\n")
    assert run_cli("lock").code == 0
    assert run_cli("sync").code == 0

    m = repo.manifest()
    assert m["site"] == f"generations/{m['generation']}/site"
    assert m["site_dir"] == str(repo.packages_dir / m["site"])  # still written: what the writer saw
    by_role = {
        "@requirements/requirements.txt": str(repo.requirements),
        "@requirements/base.txt": str(repo.root / "base.txt"),
        "@lock/requirements.lock": str(repo.root / "requirements.lock"),
        "@state/runtime-requirements.txt": str(repo.state_dir / "runtime-requirements.txt"),
    }
    assert m["relative_inputs"] == {key: m["inputs"][path] for key, path in by_role.items()}
    assert m["inputs"][str(repo.requirements)] is not None and m["inputs"][str(repo.root / "requirements.lock")]


def test_startup_after_the_move_serves_this_paths_generation_without_a_sync(moved: Moved) -> None:
    code = textwrap.dedent(
        """
        import bootstrap, json, sys
        bootstrap.startup()
        import bsf_alpha, bsf_gamma, jaraco.context
        served = [entry for entry in sys.path if "generations" in entry]
        print(json.dumps({"path": served, "files": [bsf_alpha.__file__, bsf_gamma.__file__]}))
        """
    )
    proc = python_with_bootstrap(code)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["path"] == [str(moved.site)]
    assert all(file.startswith(str(moved.site) + os.sep) for file in report["files"]), report
    assert str(moved.old) not in proc.stdout and "not activating" not in proc.stderr
    # No sync ran (a sync would have rebuilt, or rewritten the manifest with this instance's paths).
    assert moved.here.manifest_path.read_text() == moved.manifest_text


def test_activate_after_the_move_puts_this_paths_generation_on_sys_path(moved: Moved) -> None:
    proc = python_with_bootstrap("import bootstrap, sys; print(bootstrap.activate()); print(sys.path[-1])")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [str(moved.site), str(moved.site)]
    assert proc.stderr == ""


def test_check_after_the_move_is_healthy_and_names_this_folder(moved: Moved, run_cli: Any) -> None:
    report = check_json(run_cli)
    assert report["state"] == "healthy", report
    assert report["problems"] == [] and report["pending"] == []
    assert report["site_dir"] == str(moved.site)
    status = run_cli("status")
    assert f"site dir         {moved.site}" in status.out and "not record" not in status.out


def test_sync_after_the_move_is_up_to_date_and_verify_passes(moved: Moved, run_cli: Any) -> None:
    generations = moved.here.packages_dir / "generations"
    before = sorted(generations.iterdir())
    synced = run_cli("sync")
    assert synced.code == 0 and synced.out.startswith("up to date"), synced
    assert sorted(generations.iterdir()) == before  # nothing built
    assert moved.here.manifest_path.read_text() == moved.manifest_text

    verified = run_cli("verify")
    assert verified.code == 0, verified


def test_the_runtime_additions_made_at_the_old_path_still_count(moved: Moved, run_cli: Any) -> None:
    # ensure() of a package added before the move: served as it is, no sync (a child would be a sync).
    code = textwrap.dedent(
        """
        import bootstrap, json
        from bootstrap.host import child

        def no_sync(*args, **kwargs):
            raise SystemExit("ensure ran a sync: " + " ".join(args[0]))

        child.run = no_sync
        entry = bootstrap.ensure("bsf-gamma")
        import bsf_gamma
        print(json.dumps({"entry": entry, "file": bsf_gamma.__file__}))
        """
    )
    proc = python_with_bootstrap(code)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["entry"]["source"] == "runtime" and report["file"].startswith(str(moved.site) + os.sep)

    again = run_cli("add", "--if-needed", "bsf-gamma")
    assert again.code == 0 and "already served" in again.out, again
    # A new addition here keeps the old one, and the result is as healthy as before.
    assert run_cli("add", "bsf-beta").code == 0
    sources = {p["name"]: p["source"] for p in moved.here.manifest()["packages"]}
    assert sources["bsf-gamma"] == "runtime" and sources["bsf-beta"] == "runtime" and sources["bsf-alpha"] == "repo"
    assert check_json(run_cli)["state"] == "healthy"


@pytest.mark.parametrize("edited", ["requirements.txt", "base.txt", "requirements.lock", "overlay"])
def test_an_edit_after_the_move_is_named_at_this_instances_path(moved: Moved, run_cli: Any, edited: str) -> None:
    """Not blind: each recorded file is judged where this instance has it."""
    here = moved.here
    path = here.state_dir / "runtime-requirements.txt" if edited == "overlay" else here.root / edited
    path.write_text(path.read_text() + "# edited\n")

    report = check_json(run_cli)
    assert report["state"] == "degraded", report
    assert report["pending"] == [
        f"sync pending: {path} changed since the last sync; generation {moved.generation} serves until a sync"
    ]
    synced = run_cli("sync")  # a comment: the same pins, the same generation, the new hash recorded
    assert synced.code == 0 and "the pins are unchanged" in synced.err, synced
    assert check_json(run_cli)["state"] == "healthy"


def test_two_instances_at_two_mount_points_take_turns(
    moved: Moved, run_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The share seen at both paths at once (a link stands in for the second mount): what one instance
    publishes, the other serves from its own path, and neither rebuilds what the other built."""
    moved.old.symlink_to(moved.here.root.parent, target_is_directory=True)
    other = instance_at(moved.old, monkeypatch)
    assert run_cli("add", "bsf-beta").code == 0  # the instance at the old path publishes
    published = other.manifest()
    assert published["site_dir"].startswith(str(moved.old))

    here = instance_at(moved.here.root.parent, monkeypatch)
    site = here.packages_dir / "generations" / published["generation"] / "site"
    assert check_json(run_cli)["state"] == "healthy"
    assert run_cli("sync").out.startswith("up to date")
    proc = python_with_bootstrap("import bootstrap; print(bootstrap.activate()); import bsf_beta")
    assert proc.stdout.strip() == str(site), proc.stderr  # not the other instance's path
    assert run_cli("remove", "bsf-beta").code == 0  # this instance publishes in turn

    instance_at(moved.old, monkeypatch)
    assert check_json(run_cli)["state"] == "healthy"
    assert run_cli("sync").out.startswith("up to date")
    assert "bsf-beta" not in {p["name"] for p in here.manifest()["packages"]}


def test_a_watching_host_follows_what_an_instance_at_another_mount_publishes(
    moved: Moved, run_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The live switch: a generation another instance published (its ``site_dir`` under its own mount) is
    switched to at this host's path."""
    moved.old.symlink_to(moved.here.root.parent, target_is_directory=True)
    with host() as proc:  # the instance that sees the share at the new path
        ready = read_json_line(proc)
        assert ready["site"] == str(moved.site)

        instance_at(moved.old, monkeypatch)
        assert run_cli("add", "bsf-beta").code == 0  # another instance publishes
        published = json.loads((moved.old / "packages" / "manifest.json").read_text())
        assert published["site_dir"].startswith(str(moved.old))

        switched = read_json_line(proc)
        site = moved.here.packages_dir / "generations" / published["generation"] / "site"
        assert switched["site"] == str(site) and switched["gamma"].startswith(str(site) + os.sep)
        assert not switched["old_site_on_path"]
        assert let_exit(proc) == 0


def test_a_site_dir_naming_another_instances_mount_is_served_from_this_folder(
    repo: Repo, tmp_path: Path, run_cli: Any
) -> None:
    """The manifest's absolute ``site_dir`` is what its writer saw: another instance's mount of the share,
    even one that exists here and holds something else. This folder's generation is served, nothing from there."""
    repo.write("bsf-alpha==1.0")
    assert run_cli("sync").code == 0
    m = repo.manifest()
    elsewhere = tmp_path / "mnt" / "share" / ".packages" / "generations" / m["generation"] / "site"
    (elsewhere / "bsf_alpha").mkdir(parents=True)
    (elsewhere / "bsf_alpha" / "__init__.py").write_text("__version__ = 'elsewhere'\n")
    (elsewhere / "zz_elsewhere.pth").write_text("import sys; sys.stderr.write('ELSEWHERE RAN\\n')\n")
    m["site_dir"] = str(elsewhere)
    repo.manifest_path.write_text(json.dumps(m))
    ours = repo.packages_dir / "generations" / m["generation"] / "site"

    for code in ("bootstrap.activate()", "bootstrap.startup()"):
        proc = python_with_bootstrap(f"import bootstrap; {code}; import bsf_alpha; print(bsf_alpha.__file__)")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip().startswith(str(ours) + os.sep) and "ELSEWHERE RAN" not in proc.stderr
    assert check_json(run_cli)["site_dir"] == str(ours)
    assert run_cli("sync").out.startswith("up to date") and run_cli("verify").code == 0
    assert repo.manifest()["site_dir"] == str(elsewhere)  # nothing rewrote it: nothing needed doing


def test_a_failure_recorded_at_the_old_path_is_not_repeated_by_a_waiter_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli: Any
) -> None:
    old = tmp_path / "home"
    repo = synced_at(old, monkeypatch, run_cli)
    repo.write("bsf-alpha>=>1")
    assert run_cli("sync").code == 1
    os.rename(old, tmp_path / "elsewhere")
    instance_at(tmp_path / "elsewhere", monkeypatch)

    settings = load_settings()
    current = manifest_mod.read(settings.layout.manifest)
    assert current is not None and current["status"] == "failed"
    recorded = _failed_while_waiting(current, settings, waiting_since="")
    assert recorded is not None and "bsf-alpha>=>1" in str(recorded)


def test_a_manifest_from_before_the_relative_keys_still_serves_and_moves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run_cli: Any
) -> None:
    """A manifest an older bootstrap wrote (no ``site``, no ``relative_inputs``): judged by its absolute keys
    where it was written; seen at another path, its generation is still served from there (from its id), and
    the first sync only records the relative keys (the same pins: nothing built)."""
    old = tmp_path / "home"
    repo = synced_at(old, monkeypatch, run_cli)
    m = repo.manifest()
    m.pop("site", None)
    m.pop("relative_inputs", None)
    repo.manifest_path.write_text(json.dumps(m))
    assert check_json(run_cli)["state"] == "healthy"
    assert run_cli("sync").out.startswith("up to date")

    os.rename(old, tmp_path / "elsewhere")
    here = instance_at(tmp_path / "elsewhere", monkeypatch)
    site = here.packages_dir / "generations" / m["generation"] / "site"
    proc = python_with_bootstrap("import bootstrap; print(bootstrap.activate())")
    assert proc.stdout.strip() == str(site), proc.stderr
    generations = sorted((here.packages_dir / "generations").iterdir())
    synced = run_cli("sync")
    assert synced.code == 0 and "the pins are unchanged" in synced.err, synced
    assert sorted((here.packages_dir / "generations").iterdir()) == generations
    assert here.manifest()["site"] == f"generations/{m['generation']}/site"
    assert check_json(run_cli)["state"] == "healthy"
