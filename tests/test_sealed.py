"""What the host imports is exactly what was verified (#13).

Three ways a set could pass verification and still serve something else: an import that writes to
installed files (through a hard link, into the active generation too), two distributions that install
the same file (one silently wins), and a distribution shipping a top-level ``bootstrap`` (the import
check would test the host's own instead).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bootstrap.errors import BootstrapError, VerificationError
from bootstrap.pipeline.sync import sync
from bootstrap.store.records import changed_files, installed
from tests.conftest import Repo, python_in
from tests.wheels import Dist, build_wheel, module

# At import, appends a line to bsf-gamma's module beside it in the site folder.
_EDITS_GAMMA = """\
import os
with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "bsf_gamma.py"), "a") as handle:
    handle.write("EDITED = True\\n")
"""
# At import, writes a file beside itself: in its __pycache__ (as numba's cache=True does), or not.
_WRITES_BESIDE = """\
import os
folder = os.path.join(os.path.dirname(__file__), {folder!r})
os.makedirs(folder, exist_ok=True)
with open(os.path.join(folder, {name!r}), "w") as handle:
    handle.write("made at import\\n")
"""
_PKGUTIL_NAMESPACE = "__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n"
MORE_DISTS = [
    Dist("bsf-editor", "1.0", module("bsf_editor", "1.0", _EDITS_GAMMA)),
    Dist("bsf-cacher", "1.0", module("bsf_cacher", "1.0", _WRITES_BESIDE.format(folder="__pycache__", name="f.nbi"))),
    Dist("bsf-generator", "1.0", module("bsf_generator", "1.0", _WRITES_BESIDE.format(folder=".", name="made.py"))),
    # opencv-python and opencv-python-headless, in small: one package folder, two contents.
    Dist("bsf-cv", "1.0", {"bsf_cv/__init__.py": "FLAVOUR = 'gui'\n", "bsf_cv/gui.py": ""}),
    Dist("bsf-cv-headless", "1.0", {"bsf_cv/__init__.py": "FLAVOUR = 'headless'\n"}),
    # Two portions of an old-style (pkgutil) namespace: the same __init__.py, byte for byte, in both.
    Dist("bsf-ns-one", "1.0", {"bsf_ns/__init__.py": _PKGUTIL_NAMESPACE, "bsf_ns/one.py": "NAME = 'one'\n"}),
    Dist("bsf-ns-two", "1.0", {"bsf_ns/__init__.py": _PKGUTIL_NAMESPACE, "bsf_ns/two.py": "NAME = 'two'\n"}),
    Dist(
        "bsf-shadow", "1.0", {"bootstrap/__init__.py": "raise RuntimeError('not the host one')\n", "bsf_shadow.py": ""}
    ),
]


@pytest.fixture(scope="session")
def more_wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("integrity-wheels")
    for dist in MORE_DISTS:
        build_wheel(dist, folder)
    return folder


@pytest.fixture(autouse=True)
def offer_more_wheels(monkeypatch: pytest.MonkeyPatch, wheelhouse: Path, more_wheels: Path) -> None:
    monkeypatch.setenv("PIP_FIND_LINKS", f"{wheelhouse} {more_wheels}")


def refused(repo: Repo) -> str:
    with pytest.raises(BootstrapError) as caught:
        sync(repo.settings())
    assert isinstance(caught.value, VerificationError), caught.value.message
    return caught.value.message


def writable_files(site: Path) -> list[str]:
    return sorted(
        str(path.relative_to(site))
        for path in site.rglob("*")
        if path.is_file() and not path.is_symlink() and path.stat().st_mode & 0o222
    )


# -- an import that writes to installed files -------------------------------------------------------


def test_an_import_that_edits_a_carried_file_is_refused(repo: Repo, run_cli: Any) -> None:
    """bsf-gamma is carried over by hard link; bsf-editor's import appends to it. As root the read-only
    mode does not stop the write (tests run as root): the stat re-check after the import check does."""
    repo.write("bsf-gamma")
    sync(repo.settings())
    before = repo.manifest()
    repo.write("bsf-gamma", "bsf-editor")
    message = refused(repo)
    assert message.startswith("bsf_gamma.py of bsf-gamma 1.0 was written to while importing bsf-editor 1.0"), message
    assert "shared with the active generation" in message and "verify" in message
    after = repo.manifest()
    assert after["generation"] == before["generation"] and after["status"] == "failed"
    result = run_cli("verify")  # as the message says: root's write reached the active generation's file
    assert result.code == 1 and "changed: bsf-gamma 1.0: bsf_gamma.py" in result.out


def test_an_import_that_edits_a_freshly_installed_file_is_refused(repo: Repo) -> None:
    repo.write("bsf-gamma", "bsf-editor")
    message = refused(repo)
    # Both were import-checked (in one child or two at once): both are named.
    expected = "bsf_gamma.py of bsf-gamma 1.0 was written to while importing one of bsf-editor 1.0, bsf-gamma 1.0"
    assert message.startswith(expected), message
    assert "shared" not in message  # nothing else had that file
    assert not (repo.packages_dir / "generations").is_dir() or not any((repo.packages_dir / "generations").iterdir())


def test_an_import_that_adds_a_module_is_refused_and_one_that_fills_a_cache_is_not(repo: Repo) -> None:
    repo.write("bsf-generator")
    message = refused(repo)
    assert message.startswith("bsf_generator/made.py was created while importing bsf-generator 1.0"), message
    repo.write("bsf-cacher")
    sync(repo.settings())
    assert (Path(repo.manifest()["site_dir"]) / "bsf_cacher" / "__pycache__" / "f.nbi").is_file()


def test_every_file_of_a_generation_is_read_only_carried_ones_too(repo: Repo) -> None:
    repo.write("bsf-gamma", "bsf-beta==1.0")
    sync(repo.settings())
    old_site = Path(repo.manifest()["site_dir"])
    assert writable_files(old_site) == []
    repo.write("bsf-gamma", "bsf-beta==1.0", "jaraco.context")
    sync(repo.settings())
    new_site = Path(repo.manifest()["site_dir"])
    assert writable_files(new_site) == []
    shared = new_site / "bsf_gamma.py"
    assert shared.stat().st_ino == (old_site / "bsf_gamma.py").stat().st_ino  # one inode, read-only in both
    assert stat.S_IMODE(shared.stat().st_mode) == 0o444
    compiled = list((new_site / "bsf_beta" / "__pycache__").glob("*.pyc"))
    assert compiled and all(stat.S_IMODE(path.stat().st_mode) == 0o444 for path in compiled)
    assert python_in(new_site, "import bsf_gamma, bsf_beta, jaraco.context").returncode == 0


@pytest.fixture
def packages_for_nobody(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A packages folder outside pytest's (root-only) temporary folder, which another user can reach."""
    if os.geteuid() != 0 or not os.path.exists("/usr/bin/python3"):
        pytest.skip("needs root (to act as another user) and a system python3 that user can run")
    folder = Path(tempfile.mkdtemp(prefix="bootstrap-integrity-"))
    monkeypatch.setenv("BOOTSTRAP_PACKAGES_DIR", str(folder / "packages"))
    yield folder / "packages"
    shutil.rmtree(folder, ignore_errors=True)


