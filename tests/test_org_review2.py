"""Second review of #16 (layered organisation generations, the speculative first set, in-process bytecode):
each bug proved by a test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Repo, python_in
from tests.test_orgs import org_site, write_org
from tests.wheels import Dist, build_wheel, module


def extra_wheels(monkeypatch: pytest.MonkeyPatch, folder: Path, *dists: Dist) -> None:
    """These wheels too, beside the fixture wheelhouse (pip takes several find-links)."""
    folder.mkdir(parents=True, exist_ok=True)
    for dist in dists:
        build_wheel(dist, folder)
    monkeypatch.setenv("PIP_FIND_LINKS", f"{os.environ['PIP_FIND_LINKS']} {folder}")


def test_an_orgs_import_that_writes_into_a_linked_workspace_folder_is_refused(
    repo: Repo, run_cli: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The import check stamps every file of the new generation; a folder linked to the workspace's generation
    # was not walked, so a file an org's import made in it (in the workspace's generation, for every set that
    # links it) went unseen, where a hard-linked folder of its own showed it as created.
    body = "import os, bsf_alpha\nopen(os.path.join(os.path.dirname(bsf_alpha.__file__), 'planted.txt'), 'w').close()\n"
    writer = Dist("bsf-writer", "1.0", module("bsf_writer", "1.0", body), requires=("bsf-alpha",))
    extra_wheels(monkeypatch, tmp_path / "more-wheels", writer)
    repo.write("bsf-beta==1.0")
    assert run_cli("sync").code == 0
    workspace_site = Path(repo.manifest()["site_dir"])
    write_org(repo, "acme", "bsf-writer")
    result = run_cli("sync", "--org", "acme")
    assert result.code == 1, result.out
    assert "bsf_alpha/planted.txt" in result.out + result.err and "was created" in result.out + result.err
    assert not (workspace_site / "bsf_alpha" / "planted.txt").exists()
    assert run_cli("verify").code == 0


def test_small_sets_compiled_in_a_host_run_with_o_get_the_plain_bytecode(repo: Repo, tmp_path: Path) -> None:
    # In-process compiling took the host's optimisation level: under `python -O` it wrote only
    # `<stem>.<tag>.opt-1.pyc`, which no plain interpreter (nor the workers it used before) reads or writes.
    repo.write("bsf-gamma")
    done = subprocess.run(
        [sys.executable, "-O", "-m", "bootstrap", "sync"], capture_output=True, text=True, check=False, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    cache = Path(repo.manifest()["site_dir"]) / "__pycache__"
    assert sorted(p.name for p in cache.iterdir()) == [f"bsf_gamma.{sys.implementation.cache_tag}.pyc"]


@pytest.mark.parametrize("stale_reads", [1, 2])  # 2: written between gc's last look and its rename
def test_the_workspaces_gc_keeps_a_generation_an_org_linked_after_gc_looked(
    repo: Repo, run_cli: Any, monkeypatch: pytest.MonkeyPatch, stale_reads: int
) -> None:
    # gc read every org generation's builds-on once, then removed generation after generation (each a rename and
    # an rmtree: seconds on a share). An org build that wrote builds-on after that read, and linked, verified and
    # published meanwhile, lost the workspace generation under its links.
    from bootstrap.pipeline import sync as sync_module
    from bootstrap.store import layers

    monkeypatch.setenv("BOOTSTRAP_GENERATIONS_KEPT", "1")
    repo.write("bsf-beta==1.0")
    write_org(repo, "acme", "jaraco.context")
    assert run_cli("sync").code == 0
    first = repo.manifest()["generation"]
    real = layers.generations_built_on
    calls: list[int] = []

    def read_before_the_org_wrote(packages_dir: Path) -> frozenset[str]:
        calls.append(1)
        return frozenset() if len(calls) <= stale_reads else real(packages_dir)  # as it was before acme's

    monkeypatch.setattr(layers, "generations_built_on", read_before_the_org_wrote)
    repo.write("bsf-beta==1.0", "bsf-gamma")
    sync_module.sync(repo.settings())  # the workspace's alone: acme still serves its generation built on `first`
    assert repo.manifest()["generation"] != first
    assert (repo.packages_dir / "generations" / first).is_dir()
    assert python_in(org_site(repo, "acme"), "import bsf_beta, jaraco.context").returncode == 0
