"""Review of #16 (organisations' sets): what an operator would hit, each proved by a test."""

from __future__ import annotations

from typing import Any

import pytest

from bootstrap.inputs import orgs
from bootstrap.pipeline.sync import sync
from tests.conftest import Repo
from tests.test_orgs import org_manifest, versions, write_org


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