_AS_OWNER = """
import json, sys
from pathlib import Path
from bootstrap.pipeline.publish import remove_tree
old, new, staging = map(Path, sys.argv[1:4])
try:
    with open(new / "site" / "bsf_gamma.py", "a") as handle:
        handle.write("EDITED = True\\n")
    wrote = "written"
except PermissionError as exc:
    wrote = type(exc).__name__
remove_tree(old, staging)
print(json.dumps({"write": wrote, "old_removed": not old.exists()}))
"""


def test_as_their_owner_a_write_to_a_generation_fails_and_old_generations_still_go(
    repo: Repo, packages_for_nobody: Path
) -> None:
    """The host's user (not root) owns the packages folder: a write into a published file fails loudly
    instead of reaching every generation sharing it, and gc can still remove read-only files."""
    repo.write("bsf-gamma")
    old = Path(sync(repo.settings()).manifest["site_dir"]).parent
    repo.write("bsf-gamma", "bsf-alpha")
    new = Path(sync(repo.settings()).manifest["site_dir"]).parent
    assert old.parent == new.parent == packages_for_nobody / "generations"
    nobody = 65534
    os.chown(packages_for_nobody.parent, nobody, nobody)
    for folder, _, files in os.walk(packages_for_nobody):
        for name in [".", *files]:
            os.chown(os.path.join(folder, name), nobody, nobody)
    argv = ["/usr/bin/python3", "-c", _AS_OWNER, str(old), str(new), str(packages_for_nobody / "staging")]
    worktree = str(Path(__file__).resolve().parent.parent)
    result = subprocess.run(
        argv,
        user=nobody,
        group=nobody,
        extra_groups=[],
        capture_output=True,
        text=True,
        check=False,
        env={"PYTHONPATH": worktree, "PATH": "/usr/bin:/bin"},
        cwd="/",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"write": "PermissionError", "old_removed": True}
    assert "EDITED" not in (new / "site" / "bsf_gamma.py").read_text()


