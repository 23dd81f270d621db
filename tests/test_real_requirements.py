"""Requirements files taken from public projects, synced from the public index as their users would.

Each folder of ``tests/real_requirements`` holds one file as committed upstream (``SOURCE.txt`` names
the repository, path and commit), with the files it includes. Every one of these pip installs from
wheels alone on Python 3.11; bootstrap must lock, sync, check and verify it with default settings.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Repo

CORPUS = Path(__file__).resolve().parent / "real_requirements"
SYNCS = ["django-webapp", "az-webcrawler", "flask-webapp", "gcf-http", "celery-ci-base", "gha-pypi-publish-c"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bootstrap", *args], capture_output=True, text=True, env=dict(os.environ)
    )


@pytest.fixture
def public_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIP_NO_INDEX")
    monkeypatch.delenv("PIP_FIND_LINKS")


def copy_into(repo: Repo, name: str) -> None:
    shutil.copytree(CORPUS / name, repo.root, dirs_exist_ok=True)
    (repo.root / "SOURCE.txt").unlink()


@pytest.mark.network
@pytest.mark.slow
@pytest.mark.parametrize("name", SYNCS)
def test_a_real_file_syncs_checks_and_verifies(repo: Repo, public_index: None, name: str) -> None:
    copy_into(repo, name)
    synced = run("sync", "-q")
    assert synced.returncode == 0, synced.stderr
    assert run("check").returncode == 0
    verified = run("verify")
    assert verified.returncode == 0, verified.stdout
    assert repo.manifest()["status"] == "ok" and repo.installed()


@pytest.mark.network
def test_a_real_file_refused_by_host_protection_names_its_line_and_the_setting(repo: Repo, public_index: None) -> None:
    """Cloud Functions' helloworld needs watchdog<2 through functions-framework; the test host has watchdog 7
    (bootstrap's own dependency). Refused today, at the line that asks, naming the setting; once bootstrap's
    own tools no longer count as the host's (#12), this file must sync instead."""
    copy_into(repo, "gcf-helloworld")
    result = run("sync", "-q")
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "requirements.txt:1: the requirements need a version of watchdog other than the host's" in result.stderr
    assert "BOOTSTRAP_HOST_OVERRIDES=watchdog" in result.stderr
