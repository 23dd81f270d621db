"""The host comes first: its own packages constrain resolution and are never installed again."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from bootstrap.errors import RequirementsError
from bootstrap.inputs.host import own_tools, scan
from bootstrap.pipeline.build import adopt
from bootstrap.pipeline.lockfile import Lock
from bootstrap.pipeline.sync import sync
from bootstrap.store.paths import HOST_PATH_VARIABLE
from tests.conftest import Repo, python_with_bootstrap
from tests.wheels import HOST_PACKAGING, USER_FILELOCK


def test_a_requirement_the_host_satisfies_is_not_installed_again(repo: Repo) -> None:
    repo.write("bsf-needs-host", "packaging")
    sync(repo.settings())
    m = repo.manifest()
    by_name = {p["name"]: p for p in m["packages"]}
    assert by_name["packaging"]["provided_by"] == "host" and by_name["packaging"]["version"] == HOST_PACKAGING
    assert by_name["packaging"]["requested"] is True
    assert by_name["bsf-needs-host"]["provided_by"] == "generation"
    site_dir = Path(m["site_dir"])
    assert not (site_dir / "packaging").exists() and not list(site_dir.glob("packaging-*.dist-info"))
    proc = python_with_bootstrap(
        "import bootstrap; bootstrap.startup(); import bsf_needs_host, packaging; print(packaging.__file__)"
    )
    assert proc.returncode == 0, proc.stderr
    assert str(repo.packages_dir) not in proc.stdout  # the host's own packaging


def test_a_pin_against_the_host_is_refused_before_anything_is_resolved(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-alpha", "packaging==20.9")
    with pytest.raises(RequirementsError) as failure:
        sync(repo.settings())
    message = str(failure.value)
    assert "requirements.txt:2:" in message and "packaging==20.9" in message
    assert f"host's packaging {HOST_PACKAGING}" in message and "BOOTSTRAP_HOST_OVERRIDES=packaging" in message
    assert repo.manifest()["site_dir"] is None  # nothing was installed


def test_an_operator_may_let_users_override_a_host_package(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOOTSTRAP_HOST_OVERRIDES", "packaging")
    repo.write("packaging==20.9")
    sync(repo.settings())
    m = repo.manifest()
    assert m["overrides"] == ["packaging"]
    assert {p["name"]: p["provided_by"] for p in m["packages"]} == {"packaging": "generation"}
    proc = python_with_bootstrap(
        "import bootstrap; bootstrap.startup(); import packaging; print(packaging.__version__)"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "20.9"  # the generation goes first on sys.path


def test_a_committed_lock_pinning_a_host_package_elsewhere_is_refused(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-needs-host")
    assert run_cli("lock").code == 0
    lock = repo.root / "requirements.lock"
    text = "".join(line for line in lock.read_text().splitlines(True) if not line.startswith("packaging=="))
    lock.write_text(text + "packaging==20.9\n")  # the host's pin edited (a second pin is refused as such)
    result = run_cli("sync", "-q")
    assert result.code == 1
    assert "pins packaging 20.9, but the host has packaging" in result.err


def staged_host_package(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A speculative install in staging holding the host's packaging 20.9 (which ``adopt`` takes out again)."""
    staging = tmp_path / "staging" / "g"
    site_dir = staging / "site"
    dist_info = site_dir / "packaging-20.9.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Name: packaging\nVersion: 20.9\n")
    return staging, site_dir, dist_info


def test_taking_a_host_package_out_of_an_install_never_leaves_the_site_folder(tmp_path: Path) -> None:
    staging, _, dist_info = staged_host_package(tmp_path)
    victim = tmp_path / "outside.txt"
    victim.write_text("keep me")
    (dist_info / "RECORD").write_text("packaging/../../../../outside.txt,,\n/etc/hostname,,\n")
    assert adopt(staging, Lock((), "", "resolved"), {"packaging": "20.9"})
    assert victim.read_text() == "keep me"
    assert not dist_info.exists()


def test_taking_a_host_package_out_removes_its_scripts_too(tmp_path: Path) -> None:
    """pip --target moves a script from ``bin/`` beside ``lib/python`` into the folder; RECORD keeps ``../../``.
    (watchdog's ``bin/watchmedo``, left behind, was a file no RECORD lists in every real set needing watchdog.)"""
    staging, site_dir, dist_info = staged_host_package(tmp_path)
    (site_dir / "bin").mkdir()
    (site_dir / "bin" / "pkgtool").write_text("#!python\n")
    (site_dir / "packaging").mkdir()
    (site_dir / "packaging" / "__init__.py").write_text("")
    (dist_info / "RECORD").write_text("packaging/__init__.py,,\n../../bin/pkgtool,,\n")
    assert adopt(staging, Lock((), "", "resolved"), {"packaging": "20.9"})
    assert not (site_dir / "bin").exists() and not (site_dir / "packaging").exists()


