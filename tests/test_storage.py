"""The packages folder misbehaves: a full disk. One clear line, nothing lost."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootstrap.errors import BootstrapError
from bootstrap.pipeline.sync import sync
from tests.conftest import Repo, python_in


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A real 3 MB filesystem (tmpfs), so the disk really fills up."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount_point)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_disk_is_one_clear_error_and_the_last_good_set_serves(
    repo: Repo, tiny_filesystem: Path, monkeypatch: pytest.MonkeyPatch, run_cli: object
) -> None:
    packages = tiny_filesystem / "packages"
    monkeypatch.setenv("BOOTSTRAP_PACKAGES_DIR", str(packages))
    repo.write("bsf-alpha==1.0")
    sync(repo.settings())
    before = (packages / "manifest.json").read_text()

    repo.write("bsf-alpha==1.0", "bsf-huge")
    with pytest.raises(BootstrapError) as failure:
        sync(repo.settings())
    message = str(failure.value)
    assert "disk is full" in message or "No space left" in message, message
    assert "\n" not in message

    staging = packages / "staging"  # the failed build is gone, so the disk has room again
    assert not staging.exists() or not any(staging.iterdir()), "the failed build's staging was not removed"
    import json

    now = json.loads((packages / "manifest.json").read_text())
    assert now["generation"] == json.loads(before)["generation"]
    assert now["status"] == "failed" and now["error"]["stage"] in ("install", "storage")
    proc = python_in(now["site_dir"], "import bsf_alpha; print(bsf_alpha.__version__)")
    assert proc.stdout.strip() == "1.0", proc.stderr

    result = run_cli("sync", "-q")  # type: ignore[operator]
    assert result.code == 1
    assert result.err.splitlines() == [
        "bootstrap: error: the disk is full: free space in the packages folder's filesystem and sync again"
    ]


def test_an_os_error_of_bootstraps_own_writes_is_a_storage_error(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    from bootstrap.pipeline import publish

    repo.write("bsf-alpha==1.0")
    sync(repo.settings())
    repo.write("bsf-alpha==2.0")

    def full_disk(*args: object, **kwargs: object) -> Path:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(repo.packages_dir / "staging" / "x"))

    monkeypatch.setattr(publish, "publish", full_disk)
    with pytest.raises(BootstrapError) as failure:
        sync(repo.settings())
    assert failure.value.stage == "storage"
    assert "No space left on device" in str(failure.value) and "free space" in str(failure.value)
    assert not any((repo.packages_dir / "staging").iterdir())
    assert repo.manifest()["status"] == "failed" and repo.installed() == {"bsf-alpha": "1.0"}
