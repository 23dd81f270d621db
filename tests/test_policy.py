"""What a committed file may do, and the settings that let an operator allow more."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bootstrap.errors import BootstrapError, RequirementsError
from bootstrap.pipeline.sync import sync
from tests.conftest import BACKEND, Repo
from tests.wheels import Dist, build_wheel, module


@pytest.mark.parametrize(
    ("line", "setting"),
    [
        ("--extra-index-url https://example.invalid/simple", "BOOTSTRAP_ALLOW_INDEX_OPTIONS"),
        ("--find-links /tmp", "BOOTSTRAP_ALLOW_INDEX_OPTIONS"),
        ("bsf-alpha @ https://example.invalid/bsf_alpha-1.0-py3-none-any.whl", "BOOTSTRAP_ALLOW_DIRECT_REFERENCES"),
        ("-r ../outside.txt", "BOOTSTRAP_ALLOW_OUTSIDE_INCLUDES"),
    ],
)
def test_each_refusal_names_the_setting_that_would_allow_it(repo: Repo, line: str, setting: str) -> None:
    (repo.root.parent / "outside.txt").write_text("bsf-gamma\n")
    repo.write("bsf-alpha", line)
    with pytest.raises(RequirementsError) as failure:
        sync(repo.settings())
    assert str(failure.value).startswith(f"{repo.requirements}:2: ") and setting in str(failure.value)
    assert repo.manifest()["site_dir"] is None


def test_allowed_index_options_reach_pip_compile_and_pip(
    repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extra = tmp_path / "team-wheels"
    extra.mkdir()
    build_wheel(Dist("bsf-team-only", "1.0", module("bsf_team_only", "1.0")), extra)
    monkeypatch.setenv("BOOTSTRAP_ALLOW_INDEX_OPTIONS", "true")
    repo.write(f"--find-links {extra}", "bsf-team-only", "bsf-alpha==1.0")
    sync(repo.settings())
    assert repo.installed() == {"bsf-team-only": "1.0", "bsf-alpha": "1.0"}
    # the install from the lock needs the option too: drop the generation, keep the cached lock
    import shutil

    shutil.rmtree(Path(repo.manifest()["site_dir"]).parent)
    sync(repo.settings())
    assert repo.manifest()["lock_source"] == "cache" and repo.installed()["bsf-team-only"] == "1.0"


def test_allowed_direct_references_install_and_a_lock_cannot_add_urls(
    repo: Repo, wheelhouse: Path, run_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOOTSTRAP_ALLOW_DIRECT_REFERENCES", "true")
    url = (wheelhouse / "bsf_gamma-1.0-py3-none-any.whl").as_uri()
    repo.write(f"bsf-gamma @ {url}", "bsf-alpha==1.0")
    sync(repo.settings())
    assert repo.installed() == {"bsf-gamma": "1.0", "bsf-alpha": "1.0"}

    assert run_cli("lock").code == 0
    lock = repo.root / "requirements.lock"
    alpha_url = (wheelhouse / "bsf_alpha-2.0-py3-none-any.whl").as_uri()
    lock.write_text(lock.read_text().replace("bsf-alpha==1.0", f"bsf-alpha @ {alpha_url}"))
    result = run_cli("sync", "-q")
    assert result.code == 1 and "pinned to a URL that the requirements file does not name" in result.err


def test_only_wheels_by_default_and_the_message_names_the_setting(repo: Repo, wheelhouse: Path) -> None:
    import tarfile

    sdist = wheelhouse.parent / "sdists"
    sdist.mkdir(exist_ok=True)
    archive = sdist / "bsf_sdist_only-1.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        source = wheelhouse.parent / "bsf_sdist_only-1.0"
        source.mkdir(exist_ok=True)
        (source / "setup.py").write_text("raise SystemExit('build code ran')\n")
        tar.add(source, arcname="bsf_sdist_only-1.0")
    import os

    os.environ["PIP_FIND_LINKS"] = f"{wheelhouse} {sdist}"  # restored by the autouse fixture
    repo.write("bsf-sdist-only")
    with pytest.raises(BootstrapError) as failure:
        sync(repo.settings())
    assert "bsf-sdist-only" in str(failure.value) and "BOOTSTRAP_ALLOW_SOURCE_BUILDS" in str(failure.value)
    said = str(failure.value)
    assert ("only as source archives" in said) if BACKEND == "pip" else ("publishes only a source archive" in said)
    assert "no versions at all" not in str(failure.value)


def test_a_pinned_version_without_a_wheel_says_so_beside_versions_that_have_one(repo: Repo, wheelhouse: Path) -> None:
    """bsf-alpha has wheels for 1.0 and 2.0; 0.5 is a source archive only (djhtml==1.4.13 and markupsafe 2.0.0
    on Python 3.11, seen in real files): not "no such version, check the version"."""
    import os
    import tarfile

    sdist = wheelhouse.parent / "sdists-alpha"
    sdist.mkdir(exist_ok=True)
    source = wheelhouse.parent / "bsf_alpha-0.5"
    source.mkdir(exist_ok=True)
    (source / "setup.py").write_text("raise SystemExit('build code ran')\n")
    with tarfile.open(sdist / "bsf_alpha-0.5.tar.gz", "w:gz") as tar:
        tar.add(source, arcname="bsf_alpha-0.5")
    os.environ["PIP_FIND_LINKS"] = f"{wheelhouse} {sdist}"  # restored by the autouse fixture
    repo.write("bsf-alpha==0.5")
    with pytest.raises(BootstrapError) as failure:
        sync(repo.settings())
    said = str(failure.value)
    assert "requirements.txt:1:" in said and "BOOTSTRAP_ALLOW_SOURCE_BUILDS" in said, said
    if BACKEND == "pip":
        assert "bsf-alpha==0.5 has no wheel for this interpreter" in said and "(1.0, 2.0)" in said, said


def test_required_hashes(repo: Repo, run_cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    repo.write("bsf-beta==1.0")
    assert run_cli("lock").code == 0  # a lock without hashes
    monkeypatch.setenv("BOOTSTRAP_REQUIRE_HASHES", "true")
    refused = run_cli("sync", "-q")
    assert refused.code == 1 and "lock --hashes" in refused.err
    (repo.root / "requirements.lock").unlink()
    assert run_cli("sync", "-q").code == 0
    installed_lock = (Path(repo.manifest()["site_dir"]).parent / "lock.txt").read_text()
    assert installed_lock.count("--hash=sha256:") == 2


@pytest.mark.parametrize(
    "line",
    [
        '--only-binary="bsf-nothing --find-links=/tmp"',  # one shell token, two options for pip
        "--only-binary=:none:",  # would undo the wheels-only default
        '--only-binary="x --index-url=https://example.invalid/simple"',
    ],
)
def test_only_binary_cannot_smuggle_options_or_allow_builds(repo: Repo, line: str) -> None:
    repo.write(line, "bsf-alpha")
    with pytest.raises(RequirementsError) as failure:
        sync(repo.settings())
    assert str(failure.value).startswith(f"{repo.requirements}:1: --only-binary")


def test_a_requirements_file_linked_outside_its_folder_is_refused(repo: Repo, tmp_path: Path) -> None:
    secret = tmp_path / "secret.env"
    secret.write_text("AZURE_STORAGE_KEY=s3cr3tv4lue\n")
    repo.requirements.symlink_to(secret)
    with pytest.raises(RequirementsError) as failure:
        sync(repo.settings())
    assert "outside its folder" in str(failure.value) and "s3cr3tv4lue" not in str(failure.value)
    assert "s3cr3tv4lue" not in repo.manifest_path.read_text()


def test_a_lock_hash_cannot_carry_an_option(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-alpha")
    assert run_cli("lock", "--hashes").code == 0
    lock = repo.root / "requirements.lock"
    lock.write_text(
        lock.read_text().replace("--hash=sha256:", "--hash=sha256:00 --config-settings=k=v --hash=sha256:", 1)
    )
    result = run_cli("sync", "-q")
    assert result.code == 1 and "is not a hash" in result.err
