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
ROOT = CORPUS.parent.parent
SYNCS = [
    "django-webapp",
    "az-webcrawler",
    "flask-webapp",
    "gcf-http",
    "celery-ci-base",
    "gha-pypi-publish-c",
    "sigstore-install",  # hashes; pins pydantic 2.13 and its stack, which bootstrap itself needs too
    "cibuildwheel-py311",  # uv pip compile output pinning pip and setuptools (seeded by venv, not the host's)
    "gcp-run-streamlit",
    "gcp-run-idp-sql",
    "tiangolo-fastapi-docker",
    "warehouse-docs-user",  # --generate-hashes, written on Python 3.14
    "azure-search-openai-backend",  # 90 pins, click and packaging among them
]
_HOST: dict[str, Path] = {}


@pytest.fixture
def public_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIP_NO_INDEX")
    monkeypatch.delenv("PIP_FIND_LINKS")


@pytest.fixture
def platform_host(public_index: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpreter of a host as a platform has it: bootstrap and its dependencies only, installed from the
    public index the way the README says (once per session). This test environment is no such host: its
    pytest, mypy and pypiserver are a host application of their own, whose pins (pygments, say) users
    could not take away."""
    if "python" not in _HOST:
        venv = tmp_path_factory.mktemp("platform-host") / "venv"
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        python = venv / "bin" / "python"
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", str(ROOT)], check=True, capture_output=True, text=True
        )
        _HOST["python"] = python
    return _HOST["python"]


def run(python: Path, repo: Repo, *args: str) -> subprocess.CompletedProcess[str]:
    # In the repo folder: never this source tree, which `-m` would put first on the path.
    return subprocess.run(
        [str(python), "-m", "bootstrap", *args], capture_output=True, text=True, env=dict(os.environ), cwd=repo.root
    )


def copy_into(repo: Repo, name: str) -> None:
    shutil.copytree(CORPUS / name, repo.root, dirs_exist_ok=True)
    (repo.root / "SOURCE.txt").unlink()


@pytest.mark.network
@pytest.mark.slow
@pytest.mark.parametrize("name", SYNCS)
def test_a_real_file_syncs_checks_and_verifies(repo: Repo, platform_host: Path, name: str) -> None:
    copy_into(repo, name)
    synced = run(platform_host, repo, "sync", "-q")
    assert synced.returncode == 0, synced.stderr
    assert run(platform_host, repo, "check").returncode == 0
    verified = run(platform_host, repo, "verify")
    assert verified.returncode == 0, verified.stdout
    assert repo.manifest()["status"] == "ok" and repo.installed()


@pytest.mark.network
def test_a_real_file_that_pip_installs_broken_is_refused_by_the_import_check(repo: Repo, platform_host: Path) -> None:
    """Cloud Functions' helloworld pins flask 2.0.1 and leaves werkzeug open: pip installs werkzeug 3, and
    `import flask` fails after pip's install too. Its watchdog<2 (functions-framework) no longer stops it:
    bootstrap's own watchdog is no host package. The import check is what refuses it, naming the setting."""
    copy_into(repo, "gcf-helloworld")
    result = run(platform_host, repo, "sync", "-q")
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "Flask 2.0.1: import flask failed (ImportError: cannot import name 'url_quote'" in result.stderr
    assert "BOOTSTRAP_SKIP_IMPORT_CHECK=flask,functions-framework" in result.stderr
    assert "host" not in result.stderr


@pytest.mark.network
def test_a_real_file_pinning_a_version_without_a_wheel_names_its_line_and_the_setting(
    repo: Repo, platform_host: Path
) -> None:
    """wagtail's bakerydemo pins djhtml 1.4.13, published only as a source archive (later versions have
    wheels); pip's wheels-only install fails on it too. Its `-r base.txt` pins Django 4.2, while pip's
    resolution also skips Django 6 for Python 3.12: not this line's reason."""
    copy_into(repo, "bakerydemo-dev")
    result = run(platform_host, repo, "sync", "-q")
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "requirements.txt:5: djhtml==1.4.13 has no wheel for this interpreter" in result.stderr
    assert "BOOTSTRAP_ALLOW_SOURCE_BUILDS=true" in result.stderr and "need Python" not in result.stderr


@pytest.mark.network
@pytest.mark.slow
def test_a_real_file_pinning_bootstraps_own_tools_is_served_their_versions(
    repo: Repo, platform_host: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cloud Functions' helloworld needs watchdog<2 (bootstrap has watchdog 7): the workflow imports the user's.
    (Its flask does not import with the werkzeug pip picks: the operator skips that check.)"""
    copy_into(repo, "gcf-helloworld")
    monkeypatch.setenv("BOOTSTRAP_SKIP_IMPORT_CHECK", "flask,functions-framework")
    synced = run(platform_host, repo, "sync", "-q")
    assert synced.returncode == 0, synced.stderr
    m = repo.manifest()
    watchdog = [p for p in m["packages"] if p["name"] == "watchdog"]
    assert watchdog and watchdog[0]["version"].startswith("1.") and watchdog[0]["provided_by"] == "generation"
    assert "watchdog" in m["overrides"]
    code = "import bootstrap; bootstrap.startup(); import watchdog.version as v; print(v.VERSION_STRING)"
    proc = subprocess.run([str(platform_host), "-c", code], capture_output=True, text=True, cwd=repo.root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == watchdog[0]["version"]
