"""Organisations' sets: the workspace's set plus each organisation's file, synced side by side, failing alone."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from bootstrap.host.watch import Watcher
from bootstrap.store.fs import tree_size
from bootstrap.store.layout import DEPARTED_MARKER
from tests.conftest import BACKEND, CliResult, Repo, python_in
from tests.test_watch import save_by_rename, wait_for

RESOLVER = "uv pip compile" if BACKEND == "uv" else "pip-compile"


def write_org(repo: Repo, org: str, *lines: str) -> Path:
    path = repo.root / "orgs" / org / "requirements.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def org_manifest(repo: Repo, org: str) -> dict[str, Any]:
    return json.loads((repo.packages_dir / "orgs" / org / "manifest.json").read_text())  # type: ignore[no-any-return]


def org_site(repo: Repo, org: str) -> Path:
    return repo.packages_dir / "orgs" / org / "generations" / org_manifest(repo, org)["generation"] / "site"


def versions(manifest: dict[str, Any]) -> dict[str, str]:
    return {package["name"]: package["version"] for package in manifest["packages"]}


def test_an_org_has_the_workspace_set_and_its_own_sharing_every_file(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-beta==1.0")
    write_org(repo, "acme", "jaraco.context")
    result: CliResult = run_cli("sync")
    assert result.code == 0, result.err
    assert "organisations: 1 synced, 0 up to date" in result.out
    acme = org_manifest(repo, "acme")
    assert acme["org"] == "acme"
    assert versions(acme) == {"bsf-alpha": "2.0", "bsf-beta": "1.0", "jaraco.context": "1.0"}
    sources = {package["name"]: package["source"] for package in acme["packages"]}
    assert sources == {"bsf-alpha": None, "bsf-beta": "workspace", "jaraco.context": "repo"}
    assert acme["workspace"]["generation"] == repo.manifest()["generation"]
    assert acme["isolation"]["mode"] == "in-process"
    assert acme["isolation"]["private"] == {"jaraco.context": "1.0"}
    # One file on disk for both sets: the org's generation links the workspace's.
    workspace_site = Path(repo.manifest()["site_dir"])
    for module in ("bsf_alpha/__init__.py", "bsf_beta/__init__.py"):
        assert (org_site(repo, "acme") / module).stat().st_ino == (workspace_site / module).stat().st_ino
    # The workspace's own set is untouched by the org.
    assert repo.installed() == {"bsf-alpha": "2.0", "bsf-beta": "1.0"}
    code = "import jaraco.context, bsf_beta; print(bsf_beta.__version__)"
    assert python_in(org_site(repo, "acme"), code).stdout.strip() == "1.0"


def test_an_org_resolves_its_own_lines_around_the_workspace_pins(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-beta==1.0", "bsf-gamma")
    write_org(repo, "acme", "jaraco.context")
    run_cli("sync")
    assert "resolving" not in run_cli("sync", "--org", "acme").err  # up to date: nothing resolved
    write_org(repo, "acme", "jaraco.context", "jaraco.functools")
    result = run_cli("sync", "--org", "acme")
    assert result.code == 0
    resolving = [line for line in result.err.splitlines() if "resolving" in line]
    assert resolving == [f"bootstrap: resolving 2 requirements with {RESOLVER} around the workspace's 3 pins"]
    assert versions(org_manifest(repo, "acme")) == {
        "bsf-alpha": "2.0",
        "bsf-beta": "1.0",
        "bsf-gamma": "1.0",
        "jaraco.context": "1.0",
        "jaraco.functools": "2.0",
    }


def test_two_orgs_pin_versions_that_conflict_side_by_side(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-gamma")
    write_org(repo, "old", "bsf-alpha==1.0")
    write_org(repo, "new", "bsf-alpha==2.0")
    assert run_cli("sync").code == 0
    assert versions(org_manifest(repo, "old"))["bsf-alpha"] == "1.0"
    assert versions(org_manifest(repo, "new"))["bsf-alpha"] == "2.0"
    code = "import bsf_alpha; print(bsf_alpha.__version__)"
    assert python_in(org_site(repo, "old"), code).stdout.strip() == "1.0"
    assert python_in(org_site(repo, "new"), code).stdout.strip() == "2.0"
    # The distribution both have from the workspace is one inode across the three sets.
    inodes = {(org_site(repo, org) / "bsf_gamma.py").stat().st_ino for org in ("old", "new")}
    assert inodes == {(Path(repo.manifest()["site_dir"]) / "bsf_gamma.py").stat().st_ino}


def test_a_line_against_a_workspace_pin_fails_that_org_alone(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-alpha==2.0")
    bad = write_org(repo, "bad", "bsf-gamma")
    write_org(repo, "good", "jaraco.context")
    assert run_cli("sync").code == 0
    served = org_manifest(repo, "bad")["generation"]
    write_org(repo, "bad", "bsf-gamma", "bsf-alpha==1.0")
    write_org(repo, "good", "jaraco.context", "bsf-gamma")
    write_org(repo, "missing", "bsf-nowhere")  # a package the index does not have

    result = run_cli("sync")

    assert result.code == 1
    failures = [line for line in result.err.splitlines() if line.startswith("bootstrap: error:")]
    assert len(failures) == 2, result.err
    assert failures[0].startswith(f"bootstrap: error: org bad: {bad}:2: bsf-alpha==1.0 conflicts with the workspace's")
    assert f"{repo.requirements}:1: bsf-alpha==2.0" in failures[0]  # both lines named
    assert failures[1].startswith("bootstrap: error: org missing: ") and "bsf-nowhere" in failures[1]
    assert "1 synced, 0 up to date, 2 failed" in result.out
    # The good org published; the bad one keeps serving its last good generation and records why.
    assert versions(org_manifest(repo, "good"))["bsf-gamma"] == "1.0"
    recorded = org_manifest(repo, "bad")
    assert recorded["generation"] == served and recorded["status"] == "failed"
    assert "conflicts with the workspace's bsf-alpha==2.0" in recorded["error"]["message"]
    assert run_cli("check").code == 0  # the workspace serves: one org's failure is no host's
    assert run_cli("check", "--org", "bad").code == 1


def test_a_folder_that_is_no_org_id_is_refused_in_one_line(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-gamma")
    write_org(repo, "Acme Corp", "jaraco.context")
    write_org(repo, "fine", "jaraco.context")
    result = run_cli("sync")
    assert result.code == 1
    assert "bootstrap: error: org Acme Corp: " in result.err and "not an organisation: an org id is" in result.err
    assert org_manifest(repo, "fine")["status"] == "ok"
    bad_id = run_cli("status", "--org", "../escape")
    assert bad_id.code == 1 and "'../escape' is not an org id" in bad_id.err and "Traceback" not in bad_id.err


def test_a_changed_org_file_rebuilds_that_org_only(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-gamma")
    write_org(repo, "a", "bsf-alpha==1.0")
    write_org(repo, "b", "jaraco.context")
    run_cli("sync")
    before = {org: org_manifest(repo, org)["updated_at"] for org in ("a", "b")}
    workspace = repo.manifest()["generation"]
    write_org(repo, "a", "bsf-alpha==2.0")
    result = run_cli("sync")
    assert "organisations: 1 synced, 1 up to date" in result.out
    assert org_manifest(repo, "b")["updated_at"] == before["b"]
    assert versions(org_manifest(repo, "a"))["bsf-alpha"] == "2.0"
    assert repo.manifest()["generation"] == workspace


def test_a_changed_workspace_rebuilds_the_orgs_on_top_of_it(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-gamma")
    write_org(repo, "a", "bsf-alpha==1.0")
    run_cli("sync")
    repo.write("bsf-gamma", "jaraco.functools")
    result = run_cli("sync")
    assert result.code == 0 and "organisations: 1 synced" in result.out
    a = org_manifest(repo, "a")
    assert a["workspace"]["generation"] == repo.manifest()["generation"]
    assert versions(a) == {"bsf-alpha": "1.0", "bsf-gamma": "1.0", "jaraco.functools": "2.0"}


def test_an_org_sync_needs_the_workspace_set_first(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-gamma")
    write_org(repo, "a", "bsf-alpha==1.0")
    result = run_cli("sync", "--org", "a")
    assert result.code == 1
    assert "names no published workspace set yet" in result.err and "Traceback" not in result.err
    assert run_cli("sync").code == 0  # the workspace first, then the org
    assert org_manifest(repo, "a")["status"] == "ok"


def test_a_departed_org_goes_after_the_grace_period_never_the_workspace(
    repo: Repo, run_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo.write("bsf-gamma")
    write_org(repo, "gone", "bsf-alpha==1.0")
    run_cli("sync")
    folder = repo.packages_dir / "orgs" / "gone"
    (repo.root / "orgs" / "gone" / "requirements.txt").unlink()
    run_cli("sync")  # the default grace period: it stays, marked
    assert (folder / DEPARTED_MARKER).is_file() and (folder / "manifest.json").is_file()
    monkeypatch.setenv("BOOTSTRAP_ORG_GRACE_SECONDS", "0")
    result = run_cli("sync")
    assert "1 removed" in result.out
    assert not folder.exists()
    assert repo.installed() == {"bsf-gamma": "1.0"} and Path(repo.manifest()["site_dir"]).is_dir()


def test_a_returning_org_is_kept(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-gamma")
    write_org(repo, "back", "bsf-alpha==1.0")
    run_cli("sync")
    (repo.root / "orgs" / "back" / "requirements.txt").unlink()
    run_cli("sync")
    write_org(repo, "back", "bsf-alpha==1.0")
    run_cli("sync")
    assert not (repo.packages_dir / "orgs" / "back" / DEPARTED_MARKER).exists()


def test_every_command_takes_an_org(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-gamma")
    write_org(repo, "a", "bsf-alpha==1.0")
    run_cli("sync")
    first = org_manifest(repo, "a")["generation"]

    added = run_cli("add", "--org", "a", "jaraco.context")
    assert added.code == 0, added.err
    assert versions(org_manifest(repo, "a"))["jaraco.context"] == "1.0"
    assert "jaraco.context" not in repo.installed()  # the org's overlay, not the workspace's
    assert (repo.state_dir / "orgs" / "a" / "runtime-requirements.txt").is_file()
    assert not (repo.state_dir / "runtime-requirements.txt").exists()

    status = run_cli("status", "--org", "a")
    assert status.code == 0 and "org              a" in status.out and "added at run time" in status.out
    as_json = json.loads(run_cli("status", "--org", "a", "--json").out)
    assert as_json["manifest"]["org"] == "a"
    verified = run_cli("verify", "--org", "a")
    assert verified.code == 0 and "verified: generation" in verified.out
    assert run_cli("check", "--org", "a").out.startswith("healthy: generation")

    rolled = run_cli("rollback", "--org", "a")
    assert rolled.code == 0 and org_manifest(repo, "a")["generation"] == first
    removed = run_cli("remove", "--org", "a", "jaraco.context")
    assert removed.code == 0, removed.err
    assert "jaraco.context" not in versions(org_manifest(repo, "a"))

    locked = run_cli("lock", "--org", "a")
    assert locked.code == 0
    lock_text = (repo.root / "orgs" / "a" / "requirements.lock").read_text()
    assert "bsf-alpha==1.0" in lock_text and "bsf-gamma==1.0" in lock_text


def test_check_covers_the_workspace_and_every_org(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-gamma")
    write_org(repo, "a", "bsf-alpha==1.0")
    write_org(repo, "b", "jaraco.context")
    run_cli("sync")
    write_org(repo, "b", "jaraco.context", "bsf-nowhere")
    result = run_cli("check")
    lines = result.out.splitlines()
    assert lines[0].startswith("healthy: generation")
    assert lines[1].startswith("org a: healthy:")
    assert lines[2].startswith("org b: degraded: sync pending:")
    report = json.loads(run_cli("check", "--json").out)
    assert sorted(report["orgs"]) == ["a", "b"] and report["orgs"]["b"]["state"] == "degraded"


def test_twenty_orgs_from_one_command(repo: Repo, run_cli: Any, record_property: Any) -> None:
    repo.write("bsf-beta==1.0", "bsf-gamma")
    extras = ["jaraco.context", "jaraco.functools", "bsf-renamed", "colorama", "tabulate"]
    for number in range(20):
        write_org(repo, f"org-{number:02d}", extras[number % len(extras)])
    assert run_cli("sync", "--org", "org-00").code == 1  # no workspace set yet: the one-line refusal
    started = time.monotonic()
    result = run_cli("sync")
    elapsed = time.monotonic() - started
    assert result.code == 0, result.err
    assert "organisations: 20 synced" in result.out
    workspace_bytes = tree_size(Path(repo.manifest()["site_dir"]).parent)
    orgs_bytes = tree_size(repo.packages_dir / "orgs")  # each inode once: what the 20 orgs add
    record_property("twenty_orgs_seconds", round(elapsed, 1))
    record_property("twenty_orgs_bytes", orgs_bytes)
    print(f"20 orgs: {elapsed:.1f}s; the workspace's generation {workspace_bytes} bytes, the orgs add {orgs_bytes}")
    # Every file of the workspace's generation is one inode in all 21 sets, and its package folders are links
    # in each org's (store.layers): the orgs add only their own packages.
    workspace_site = Path(repo.manifest()["site_dir"])
    files = [path for path in workspace_site.rglob("*") if path.is_file()]
    assert len(files) > 5
    for number in range(20):
        site = org_site(repo, f"org-{number:02d}")
        for path in files:
            assert (site / path.relative_to(workspace_site)).stat().st_ino == path.stat().st_ino, path
        assert (site / "bsf_alpha").is_symlink() and (site / "bsf_beta").is_symlink()
    for number in range(20):
        assert org_manifest(repo, f"org-{number:02d}")["status"] == "ok"


def test_watch_syncs_an_org_whose_file_changed(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-gamma")
    org_file = write_org(repo, "a", "bsf-alpha==1.0")
    write_org(repo, "b", "jaraco.context")
    run_cli("sync")
    untouched = org_manifest(repo, "b")["updated_at"]
    workspace = repo.manifest()["updated_at"]
    with Watcher(repo.settings(watch_debounce=0.3), initial_sync=False):
        save_by_rename(org_file, "bsf-alpha==2.0")
        wait_for(lambda: versions(org_manifest(repo, "a")).get("bsf-alpha") == "2.0", "org a's new generation")
    assert org_manifest(repo, "b")["updated_at"] == untouched
    assert repo.manifest()["updated_at"] == workspace


def test_ensure_for_an_org_leaves_the_host_on_the_workspace(repo: Repo, run_cli: Any) -> None:
    import sys

    from bootstrap.host.ensure import ensure

    repo.write("bsf-gamma")
    write_org(repo, "a", "bsf-alpha==1.0")
    run_cli("sync")
    path_before = list(sys.path)
    entry = ensure("jaraco.context", settings=repo.settings(), org="a")
    assert entry["name"] == "jaraco.context" and entry["source"] == "runtime"
    assert versions(org_manifest(repo, "a"))["jaraco.context"] == "1.0"
    assert sys.path == path_before and "jaraco.context" not in repo.installed()
    assert os.path.isfile(repo.state_dir / "orgs" / "a" / "runtime-requirements.txt")


def test_startup_syncs_an_org_whose_file_changed_and_not_one_that_failed(repo: Repo, run_cli: Any) -> None:
    from tests.conftest import python_with_bootstrap

    repo.write("bsf-gamma")
    org_file = write_org(repo, "a", "bsf-alpha==1.0")
    write_org(repo, "b", "jaraco.context")
    run_cli("sync")
    write_org(repo, "a", "bsf-alpha==2.0")
    code = "import bootstrap; m = bootstrap.startup(); import bsf_gamma; print(m['status'])"
    proc = python_with_bootstrap(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["ok"]
    assert versions(org_manifest(repo, "a"))["bsf-alpha"] == "2.0"  # the start-up synced the org
    # An org whose sync failed on its file as it is: the next start-up does not try again (the fast path).
    write_org(repo, "a", "bsf-alpha==2.0", "bsf-nowhere")
    proc = python_with_bootstrap(code)
    assert proc.returncode == 0, proc.stderr
    assert org_manifest(repo, "a")["status"] == "failed"
    failed_at = org_manifest(repo, "a")["updated_at"]
    proc = python_with_bootstrap(code + "; import sys; print('bootstrap.host.child' in sys.modules)")
    assert proc.stdout.split() == ["ok", "False"], proc.stderr  # no child: nothing to do
    assert org_manifest(repo, "a")["updated_at"] == failed_at
    assert org_file.exists()


def test_an_org_the_repo_does_not_have_is_refused_and_gets_no_folder(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-gamma")
    run_cli("sync")
    for args in (("sync", "--org", "ghost"), ("add", "--org", "ghost", "bsf-alpha"), ("lock", "--org", "ghost")):
        result = run_cli(*args)
        assert result.code == 1 and "there is no organisation 'ghost'" in result.err, args
    assert not (repo.packages_dir / "orgs" / "ghost").exists()


def test_a_vanished_orgs_folder_keeps_every_org(repo: Repo, run_cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    repo.write("bsf-gamma")
    write_org(repo, "a", "bsf-alpha==1.0")
    run_cli("sync")
    monkeypatch.setenv("BOOTSTRAP_ORG_GRACE_SECONDS", "0")
    monkeypatch.setenv("BOOTSTRAP_ORGS_DIR", "orgz")  # a typo
    result = run_cli("sync")
    assert result.code == 0 and "orgz does not exist: the packages of 1 organisation stay" in result.err
    assert (repo.packages_dir / "orgs" / "a" / "manifest.json").is_file()


def test_an_orgs_folder_others_can_write_is_not_served(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-gamma")
    write_org(repo, "a", "bsf-alpha==1.0")
    run_cli("sync")
    orgs_root = repo.packages_dir / "orgs"
    os.chmod(orgs_root, 0o777)
    try:
        result = run_cli("check", "--org", "a")
        assert result.code == 1 and f"{orgs_root} is writable by every local user" in result.out
    finally:
        os.chmod(orgs_root, 0o700)
    assert run_cli("check", "--org", "a").code == 0


def test_check_names_a_damaged_org(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-gamma")
    write_org(repo, "a", "jaraco.context")
    run_cli("sync")
    site = org_site(repo, "a")
    os.chmod(site / "jaraco", 0o755)
    (site / "jaraco" / "context.py").unlink()  # its own distribution's file
    lines = run_cli("check").out.splitlines()
    assert lines[1].startswith("org a: unhealthy:") and "jaraco/context.py" in lines[1]
    assert run_cli("check", "--org", "a").code == 1
    os.chmod(site, 0o755)
    (site / "zz_planted.pth").write_text("import os\n")
    assert "zz_planted.pth in the active generation's site folder is listed in no RECORD" in run_cli("check").out


# An org's generation layered on the workspace's (store.layers): folders as links, not made again.


def test_an_orgs_generation_links_the_workspaces_folders_and_makes_only_its_own(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-beta==1.0", "jaraco.context")
    write_org(repo, "acme", "jaraco.functools", "bsf-gamma")
    assert run_cli("sync").code == 0
    workspace = repo.manifest()["generation"]
    site = org_site(repo, "acme")
    assert (site.parent / "builds-on").read_text().strip() == workspace
    dist_infos = sorted(p.name for p in site.iterdir() if p.name.startswith(("bsf_alpha-", "bsf_beta-")))
    assert len(dist_infos) == 2
    for name in ("bsf_alpha", "bsf_beta", *dist_infos):  # only the workspace's distributions fill these
        assert (site / name).is_symlink(), name
        assert os.readlink(site / name) == f"../../../../../generations/{workspace}/site/{name}"
    # jaraco is a namespace both sets fill (context from the workspace, functools the org's own): made here.
    assert (site / "jaraco").is_dir() and not (site / "jaraco").is_symlink()
    workspace_site = Path(repo.manifest()["site_dir"])
    assert (site / "jaraco/context.py").stat().st_ino == (workspace_site / "jaraco/context.py").stat().st_ino
    assert not (workspace_site / "jaraco" / "functools").exists()
    assert not (site / "bsf_gamma.py").is_symlink()  # a file of its own
    verify = run_cli("verify", "--org", "acme")
    assert verify.code == 0, verify.out
    assert run_cli("check", "--org", "acme").code == 0
    code = "import jaraco.context, jaraco.functools, bsf_beta, bsf_gamma; print(bsf_beta.__file__)"
    assert python_in(site, code).stdout.strip() == str(site / "bsf_beta" / "__init__.py")
    # Another link, even one of the right form under another name, is listed in no RECORD.
    os.symlink(f"../../../../../generations/{workspace}/site/bsf_alpha", site / "planted")
    assert "unlisted: planted" in run_cli("verify", "--org", "acme").out
    (site / "planted").unlink()
    # The workspace generation gone (by hand): check says so, and a sync makes both whole again.
    generation_dir = repo.packages_dir / "generations" / workspace
    generation_dir.rename(repo.packages_dir / "moved-away")
    check = run_cli("check", "--org", "acme")
    assert check.code == 1 and f"workspace generation {workspace} is gone, and 5 folders" in check.out, check.out
    assert run_cli("sync").code == 0
    assert run_cli("check").code == 0 and run_cli("verify", "--org", "acme").code == 0


def test_the_workspace_keeps_a_generation_an_orgs_generation_builds_on(
    repo: Repo, run_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOOTSTRAP_GENERATIONS_KEPT", "1")
    repo.write("bsf-beta==1.0")
    write_org(repo, "acme", "jaraco.context")
    run_cli("sync")
    first = repo.manifest()["generation"]
    served = org_manifest(repo, "acme")["generation"]
    # The workspace moves on twice while the org cannot follow (its file names a package there is not).
    write_org(repo, "acme", "jaraco.context", "bsf-nowhere")
    for workspace in (["bsf-beta==1.0", "bsf-gamma"], ["bsf-beta==1.0", "jaraco.functools"]):
        repo.write(*workspace)
        assert run_cli("sync").code == 1
    assert org_manifest(repo, "acme")["generation"] == served  # its last good generation keeps serving...
    assert (repo.packages_dir / "generations" / first).is_dir()  # ...on the workspace generation it links into
    assert python_in(org_site(repo, "acme"), "import bsf_beta, jaraco.context").returncode == 0
    assert run_cli("verify", "--org", "acme").code == 0
    # Once the org builds on the new workspace generation, the old one goes with the workspace's next gc.
    write_org(repo, "acme", "jaraco.context")
    assert run_cli("sync").code == 0
    repo.write("bsf-beta==1.0", "bsf-gamma", "jaraco.functools")
    assert run_cli("sync").code == 0
    assert not (repo.packages_dir / "generations" / first).exists()
    assert run_cli("check").code == 0


def test_where_folder_links_are_refused_the_files_are_linked(
    repo: Repo, run_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An SMB share without Unix extensions refuses symbolic links: the org's generation is made as before."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "symlink", refuse)
    repo.write("bsf-beta==1.0")
    write_org(repo, "acme", "bsf-gamma")
    assert run_cli("sync").code == 0
    site = org_site(repo, "acme")
    assert not any(entry.is_symlink() for entry in site.iterdir())
    assert not (site.parent / "builds-on").exists()
    workspace_site = Path(repo.manifest()["site_dir"])
    assert (site / "bsf_beta/__init__.py").stat().st_ino == (workspace_site / "bsf_beta/__init__.py").stat().st_ino
    assert run_cli("verify", "--org", "acme").code == 0


@pytest.mark.pip_only  # the speculative install is the pip backend's
def test_an_orgs_first_set_is_installed_while_it_resolves(repo: Repo, run_cli: Any) -> None:
    """Its own lines (and their dependencies, which --target installs again) beside pip-compile; what the
    workspace has is taken out again and linked, so the install is kept."""
    repo.write("bsf-alpha==1.0", "jaraco.context")
    write_org(repo, "acme", "bsf-beta", "jaraco.functools")  # bsf-beta needs bsf-alpha: the workspace's
    result = run_cli("sync")  # the CLI's log lines: on stderr
    assert result.code == 0, result.err
    assert "org acme: installing while resolving" in result.err
    assert "org acme: the install made while resolving matches the lock: kept" in result.err
    assert "org acme: installing 1" not in result.err and "org acme: installing 2" not in result.err
    assert versions(org_manifest(repo, "acme")) == {
        "bsf-alpha": "1.0",
        "bsf-beta": "1.0",
        "jaraco.context": "1.0",
        "jaraco.functools": "2.0",
    }
    site = org_site(repo, "acme")
    assert (site / "bsf_alpha").is_symlink() and not (site / "bsf_beta").is_symlink()
    assert sorted(p.name for p in site.parent.iterdir()) == ["builds-on", "generation.json", "lock.txt", "site"]
    assert run_cli("verify", "--org", "acme").code == 0
    # An edit resolves around its own lock: no guess beside it.
    write_org(repo, "acme", "bsf-beta", "jaraco.functools", "bsf-gamma")
    result = run_cli("sync", "--org", "acme")
    assert result.code == 0
    assert "installing while resolving" not in result.err and "installing 1 distribution" in result.err


@pytest.mark.pip_only
def test_an_orgs_install_while_resolving_that_holds_more_is_not_kept(
    repo: Repo, run_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bootstrap.pipeline import build

    real = build.build_speculatively

    def one_too_many(*args: Any, **kwargs: Any) -> Path:
        staging = real(*args, **kwargs)
        if kwargs.get("folder") != build.NEW_SITE_DIR:  # the workspace's
            return staging
        planted = staging / build.NEW_SITE_DIR / "bsf_planted-1.0.dist-info"
        planted.mkdir()
        (planted / "METADATA").write_text("Metadata-Version: 2.1\nName: bsf-planted\nVersion: 1.0\n")
        (planted / "RECORD").write_text("bsf_planted-1.0.dist-info/METADATA,,\n")
        return staging

    monkeypatch.setattr(build, "build_speculatively", one_too_many)
    repo.write("bsf-alpha==1.0")
    write_org(repo, "acme", "bsf-gamma")
    result = run_cli("sync")
    assert result.code == 0, result.err
    assert "org acme: not keeping the install made while resolving" in result.err
    assert "org acme: installing 1 distribution into a new generation" in result.err
    assert versions(org_manifest(repo, "acme")) == {"bsf-alpha": "1.0", "bsf-gamma": "1.0"}
    assert not list(org_site(repo, "acme").glob("bsf_planted*"))


def test_advice_about_an_orgs_set_names_the_org(repo: Repo, run_cli: Any) -> None:
    """Messages are written once; an organisation's says `lock --org acme`, the command that acts on its set."""
    repo.write("bsf-gamma")
    write_org(repo, "acme", "bsf-alpha==1.0")
    (repo.root / "orgs" / "acme" / "requirements.lock").write_text("bsf-alpha==1.0\n")  # not written by lock
    result = run_cli("sync")
    assert result.code == 0
    stale = next(line for line in result.err.splitlines() if "committed lock" in line)
    assert stale.startswith("bootstrap: org acme: the committed lock"), stale
    assert "run `python -m bootstrap lock --org acme` and commit it" in stale, stale
    # An error line too (a lock that is not text), the organisation's own sync included.
    (repo.root / "orgs" / "acme" / "requirements.lock").write_bytes(b"bsf-alpha==1.0 \x80\x81\n")
    for argv in (["sync"], ["sync", "--org", "acme"]):
        failed = run_cli(*argv)
        assert failed.code == 1
        line = next(line for line in failed.err.splitlines() if line.startswith("bootstrap: error:"))
        assert "`python -m bootstrap lock --org acme`" in line, line


@pytest.mark.usefixtures("clean_process")  # an in-process execution's finder and claims stay with this process
def test_an_org_is_not_run_when_the_workspace_generation_it_links_into_is_open_to_everyone(
    repo: Repo, run_cli: Any
) -> None:
    import bootstrap
    from bootstrap.errors import WorkflowError

    repo.write("bsf-beta==1.0")
    write_org(repo, "acme", "jaraco.context")
    assert run_cli("sync").code == 0
    (repo.root / "noop.py").write_text("def run(input_data):\n    return {}\n")
    assert (org_site(repo, "acme") / "bsf_beta").is_symlink()
    settings = repo.settings()
    assert bootstrap.execute("noop", {}, org="acme", settings=settings)["result"] == {}
    generation = repo.packages_dir / "generations" / repo.manifest()["generation"]
    os.chmod(generation, 0o777)
    try:
        with pytest.raises(WorkflowError) as refused:
            bootstrap.execute("noop", {}, org="acme", settings=settings)
        assert refused.value.reason == "org" and f"{generation} is writable by every local user" in str(refused.value)
    finally:
        os.chmod(generation, 0o755)
