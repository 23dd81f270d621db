"""The packages folder itself: system locations and world-writable folders are refused, created folders are private."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bootstrap.errors import SettingsError
from bootstrap.store.safety import check_packages_dir, child_umask, make_private_dir
from tests.conftest import Repo


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def refused(path: str | Path) -> str:
    with pytest.raises(SettingsError) as info:
        check_packages_dir(Path(path))
    message = str(info.value)
    assert "\n" not in message
    assert "BOOTSTRAP_PACKAGES_DIR" in message
    return message


def test_ordinary_folders_are_accepted(tmp_path: Path) -> None:
    existing = tmp_path / "packages"
    existing.mkdir(mode=0o755)
    check_packages_dir(existing)
    check_packages_dir(tmp_path / "not-yet" / "packages")  # created later by make_private_dir
    # Ordinary folders below system folders: only the system folder itself is refused.
    for ordinary in ("/var/lib/app/packages", "/usr/src/app/.packages", "/home/.packages", "/opt/app/packages"):
        if not os.path.lexists(ordinary):
            check_packages_dir(Path(ordinary))
    assert not (tmp_path / "not-yet").exists()


def test_the_filesystem_root_is_refused() -> None:
    assert "filesystem root" in refused("/")


@pytest.mark.parametrize("folder", ["/usr", "/usr/local", "/etc", "/var", "/tmp", "/bin", "/proc"])
def test_system_folders_are_refused(folder: str) -> None:
    refused(folder)


def test_the_interpreter_prefix_is_refused() -> None:
    assert "prefix" in refused(sys.prefix)
    refused(sys.base_prefix)


def test_site_packages_and_anything_inside_it_are_refused() -> None:
    purelib = Path(sysconfig.get_paths()["purelib"])
    inside = purelib / "bootstrap-test-must-not-exist" / "packages"
    assert "site-packages" in refused(purelib)
    assert "inside the interpreter's site-packages folder" in refused(inside)  # not "the venv lib folder"
    assert not inside.parent.exists()  # the check created nothing there
    refused(Path(sysconfig.get_paths()["stdlib"]) / "packages")
    refused(Path(sysconfig.get_paths()["scripts"]) / "packages")


def test_a_world_writable_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "packages"
    folder.mkdir()
    folder.chmod(0o777)
    message = refused(folder)
    assert "world-writable" in message
    assert f"chmod o-w {folder}" in message
    folder.chmod(0o1777)  # the sticky bit does not make it safe: others can still add files
    assert "world-writable" in refused(folder)
    check_packages_dir(folder, allow_world_writable=True)  # a filesystem whose modes mean nothing
    assert mode(folder) == 0o1777  # only checked, never changed


def test_a_link_is_judged_by_where_it_leads(tmp_path: Path) -> None:
    open_folder = tmp_path / "open"
    open_folder.mkdir()
    open_folder.chmod(0o777)
    link = tmp_path / "packages"
    link.symlink_to(open_folder)
    message = refused(link)
    assert "world-writable" in message
    assert str(open_folder) in message
    open_folder.chmod(0o755)
    check_packages_dir(link)
    root_link = tmp_path / "root"
    root_link.symlink_to("/")
    assert "filesystem root" in refused(root_link)


def test_a_file_instead_of_a_folder_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "packages"
    file.write_text("not a folder\n")
    assert "not a folder" in refused(file)


def test_make_private_dir_never_creates_world_writable_folders(tmp_path: Path, umask_000: None) -> None:
    target = tmp_path / "a" / "b" / "packages"
    make_private_dir(target)
    for folder in (tmp_path / "a", tmp_path / "a" / "b", target):
        assert folder.is_dir()
        assert not mode(folder) & stat.S_IWOTH, oct(mode(folder))
    check_packages_dir(target)
    make_private_dir(target)  # exist_ok by default
    with pytest.raises(FileExistsError):
        make_private_dir(target, exist_ok=False)


def test_make_private_dir_keeps_the_umask_for_owner_and_group(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        make_private_dir(tmp_path / "packages")
    finally:
        os.umask(old)
    assert mode(tmp_path / "packages") == 0o750


def test_make_private_dir_leaves_an_existing_folder_as_it_is(tmp_path: Path) -> None:
    folder = tmp_path / "packages"
    folder.mkdir()
    folder.chmod(0o775)
    make_private_dir(folder)
    make_private_dir(folder / "generations")
    assert mode(folder) == 0o775
    assert not mode(folder / "generations") & stat.S_IWOTH
    # An operator's world-writable parent is not touched either; what we create inside it is private.
    folder.chmod(0o777)
    make_private_dir(folder / "staging" / "x")
    assert mode(folder) == 0o777
    assert not mode(folder / "staging") & stat.S_IWOTH


def test_make_private_dir_refuses_a_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "packages").write_text("")
    with pytest.raises(FileExistsError):
        make_private_dir(tmp_path / "packages")
    with pytest.raises(NotADirectoryError):
        make_private_dir(tmp_path / "packages" / "generations")


def test_the_repo_fixture_packages_folder_passes(repo: Repo, umask_000: None) -> None:
    """As the lead wires it in sync._prepare_folder: check, then create."""
    check_packages_dir(repo.packages_dir)
    make_private_dir(repo.packages_dir)
    check_packages_dir(repo.packages_dir)
    assert not mode(repo.packages_dir) & stat.S_IWOTH


def test_child_umask_adds_no_world_write_to_ours(umask_000: None) -> None:
    assert child_umask() == 0o002
    os.umask(0o027)
    assert child_umask() == 0o027


def test_pip_under_child_umask_writes_no_world_writable_file(tmp_path: Path, wheelhouse: Path, umask_000: None) -> None:
    """A host started with umask 000: pip, given child_umask(), still leaves nothing world-writable."""
    wheel = sorted(wheelhouse.glob("*.whl"))[0]
    site_dir = tmp_path / "staging" / "site"
    make_private_dir(site_dir)
    argv = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site_dir), str(wheel)]
    subprocess.run(argv, check=True, capture_output=True, umask=child_umask())
    written = [site_dir, *site_dir.rglob("*")]
    assert len(written) > 3
    assert [p for p in written if mode(p) & stat.S_IWOTH] == []


# -- the manifest is a pointer anyone who can write the folder can edit: it must point at a generation of it


def _point_elsewhere(repo: Repo, tmp_path: Path, how: str) -> Path:
    """Rewrite the manifest to name a folder outside the packages folder; return that folder."""
    import json

    evil = tmp_path / "evil" / "site"
    evil.mkdir(parents=True)
    (evil / "zz_evil.pth").write_text("import sys; sys.stderr.write('EVIL RAN\\n')\n")
    (evil / "bsf_alpha").mkdir()
    (evil / "bsf_alpha" / "__init__.py").write_text("__version__ = 'evil'\n")
    m = repo.manifest()
    if how == "site":  # (the absolute `site_dir` is only what the writer saw: never served from, whatever it says)
        m["site"] = os.path.relpath(evil, repo.packages_dir)
    else:  # a generation id that climbs out, with the site_dir it implies
        m["generation"] = os.path.relpath(evil.parent, repo.packages_dir / "generations")
        m["site_dir"] = str(repo.packages_dir / "generations" / m["generation"] / "site")
    repo.manifest_path.write_text(json.dumps(m))
    return evil


@pytest.mark.parametrize("how", ["site", "generation"])
def test_a_manifest_pointing_outside_the_packages_folder_is_never_activated(
    repo: Repo, tmp_path: Path, how: str, run_cli: Any
) -> None:
    from bootstrap.pipeline.sync import sync
    from tests.conftest import python_with_bootstrap

    repo.write("bsf-alpha==1.0")
    sync(repo.settings())
    _point_elsewhere(repo, tmp_path, how)

    activated = python_with_bootstrap("import bootstrap, sys; print(bootstrap.activate())")
    assert activated.returncode == 0, activated.stderr
    assert activated.stdout.strip() == "None" and "EVIL RAN" not in activated.stderr
    assert "not activating" in activated.stderr and len(activated.stderr.splitlines()) == 1, activated.stderr

    checked = run_cli("check")
    assert (checked.code == 1 and "not generation" in checked.out) or "no well-formed generation" in checked.out

    # startup() syncs a generation of this folder again, and serves that one.
    served = python_with_bootstrap(
        "import bootstrap; bootstrap.startup(); import bsf_alpha; print(bsf_alpha.__version__)"
    )
    assert served.returncode == 0, served.stderr
    assert served.stdout.strip() == "1.0" and "EVIL RAN" not in served.stderr
    assert str(tmp_path / "evil") not in repo.manifest()["site_dir"] and run_cli("check").code == 0