def test_taking_a_host_package_out_never_follows_a_link_out_of_the_site_folder(tmp_path: Path) -> None:
    staging, site_dir, dist_info = staged_host_package(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "victim.txt"
    victim.write_text("keep me")
    (site_dir / "packaging").symlink_to(elsewhere)  # inside by its name, outside by where it leads
    (dist_info / "RECORD").write_text("packaging/victim.txt,,\n")
    assert adopt(staging, Lock((), "", "resolved"), {"packaging": "20.9"})
    assert victim.read_text() == "keep me"


@pytest.mark.slow
def test_bootstrap_installed_in_a_folder_named_in_pythonpath_syncs(repo: Repo, tmp_path: Path) -> None:
    """Azure Functions' layout: the app's packages (bootstrap and its tools) in a folder named in PYTHONPATH,
    an interpreter that has none of them. Its children (pip-compile, pip) must find the tools there too."""
    import os
    import site
    import subprocess
    import sys
    import sysconfig

    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True)
    python = bare / "bin" / "python"
    app_packages = sysconfig.get_paths()["purelib"]  # stands for .python_packages/lib/site-packages
    assert app_packages in site.getsitepackages() or app_packages in sys.path
    root = str(Path(__file__).resolve().parent.parent)  # bootstrap itself (an editable install's source)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([app_packages, root])}
    repo.write("bsf-alpha==1.0")
    proc = subprocess.run([str(python), "-m", "bootstrap", "sync"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert repo.installed() == {"bsf-alpha": "1.0"}


def test_a_conflict_with_the_hosts_own_version_says_host_and_names_the_setting(
    repo: Repo,
    wheelhouse: Path,
    run_cli,  # type: ignore[no-untyped-def]
) -> None:
    """Through a dependency, not a line of the file: the resolver's conflict must still read as the host's."""
    import os
    from importlib.metadata import version

    from tests.wheels import Dist, build_wheel, module

    links = wheelhouse.parent / "needs-old-packaging"
    links.mkdir(exist_ok=True)
    build_wheel(Dist("bsf-old-packaging", "1.0", module("bsf_old_packaging", "1.0"), requires=("packaging<20",)), links)
    os.environ["PIP_FIND_LINKS"] = f"{wheelhouse} {links}"  # restored by the autouse fixture
    repo.write("bsf-old-packaging")
    result = run_cli("sync", "-q")
    assert result.code == 1 and len(result.err.splitlines()) == 1, result.err
    host_version = version("packaging")
    assert f"requirements.txt:1: the requirements need a version of packaging other than the host's {host_version}" in (
        result.err
    )
    assert "BOOTSTRAP_HOST_OVERRIDES=packaging" in result.err
    assert "The user requested" not in result.err  # pip's words for the host's constraint


def test_every_pin_that_contradicts_the_host_is_named_at_once(repo: Repo, run_cli) -> None:  # type: ignore[no-untyped-def]
    """A pip-compile output pinning several host packages: one line for all of them, not one run each."""
    # pluggy: pytest needs it, so it is the host application's (filelock, bootstrap's alone, would not be)
    repo.write("bsf-alpha", "packaging==20.9", "pluggy==0.1.0")
    result = run_cli("sync", "-q")
    assert result.code == 1 and len(result.err.splitlines()) == 1, result.err
    assert "requirements.txt:2: packaging==20.9 contradicts the host's packaging" in result.err
    assert "(and requirements.txt:3: pluggy==0.1.0 too)" in result.err
    assert "BOOTSTRAP_HOST_OVERRIDES=packaging,pluggy" in result.err


def test_children_get_only_the_pythonpath_folders_the_tools_are_found_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder a user can write (or a generation) on the host's PYTHONPATH never reaches pip-compile or pip,
    even when it holds packages that pip-tools also uses."""
    import sysconfig

    from bootstrap.tools import runner

    stray = tmp_path / "stray"
    (stray / "click-99.0.dist-info").mkdir(parents=True)
    (stray / "click-99.0.dist-info" / "METADATA").write_text("Name: click\nVersion: 99.0\n")
    (stray / "sitecustomize.py").write_text("print('user code ran in a tool child')\n")
    tools = sysconfig.get_paths()["purelib"]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(stray), tools]))
    runner.tool_path.cache_clear()
    try:
        assert runner.child_env()["PYTHONPATH"] == tools
        monkeypatch.setenv("PYTHONPATH", str(stray))
        runner.tool_path.cache_clear()
        assert "PYTHONPATH" not in runner.child_env()
    finally:
        runner.tool_path.cache_clear()


def test_bootstraps_own_tools_are_what_only_bootstrap_needs() -> None:
    requires = {
        "bootstrap-packages": [
            "click",
            "packaging>=23",
            "pydantic-settings",
            'uv>=0.5; extra == "uv"',
            'pytest; extra == "dev"',
        ],
        "pydantic-settings": ["pydantic>=2", 'python-dotenv; python_version < "3"'],
        "pydantic": ["typing-extensions"],
        "click": [],
        "packaging": [],
        "uv": [],
        "typing-extensions": [],
        "pytest": ["packaging", "pluggy"],  # the host application (here: tests) needs packaging too
        "pluggy": [],
        "azure-functions": ["typing-extensions"],
        "python-dotenv": [],
    }
    # packaging and typing-extensions stay the host's: pytest and azure-functions need them. Only the
    # tool extra is followed (uv), not dev, and a marker that is false adds nothing (python-dotenv).
    assert own_tools(requires) == {"click", "pydantic-settings", "pydantic", "uv"}
    assert own_tools({"click": []}) == set()  # bootstrap from a source folder, no metadata: nothing is its alone
    # A package the host's own requirements named (pip's REQUESTED) stays the host's, even if bootstrap needs it.
    assert own_tools(requires, requested={"pydantic"}) == {"click", "pydantic-settings", "uv"}


def test_the_host_scan_reads_each_distributions_headers_and_an_egg_infos_requires(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scan parses each METADATA's header block once (not through importlib.metadata, which parses the
    whole file again per attribute): a description's text is not a header, CRLF files read the same, and
    an egg-info's requirements still come from its requires.txt, an egg-info that is a file counts, and one
    without a version does not."""
    site = tmp_path / "site"

    def dist_info(name: str, version: str, requires: list[str], body: str = "", newline: str = "\n") -> None:
        folder = site / f"{name}-{version}.dist-info"
        folder.mkdir(parents=True)
        lines = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"]
        lines += [f"Requires-Dist: {line}" for line in requires]
        (folder / "METADATA").write_bytes(newline.join([*lines, "", body]).encode())

    # Only bootstrap needs beta (and, through beta's requires.txt, gamma): its tools. delta is named only
    # in bootstrap's description: it stays the host's.
    dist_info("bootstrap-packages", "1.0", ["beta"], body="Requires-Dist: delta\nName: not-a-name\n")
    dist_info("delta", "4.0", [], newline="\r\n")
    egg = site / "beta-2.0-py3.11.egg-info"
    egg.mkdir()
    (egg / "PKG-INFO").write_text("Metadata-Version: 1.1\nName: beta\nVersion: 2.0\n\nA description.\n")
    (egg / "requires.txt").write_text("gamma>=1\n")
    dist_info("gamma", "3.0", [])
    (site / "epsilon-5.0-py3.11.egg-info").write_text("Metadata-Version: 1.0\nName: epsilon\nVersion: 5.0\n")
    (site / "zeta-6.0.dist-info").mkdir()  # no version: it constrains nothing
    (site / "zeta-6.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: zeta\n")
    monkeypatch.setenv(HOST_PATH_VARIABLE, str(site))

    found = scan(tmp_path / "packages")

    assert found.tools == {"beta": "2.0", "gamma": "3.0"}
    assert found.packages == {"bootstrap-packages": "1.0", "delta": "4.0", "epsilon": "5.0"}


def test_a_host_sync_reads_the_hosts_packages_from_the_hosts_own_path(repo: Repo, tmp_path: Path) -> None:
    """The sync runs in a child: a folder the host put on sys.path itself (its script folder, a platform
    worker's) must still count, or its packages would be neither protected nor used."""
    added = tmp_path / "host-added"
    (added / "bsf_alpha-1.0.dist-info").mkdir(parents=True)
    (added / "bsf_alpha-1.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: bsf-alpha\nVersion: 1.0\n"
    )
    (added / "bsf_alpha").mkdir()
    (added / "bsf_alpha" / "__init__.py").write_text("__version__ = '1.0'\n")
    repo.write("bsf-alpha==2.0")
    code = f"import sys; sys.path.insert(0, {str(added)!r}); import bootstrap; bootstrap.startup(raise_errors=True)"
    proc = python_with_bootstrap(code)
    assert proc.returncode == 1
    assert "bsf-alpha==2.0 contradicts the host's bsf-alpha 1.0" in proc.stderr, proc.stderr


def test_a_user_may_pin_another_version_of_one_of_bootstraps_own_tools(
    repo: Repo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bootstrap")
    repo.write(f"filelock=={USER_FILELOCK}")  # bootstrap's own filelock is newer; nothing else here needs it
    sync(repo.settings())
    m = repo.manifest()
    assert {p["name"]: (p["version"], p["provided_by"]) for p in m["packages"]} == {
        "filelock": (USER_FILELOCK, "generation")
    }
    assert m["overrides"] == ["filelock"]  # the generation goes first on sys.path
    assert "not keeping the install made while resolving" not in caplog.text  # the speculative install fits
    proc = python_with_bootstrap("import bootstrap; bootstrap.startup(); import filelock; print(filelock.__version__)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == USER_FILELOCK


def test_a_host_that_syncs_at_start_up_imports_none_of_bootstraps_tools_itself(repo: Repo) -> None:
    """The sync runs in a child process: the host's own filelock, pydantic, packaging never load in it,
    so a workflow importing filelock gets the user's version."""
    repo.write(f"filelock=={USER_FILELOCK}", "bsf-alpha")
    code = (
        "import sys, bootstrap; m = bootstrap.startup(raise_errors=True); import filelock, bsf_alpha\n"
        "print(filelock.__version__, m['status'])\n"
        "print(sorted(n for n in ('pydantic', 'pydantic_settings', 'packaging', 'watchdog', 'piptools') "
        "if n in sys.modules))"
    )
    proc = python_with_bootstrap(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"{USER_FILELOCK} ok", "[]"]
