"""Review of #16 (organisations' sets): what an operator would hit, each proved by a test."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import pytest

import bootstrap
from bootstrap.errors import WorkflowError
from bootstrap.host import live
from bootstrap.host.activation import read_manifest
from bootstrap.host.watch import Watcher
from bootstrap.inputs import orgs
from bootstrap.pipeline.sync import sync
from tests.conftest import Repo
from tests.test_execute import WHICH
from tests.test_orgs import org_manifest, versions, write_org
from tests.test_watch import save_by_rename, wait_for


def test_an_org_built_while_the_workspace_moved_on_is_stale_not_up_to_date(
    repo: Repo, run_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An org's sync reads the workspace's pins; the workspace's sync (another process, the host's watcher)
    # publishes a new set before the org's sync records its inputs. The org must not then claim it serves the
    # new workspace set: it was built on the old pins.
    repo.write("bsf-alpha==1.0")
    write_org(repo, "acme", "jaraco.context")
    assert run_cli("sync").code == 0
    repo.write("bsf-alpha==2.0")
    write_org(repo, "acme", "jaraco.context", "bsf-gamma")  # both files change: both syncs have work
    layered = orgs.layered

    def workspace_publishes_meanwhile(settings: Any, policy: Any) -> Any:
        desired = layered(settings, policy)  # the old pins (bsf-alpha 1.0)
        monkeypatch.setattr(orgs, "layered", layered)
        assert sync(settings.workspace).changed  # the workspace publishes bsf-alpha 2.0 now
        return desired

    monkeypatch.setattr(orgs, "layered", workspace_publishes_meanwhile)
    assert run_cli("sync", "--org", "acme").code == 0
    assert repo.installed()["bsf-alpha"] == "2.0"
    assert versions(org_manifest(repo, "acme"))["bsf-alpha"] == "1.0"  # built on the old pins

    again = run_cli("sync", "--org", "acme")
    assert again.code == 0, again.err
    assert versions(org_manifest(repo, "acme"))["bsf-alpha"] == "2.0", again.out
    assert run_cli("sync", "--org", "acme").out.startswith("org acme: up to date")


def test_an_org_is_not_run_in_process_on_a_version_this_process_has_loaded_another_of(
    repo: Repo, run_cli: Any, clean_process: None
) -> None:
    # The host imported jaraco.functools 1.0; the workspace moved to 2.0 (switched to, restart pending). An org
    # built on the new workspace set has 2.0: in this process its workflow would get the loaded 1.0.
    repo.write("jaraco.functools==1.0")
    bootstrap.startup()
    (repo.root / "which.py").write_text(WHICH)
    importlib.import_module("jaraco.functools")
    repo.write("jaraco.functools==2.0")
    assert run_cli("sync").code == 0
    live.switch(read_manifest(str(repo.packages_dir)), str(repo.packages_dir))
    assert [item["name"] for item in bootstrap.restart_pending()] == ["jaraco.functools"]
    write_org(repo, "acme", "bsf-gamma==1.0")
    assert run_cli("sync", "--org", "acme").code == 0
    assert versions(org_manifest(repo, "acme"))["jaraco.functools"] == "2.0"

    execution = bootstrap.execute("which", {"modules": ["jaraco.functools"]}, org="acme", settings=repo.settings())

    assert execution["result"]["modules"] == {"jaraco.functools": ["2.0", "2.0"]}, execution
    assert execution["isolation"] == "process"


def test_a_runtime_addition_against_a_new_workspace_pin_says_how_to_remove_it_from_the_org(
    repo: Repo, run_cli: Any
) -> None:
    # The org added bsf-alpha 1.0 at run time; the workspace then pins bsf-alpha 2.0. The org's failure must say
    # how to take the org's addition out (`--org`), not `remove bsf-alpha` (the workspace's), nor to edit a
    # generation's lock.txt.
    repo.write("bsf-gamma")
    write_org(repo, "acme", "jaraco.context")
    assert run_cli("sync").code == 0
    assert run_cli("add", "--org", "acme", "bsf-alpha==1.0").code == 0
    repo.write("bsf-gamma", "bsf-alpha==2.0")

    result = run_cli("sync")

    assert result.code == 1
    [failure] = [line for line in result.err.splitlines() if line.startswith("bootstrap: error: org acme:")]
    assert "`python -m bootstrap remove --org acme bsf-alpha`" in failure, failure
    assert "lock.txt" not in failure and "the workspace's bsf-alpha==2.0" in failure
    assert run_cli("remove", "--org", "acme", "bsf-alpha").code == 0  # the advice works
    assert run_cli("sync").code == 0


ECHO = "def run(input_data):\n    return {'input': input_data}\n"


@pytest.mark.parametrize("input_data", [[], 0, "", False, None])
def test_a_worker_gives_run_the_input_as_it_was_given(
    repo: Repo, run_cli: Any, clean_process: None, input_data: Any
) -> None:
    # In-process, run() gets the input as given; in a worker it must get the same (not {} for a falsy one).
    repo.write("bsf-gamma")
    bootstrap.startup()
    (repo.root / "echo.py").write_text(ECHO)
    write_org(repo, "new", "bsf-alpha==2.0")
    write_org(repo, "old", "bsf-alpha==1.0")
    assert run_cli("sync").code == 0
    here = bootstrap.execute("echo", input_data, org="new", settings=repo.settings())  # takes bsf-alpha 2.0 here
    there = bootstrap.execute("echo", input_data, org="old", settings=repo.settings())
    assert (here["isolation"], there["isolation"]) == ("in-process", "process")
    assert here["result"] == there["result"] == {"input": input_data}


@pytest.mark.parametrize("polling", [False, True])
def test_watch_syncs_the_first_org_of_a_repo_that_had_none(repo: Repo, run_cli: Any, polling: bool) -> None:
    # A host watching a repo without an orgs/ folder; then the first organisation arrives (a pull, an edit).
    repo.write("bsf-gamma")
    assert run_cli("sync").code == 0
    with Watcher(repo.settings(watch_debounce=0.3, watch_polling=polling), initial_sync=False):
        write_org(repo, "acme", "jaraco.context")
        wait_for(lambda: (repo.packages_dir / "orgs" / "acme" / "manifest.json").is_file(), "org acme's set")
        assert versions(org_manifest(repo, "acme"))["jaraco.context"] == "1.0"
        save_by_rename(repo.root / "orgs" / "acme" / "requirements.txt", "jaraco.context", "bsf-beta==1.0")
        wait_for(lambda: "bsf-beta" in versions(org_manifest(repo, "acme")), "org acme's edit")


def test_an_org_whose_folder_others_can_write_is_not_executed(repo: Repo, run_cli: Any, clean_process: None) -> None:
    # `check --org` and a sync refuse an orgs/ folder every local user can write (anyone could swap an org's
    # generation); bootstrap.execute must not import from it either, in-process or in a worker.
    repo.write("bsf-gamma")
    bootstrap.startup()
    (repo.root / "echo.py").write_text(ECHO)
    write_org(repo, "acme", "jaraco.context")
    assert run_cli("sync").code == 0
    orgs_root = repo.packages_dir / "orgs"
    os.chmod(orgs_root, 0o777)
    try:
        with pytest.raises(WorkflowError, match="writable by every local user") as refused:
            bootstrap.execute("echo", {}, org="acme", settings=repo.settings())
        assert refused.value.reason == "org" and "\n" not in str(refused.value)
    finally:
        os.chmod(orgs_root, 0o700)
    assert bootstrap.execute("echo", {}, org="acme", settings=repo.settings())["result"] == {"input": {}}


@pytest.mark.parametrize("command", [["rollback"], ["remove", "bsf-gamma"], ["status"], ["verify"]])
def test_a_mistyped_org_is_refused_in_one_line_and_gets_no_folder(repo: Repo, run_cli: Any, command: list[str]) -> None:
    # A typo in `--org` must not make folders: the next sync would then announce that organisation as departed.
    repo.write("bsf-gamma")
    write_org(repo, "acme", "jaraco.context")
    assert run_cli("sync").code == 0

    result = run_cli(command[0], "--org", "acme-typo", *command[1:])

    assert result.code == 1
    assert (
        result.err.startswith("bootstrap: error: there is no organisation 'acme-typo'") and result.err.count("\n") == 1
    )
    assert not (repo.packages_dir / "orgs" / "acme-typo").exists()
    assert not (repo.state_dir / "orgs" / "acme-typo").exists()
    assert "acme-typo" not in run_cli("sync").err


def test_ensure_with_an_orgs_settings_adds_to_that_org(repo: Repo, run_cli: Any, clean_process: None) -> None:
    # bootstrap.execute takes an org's settings (settings.for_org(ID)) as that org; so must ensure: not add to the
    # workspace's set, nor put the org's generation on this process's sys.path.
    repo.write("bsf-gamma")
    write_org(repo, "acme", "jaraco.context")
    assert run_cli("sync").code == 0
    bootstrap.startup()

    entry = bootstrap.ensure("bsf-beta==1.0", settings=repo.settings().for_org("acme"))

    assert entry["name"] == "bsf-beta" and entry["version"] == "1.0"
    assert versions(org_manifest(repo, "acme"))["bsf-beta"] == "1.0"
    assert "bsf-beta" not in repo.installed()
    assert not [entry for entry in sys.path if os.sep + "orgs" + os.sep in entry]


def test_an_orgs_stale_committed_lock_says_to_lock_that_org(repo: Repo, run_cli: Any) -> None:
    # An org's committed lock holds the workspace's pins: a workspace change makes it stale. The advice must be
    # `lock --org ID` (`lock` rewrites the workspace's lock), and must not blame the org's file, which did not change.
    repo.write("bsf-gamma")
    write_org(repo, "acme", "jaraco.context")
    assert run_cli("sync").code == 0
    assert run_cli("lock", "--org", "acme").code == 0
    repo.write("bsf-gamma", "bsf-beta==1.0")

    result = run_cli("sync")

    assert result.code == 0, result.err
    [stale] = [line for line in result.err.splitlines() if "is stale" in line]
    assert stale.startswith("bootstrap: org acme: ") and "run `python -m bootstrap lock --org acme`" in stale
    assert "(requirements.txt or the workspace's pins changed since it was written)" in stale
