"""Bytecode is compiled once, when a generation is built; reused distributions bring theirs along."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest

from bootstrap.pipeline.sync import sync
from tests.conftest import Repo, python_in

TAG = sys.implementation.cache_tag


def site(repo: Repo) -> Path:
    return Path(repo.manifest()["site_dir"])


def test_every_module_of_a_new_generation_has_its_bytecode(repo: Repo) -> None:
    repo.write("bsf-beta==1.0", "bsf-gamma", "jaraco.context")
    sync(repo.settings())
    folder = site(repo)
    modules = sorted(path.relative_to(folder) for path in folder.rglob("*.py"))
    assert modules, "the set has modules"
    for module in modules:
        compiled = folder / module.parent / "__pycache__" / f"{module.stem}.{TAG}.pyc"
        assert compiled.is_file(), f"{module} was not compiled"


def test_a_packages_own_test_folder_is_left_to_import_time(repo: Repo) -> None:
    repo.write("bsf-with-tests")
    sync(repo.settings())
    folder = site(repo) / "bsf_with_tests"
    assert (folder / f"__pycache__/core.{TAG}.pyc").is_file()
    assert (folder / "tests" / "test_core.py").is_file(), "installed, only not compiled"
    assert not list((folder / "tests").rglob("*.pyc"))
    code = "import bsf_with_tests.tests.test_core as t; print(t.CHECKED)"
    assert python_in(site(repo), code).stdout.strip() == "True"


def test_a_reused_distribution_keeps_the_same_bytecode_files(repo: Repo) -> None:
    repo.write("bsf-gamma", "jaraco.context")
    sync(repo.settings())
    before = site(repo)
    repo.write("bsf-gamma", "jaraco.context", "bsf-alpha==1.0")
    sync(repo.settings())
    after = site(repo)
    assert after != before
    for relative in (f"__pycache__/bsf_gamma.{TAG}.pyc", f"jaraco/__pycache__/context.{TAG}.pyc"):
        # The same inode: linked, never compiled again.
        assert (after / relative).stat().st_ino == (before / relative).stat().st_ino, relative
    assert (after / f"bsf_alpha/__pycache__/__init__.{TAG}.pyc").is_file(), "the new one is compiled"


def test_compiling_can_be_turned_off(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOOTSTRAP_COMPILE_BYTECODE", "false")
    repo.write("bsf-gamma", "bsf-beta==1.0")
    sync(repo.settings())
    assert not list(site(repo).rglob("*.pyc"))


def test_a_file_that_does_not_compile_is_a_warning_not_a_failure(repo: Repo, caplog: pytest.LogCaptureFixture) -> None:
    repo.write("bsf-py2-leftovers")
    with caplog.at_level(logging.WARNING, logger="bootstrap"):
        result = sync(repo.settings())
    assert result.manifest["status"] == "ok"
    assert "did not compile" in caplog.text
    assert (site(repo) / f"bsf_py2_leftovers/__pycache__/__init__.{TAG}.pyc").is_file()


@pytest.mark.pip_only  # the speculative install is the pip backend's
def test_bytecode_of_a_host_package_taken_out_of_a_speculative_install_goes_too(repo: Repo) -> None:
    repo.write("bsf-needs-host")  # pip's own resolver installs packaging too; the host provides it
    sync(repo.settings())
    folder = site(repo)
    assert sorted(path.name for path in folder.iterdir() if not path.name.endswith(".dist-info")) == ["bsf_needs_host"]
    assert (folder / f"bsf_needs_host/__pycache__/__init__.{TAG}.pyc").is_file()


@pytest.mark.pip_only  # the speculative install is the pip backend's
def test_a_host_package_in_a_speculative_install_is_taken_out_before_it_is_compiled(
    repo: Repo, caplog: pytest.LogCaptureFixture
) -> None:
    repo.write("bsf-needs-host")  # --target installs packaging (the host's version) too
    with caplog.at_level(logging.INFO, logger="bootstrap"):
        sync(repo.settings())
    assert "the install made while resolving matches the lock: kept" in caplog.text
    compiled = [r.getMessage() for r in caplog.records if r.getMessage().startswith("compiling bytecode of")]
    assert compiled == ["compiling bytecode of 1 module (in this process)"], compiled  # bsf_needs_host alone


def test_the_workers_share_out_every_module_between_them(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from bootstrap.pipeline.bytecode import compile_tree

    folder = tmp_path / "site"
    for package in range(6):
        (folder / f"pkg{package}").mkdir(parents=True)
        for number in range(50):  # more modules than this process compiles, and than one chunk per worker
            (folder / f"pkg{package}" / f"mod{number}.py").write_text(f"VALUE = {number}\n" * (number + 1))
    (folder / "pkg0" / "broken.py").write_text("def (:\n")
    with caplog.at_level(logging.INFO, logger="bootstrap"):
        compile_tree(folder, timeout=60)
    assert "compiling bytecode of 301 modules (on " in caplog.text
    assert "pkg0/broken.py did not compile" in caplog.text
    missing = [
        path
        for path in folder.rglob("mod*.py")
        if not (path.parent / "__pycache__" / f"{path.stem}.{TAG}.pyc").is_file()
    ]
    assert not missing
    assert [path.name for path in tmp_path.iterdir()] == ["site"], "its scratch files are gone"


def test_a_few_modules_compile_in_this_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An organisation's one small package: no worker interpreters to start (about 0.1 s of a 1 s add)."""
    from bootstrap.pipeline import bytecode
    from bootstrap.tools import runner

    def no_workers(*args: object, **kwargs: object) -> None:
        raise AssertionError("a worker was started")

    monkeypatch.setattr(runner, "run_all", no_workers)
    folder = tmp_path / "site"
    (folder / "pkg").mkdir(parents=True)
    for number in range(5):
        (folder / "pkg" / f"mod{number}.py").write_text(f"VALUE = {number}\n")
    (folder / "pkg" / "broken.py").write_text("def (:\n")
    with caplog.at_level(logging.INFO, logger="bootstrap"):
        bytecode.compile_tree(folder, timeout=60)
    assert "compiling bytecode of 6 modules (in this process)" in caplog.text
    assert "pkg/broken.py did not compile" in caplog.text
    assert all((folder / "pkg" / "__pycache__" / f"mod{n}.{TAG}.pyc").is_file() for n in range(5))