def test_read_only_generations_still_roll_back_and_verify(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-gamma")
    sync(repo.settings())
    first = repo.manifest()["generation"]
    repo.write("bsf-gamma", "bsf-alpha")
    sync(repo.settings())
    assert run_cli("rollback").code == 0 and repo.manifest()["generation"] == first
    assert run_cli("verify").code == 0


# -- two distributions that install the same file ---------------------------------------------------

CONFLICT = "bsf-cv 1.0 and bsf-cv-headless 1.0 both install bsf_cv/__init__.py: keep one of them in requirements.txt"


@pytest.mark.parametrize("route", ["cold", "from the lock"])
def test_two_distributions_installing_one_file_are_refused_cold(repo: Repo, run_cli: Any, route: str) -> None:
    """Cold: pip's speculative install or uv's (``cold``), or an install from a committed lock."""
    repo.write("bsf-cv", "bsf-cv-headless")
    if route == "from the lock":
        assert run_cli("lock").code == 0
    assert refused(repo) == CONFLICT
    assert repo.manifest().get("generation") is None


def test_two_distributions_installing_one_file_are_refused_incrementally(repo: Repo) -> None:
    repo.write("bsf-cv")
    sync(repo.settings())
    before = repo.manifest()["generation"]
    repo.write("bsf-cv", "bsf-cv-headless")
    assert refused(repo) == CONFLICT
    assert repo.manifest()["generation"] == before


@pytest.mark.parametrize("incremental", [False, True])
def test_a_file_two_distributions_ship_alike_is_no_conflict(repo: Repo, incremental: bool) -> None:
    """Old-style namespace portions each ship the same ``__init__.py``: whichever is kept, both are whole."""
    if incremental:
        repo.write("bsf-ns-one")
        sync(repo.settings())
    repo.write("bsf-ns-one", "bsf-ns-two")
    sync(repo.settings())
    site = repo.manifest()["site_dir"]
    assert python_in(site, "import bsf_ns.one, bsf_ns.two; print(bsf_ns.one.NAME, bsf_ns.two.NAME)").stdout == (
        "one two\n"
    )
    assert changed_files(Path(site), installed(Path(site))) == []


# -- a distribution shipping bootstrap --------------------------------------------------------------


def test_a_distribution_shipping_a_top_level_bootstrap_is_refused(repo: Repo) -> None:
    repo.write("bsf-gamma", "bsf-shadow")
    message = refused(repo)
    assert message.startswith("bsf-shadow 1.0 installs a top-level module named bootstrap"), message
    assert "drop it" in message
