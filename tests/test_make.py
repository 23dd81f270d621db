"""A newcomer's first hour: the README's `make` targets exist, the main job's environment holds no dev
toolchain, the plain commands can use the clone's default, and the project builds a wheel without warnings."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def make(*args: str, venv: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), f"VENV={venv}", *args],
        capture_output=True,
        text=True,
        check=False,
        env=env or dict(os.environ),
        timeout=60,
    )


def fresh_venv(tmp_path: Path, *stamps: str) -> Path:
    """A stand-in for .venv whose stamps are newer than pyproject.toml (so make installs nothing)."""
    venv = tmp_path / "venv"
    venv.mkdir()
    for stamp in stamps:
        (venv / stamp).touch()
    return venv


def test_every_make_target_the_readme_names_exists(tmp_path: Path) -> None:
    targets = set(re.findall(r"`make ([a-z][a-z-]*)", README.read_text()))
    assert {"sync-packages", "test", "verify", "watch", "rollback", "add", "remove", "check", "status"} <= targets
    venv = fresh_venv(tmp_path)
    for target in sorted(targets):
        dry = make("-n", target, "PKG=tabulate", venv=venv)
        assert dry.returncode == 0, f"make {target}: {dry.stderr}"
    assert (
        f"{venv}/bin/python -m bootstrap add 'tabulate>=0.9'"
        in make("-n", "add", "PKG=tabulate>=0.9", venv=venv).stdout
    )
    assert "rollback --to 'G1'" in make("-n", "rollback", "TO=G1", venv=venv).stdout


def test_add_and_remove_without_pkg_say_how(tmp_path: Path) -> None:
    venv = fresh_venv(tmp_path, ".installed-runtime")
    for target in ("add", "remove"):
        result = make("-s", target, venv=venv)
        assert result.returncode != 0 and f"usage: make {target} PKG=name" in result.stderr, result.stderr


def test_the_main_job_installs_no_dev_toolchain_and_make_test_adds_it(tmp_path: Path) -> None:
    venv = tmp_path / "new-venv"
    sync = make("-n", "sync-packages", venv=venv).stdout
    assert f"{venv}/bin/python -m pip install --quiet -e .\n" in sync and ".[dev]" not in sync, sync
    for target in ("test", "lint"):
        dev = make("-n", target, venv=venv).stdout
        assert "-e '.[dev]'" in dev, dev
    for target in ("check", "status", "verify", "rollback"):
        assert ".[dev]" not in make("-n", target, venv=venv).stdout


@pytest.mark.skipif(Path("/home/repo").exists(), reason="on the platform the settings point at /home/repo")
def test_make_env_gives_the_plain_commands_the_clones_default(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("BOOTSTRAP_")}
    lines = make("-s", "env", venv=fresh_venv(tmp_path), env=env).stdout.splitlines()
    assert lines == [
        f"export BOOTSTRAP_REQUIREMENTS_FILE='{ROOT / 'repo_template' / 'requirements.txt'}'",
        f"export BOOTSTRAP_PACKAGES_DIR='{ROOT / '.packages'}'",
    ]


def test_the_license_is_an_spdx_expression_setuptools_builds_without_a_warning() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "MIT"  # `{text = ...}` is deprecated: a warning at every build
    [setuptools] = [req for req in project["build-system"]["requires"] if req.startswith("setuptools")]
    assert setuptools == "setuptools>=77"  # the first to read `license = "MIT"` (PEP 639)
