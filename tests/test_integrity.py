"""What the host imports is exactly what was verified (#13).

Ways a set could pass verification and still serve something else: two distributions that install
the same file (one silently wins), and a distribution shipping a top-level ``bootstrap`` (the import
check would test the host's own instead).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bootstrap.errors import BootstrapError, VerificationError
from bootstrap.pipeline.sync import sync
from bootstrap.store.records import changed_files, installed
from tests.conftest import Repo, python_in
from tests.wheels import Dist, build_wheel

_PKGUTIL_NAMESPACE = "__path__ = __import__('pkgutil').extend_path(__path__, __name__)\n"
MORE_DISTS = [
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