def test_a_module_compiled_in_this_process_warns_nothing_as_a_worker_did(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An invalid escape (a DeprecationWarning on 3.11, a SyntaxWarning on 3.12): a worker's went nowhere; here,
    under `-W error`, it would fail the compile, and on 3.12 print on the sync's stderr."""
    import warnings

    from bootstrap.pipeline.bytecode import compile_tree

    folder = tmp_path / "site"
    (folder / "pkg").mkdir(parents=True)
    (folder / "pkg" / "escapes.py").write_text('PATTERN = "\\d+"\n')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compile_tree(folder, timeout=60)
    assert (folder / "pkg" / "__pycache__" / f"escapes.{TAG}.pyc").is_file()
    assert "escape" not in capsys.readouterr().err


def test_a_claimed_chunk_is_left_to_the_worker_that_claimed_it(tmp_path: Path) -> None:
    from bootstrap.pipeline import bytecode

    folder = tmp_path / "site"
    folder.mkdir()
    for number in range(3 * bytecode._CHUNK):
        (folder / f"mod{number:02}.py").write_text(f"VALUE = {number}\n")
    modules = bytecode.modules_to_compile(folder)
    listing, claims = tmp_path / "modules", tmp_path / "claims"
    listing.write_text("\0".join(map(str, modules)))
    claims.mkdir()
    (claims / str(bytecode._CHUNK)).touch()  # another worker has the second chunk
    argv = [sys.executable, "-c", bytecode._WORKER, str(listing), str(claims), str(bytecode._CHUNK)]
    subprocess.run(argv, check=True)
    compiled = [(module.parent / "__pycache__" / f"{module.stem}.{TAG}.pyc").is_file() for module in modules]
    chunk = bytecode._CHUNK
    assert compiled == [True] * chunk + [False] * chunk + [True] * chunk
    assert sorted(path.name for path in claims.iterdir()) == sorted(["0", str(chunk), str(2 * chunk)])


def test_bytecode_a_wheel_ships_is_never_rewritten(tmp_path: Path) -> None:
    """numpy ships some .pyc files in its RECORD; compiling over them made `verify` fail at once."""
    import subprocess
    import sys

    from bootstrap.pipeline.bytecode import compile_tree
    from bootstrap.store.records import changed_files, installed
    from tests.wheels import Dist, build_wheel

    tag = sys.implementation.cache_tag
    shipped = {
        "bsf_ships/__init__.py": "X = 1\n",
        "bsf_ships/tool.py": "Y = 2\n",
        f"bsf_ships/__pycache__/tool.{tag}.pyc": "bytecode as the wheel ships it",
    }
    wheel = build_wheel(Dist("bsf-ships", "1.0", shipped), tmp_path)
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    compile_tree(site, timeout=60)
    assert (site / "bsf_ships" / "__pycache__" / f"tool.{tag}.pyc").read_text() == "bytecode as the wheel ships it"
    assert (site / "bsf_ships" / "__pycache__" / f"__init__.{tag}.pyc").is_file()  # the rest is compiled
    assert changed_files(site, installed(site)) == []


def test_the_import_check_never_rewrites_bytecode_a_wheel_ships(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pip does not keep a wheel's modification times, so a shipped timestamped .pyc looks stale; an import
    that could write bytecode would rewrite it, and `verify` would then name it as changed."""
    import importlib.util
    import py_compile
    import subprocess
    import sys

    from bootstrap.pipeline import verify
    from bootstrap.store.records import changed_files, installed
    from tests.wheels import Dist, build_wheel

    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)  # as on a host that writes bytecode
    source = tmp_path / "src" / "bsf_shipped" / "__init__.py"
    source.parent.mkdir(parents=True)
    source.write_text("X = 1\n")
    compiled = Path(py_compile.compile(str(source), cfile=str(tmp_path / "shipped.pyc")))
    relative = Path(importlib.util.cache_from_source("bsf_shipped/__init__.py"))
    files = {"bsf_shipped/__init__.py": "X = 1\n", relative.as_posix(): compiled.read_bytes().decode("latin-1")}
    wheel = build_wheel(Dist("bsf-shipped", "1.0", files), tmp_path)
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--target", str(site), str(wheel)]
    subprocess.run(pip, check=True, capture_output=True)
    verify.verify_generation(site, {"bsf-shipped": "1.0"}, skip=frozenset(), timeout=60)
    assert changed_files(site, installed(site)) == []
