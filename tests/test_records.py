"""Unit tests of ``bootstrap.store.records``: the one path rule, RECORD files, and a site folder's state."""

from __future__ import annotations

import base64
import hashlib
import os
import sys
from pathlib import Path

import pytest

from bootstrap.errors import VerificationError
from bootstrap.store.records import (
    Distribution,
    RecordEntry,
    canonical_name,
    changed_files,
    inside,
    installed,
    intact,
    missing_files,
    read_record,
    set_differences,
    unlisted_files,
    unlisted_pth,
)


def record_hash(data: bytes) -> str:
    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_dist(
    site: Path,
    name: str,
    version: str,
    files: dict[str, bytes],
    *,
    extra_rows: tuple[str, ...] = (),
    requires: tuple[str, ...] = (),
) -> Path:
    """A dist-info in ``site`` as pip writes it: METADATA, and a RECORD listing ``files`` with their hashes."""
    dist_info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir(parents=True)
    metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    metadata += "".join(f"Requires-Dist: {line}\n" for line in requires)
    (dist_info / "METADATA").write_text(metadata, encoding="utf-8")
    rows = []
    for path, data in files.items():
        (site / path).parent.mkdir(parents=True, exist_ok=True)
        (site / path).write_bytes(data)
        rows.append(f"{path},{record_hash(data)},{len(data)}")
    meta = (dist_info / "METADATA").read_bytes()
    rows.append(f"{dist_info.name}/METADATA,{record_hash(meta)},{len(meta)}")
    rows += [*extra_rows, f"{dist_info.name}/RECORD,,"]
    (dist_info / "RECORD").write_text("".join(row + "\n" for row in rows), encoding="utf-8")
    return dist_info


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A site folder holding Foo_Bar 1.0 (a package, a script beside the folder, a hashless .pyc) and baz 2.0."""
    site = tmp_path / "site"
    make_dist(
        site,
        "Foo_Bar",
        "1.0",
        {"foo_bar/__init__.py": b"VERSION = '1.0'\n", "foo_bar/data.txt": b"some data\n"},
        extra_rows=("../../bin/foo-bar,sha256=AAAA,10", "foo_bar/__pycache__/__init__.cpython-311.pyc,,"),
        requires=("baz>=2", 'extra-thing; extra == "cli"'),
    )
    pyc = site / "foo_bar" / "__pycache__" / "__init__.cpython-311.pyc"
    pyc.parent.mkdir()
    pyc.write_bytes(b"compiled")
    make_dist(site, "baz", "2.0", {"baz.py": b"X = 1\n"})
    return site


# -- canonical_name and inside -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("Foo_Bar.baz", "foo-bar-baz"),
        ("foo", "foo"),
        ("Foo__Bar--Baz", "foo-bar-baz"),
        ("zope.interface", "zope-interface"),
    ],
)
def test_canonical_name(name: str, canonical: str) -> None:
    assert canonical_name(name) == canonical


@pytest.mark.parametrize(
    "path", ["x.py", "pkg/mod.py", "pkg/sub/x.so", "a..b/x.py", "pkg/..hidden", "x.dist-info/RECORD"]
)
def test_relative_paths_are_inside(path: str) -> None:
    assert inside(path)


@pytest.mark.parametrize(
    "path", ["", "../x", "/etc/x", "a/../../x", "a/..", "..", "\\windows\\x", "a\\..\\..\\x", "../../bin/tool"]
)
def test_paths_that_climb_out_or_are_absolute_are_not_inside(path: str) -> None:
    assert not inside(path)
    assert not RecordEntry(path).inside


# -- read_record and installed -------------------------------------------------------------------


def test_read_record_reads_every_row(tmp_path: Path) -> None:
    record = tmp_path / "RECORD"
    record.write_text(
        'pkg/__init__.py,sha256=abc,12\n"pkg/a,b.py",sha256=def,3\n\nx.dist-info/RECORD,,\nshort-row\n',
        encoding="utf-8",
    )
    assert read_record(record) == (
        RecordEntry("pkg/__init__.py", "sha256=abc", "12"),
        RecordEntry("pkg/a,b.py", "sha256=def", "3"),  # a comma in a path is quoted by csv
        RecordEntry("x.dist-info/RECORD"),
        RecordEntry("short-row"),
    )


def test_installed_reads_each_dist_info(site: Path) -> None:
    found = installed(site)
    by_folder = [("foo-bar", "Foo_Bar", "1.0"), ("baz", "baz", "2.0")]  # Foo_Bar-1.0.dist-info sorts first
    assert [(d.name, d.display_name, d.version) for d in found] == by_folder
    foo = found[0]
    assert foo.dist_info == site / "Foo_Bar-1.0.dist-info"
    assert foo.requires == ("baz>=2", 'extra-thing; extra == "cli"')
    assert "foo_bar/__init__.py" in foo.files
    assert "../../bin/foo-bar" in foo.files
    assert foo.modules() == ["foo_bar"]
    assert found[1].modules() == ["baz"]


def test_an_empty_or_absent_site_has_no_distributions(tmp_path: Path) -> None:
    assert installed(tmp_path) == []
    assert installed(tmp_path / "absent") == []


def test_a_dist_info_without_metadata_is_incomplete(site: Path) -> None:
    (site / "baz-2.0.dist-info" / "METADATA").unlink()
    with pytest.raises(VerificationError, match=r"baz-2\.0\.dist-info is incomplete"):
        installed(site)


def test_a_dist_info_without_record_is_incomplete(site: Path) -> None:
    (site / "baz-2.0.dist-info" / "RECORD").unlink()
    with pytest.raises(VerificationError, match=r"baz-2\.0\.dist-info is incomplete"):
        installed(site)


def test_a_folded_header_is_read_as_one_line(tmp_path: Path) -> None:
    dist_info = make_dist(tmp_path, "folded", "1.0", {})
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: folded\nVersion: 1.0\n  .post1\n")
    (found,) = installed(tmp_path)
    assert found.version == "1.0 .post1"
    assert "\n" not in found.version


# -- missing_files, changed_files, intact --------------------------------------------------------


def test_a_complete_site_misses_nothing_and_is_unchanged(site: Path) -> None:
    dists = installed(site)
    assert missing_files(site, dists) == []  # the script beside the folder is not the site's
    assert changed_files(site, dists) == []  # nor is it hashed, and the .pyc has no hash
    assert intact(site)


def test_a_missing_file_is_named(site: Path) -> None:
    (site / "foo_bar" / "data.txt").unlink()
    dists = installed(site)
    assert missing_files(site, dists) == ["Foo_Bar 1.0: foo_bar/data.txt"]
    assert changed_files(site, dists) == ["missing: Foo_Bar 1.0: foo_bar/data.txt"]
    assert not intact(site)


def test_paths_outside_the_folder_are_never_checked(tmp_path: Path) -> None:
    site = tmp_path / "site"
    make_dist(
        site,
        "odd",
        "1.0",
        {"odd.py": b""},
        extra_rows=(f"{tmp_path}/nowhere/x,sha256=AAAA,1", "../../../nowhere/y,sha256=AAAA,1", "a/../../z,,"),
    )
    (tmp_path / "z").write_bytes(b"outside")  # a/../../z from site: even there, it is not the site's
    dists = installed(site)
    assert missing_files(site, dists) == []
    assert changed_files(site, dists) == []
    assert intact(site)


def test_a_changed_file_is_named(site: Path) -> None:
    (site / "foo_bar" / "__init__.py").write_bytes(b"VERSION = 'edited'\n")
    dists = installed(site)
    assert changed_files(site, dists) == ["changed: Foo_Bar 1.0: foo_bar/__init__.py"]
    assert missing_files(site, dists) == []
    assert intact(site)  # present is all intact asks


def test_a_listed_file_without_a_hash_must_still_be_there(site: Path) -> None:
    (site / "foo_bar" / "__pycache__" / "__init__.cpython-311.pyc").unlink()
    dists = installed(site)
    assert missing_files(site, dists) == ["Foo_Bar 1.0: foo_bar/__pycache__/__init__.cpython-311.pyc"]
    assert changed_files(site, dists) == []  # no hash: nothing to compare, not even presence
    assert not intact(site)


def test_rows_without_a_hash_are_not_hashed(site: Path) -> None:
    (site / "foo_bar" / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"recompiled")
    assert changed_files(site, installed(site)) == []
    (site / "Foo_Bar-1.0.dist-info" / "RECORD").write_text(
        "foo_bar/__init__.py,,\nFoo_Bar-1.0.dist-info/RECORD,,\n", encoding="utf-8"
    )
    (site / "foo_bar" / "__init__.py").write_bytes(b"edited, but RECORD gives no hash\n")
    assert changed_files(site, installed(site)) == []


def test_a_quick_check_vouches_for_files_unread(site: Path) -> None:
    (site / "baz.py").write_bytes(b"X = 2\n")  # same size, other content
    dists = installed(site)
    assert changed_files(site, dists, quick=lambda stat, size: True) == []
    assert changed_files(site, dists, quick=lambda stat, size: False) == ["changed: baz 2.0: baz.py"]


def test_the_quick_check_is_given_each_hashed_files_recorded_size(site: Path) -> None:
    seen: list[str] = []

    def never(stat: os.stat_result, size: str) -> bool:
        seen.append(size)
        return False

    assert changed_files(site, installed(site), quick=never) == []
    # the three files and the two METADATA (RECORD, the .pyc and the script beside the folder: no hash checked)
    assert len(seen) == 5
    assert str(len(b"some data\n")) in seen and str(len(b"X = 1\n")) in seen


def test_an_unknown_hash_algorithm_is_unreadable(tmp_path: Path) -> None:
    site = tmp_path / "site"
    make_dist(site, "odd", "1.0", {}, extra_rows=("odd.py,nosuchalgo=AAAA,1",))
    (site / "odd.py").write_bytes(b"x")
    (problem,) = changed_files(site, installed(site))
    assert problem.startswith("unreadable: odd 1.0: odd.py")


def test_a_site_that_is_not_a_folder_is_not_intact(tmp_path: Path) -> None:
    assert not intact(tmp_path / "absent")
    (tmp_path / "file").write_text("")
    assert not intact(tmp_path / "file")


def test_a_damaged_dist_info_is_not_intact(site: Path) -> None:
    (site / "baz-2.0.dist-info" / "RECORD").unlink()
    assert not intact(site)


# -- Distribution.safe_to_link -------------------------------------------------------------------


def with_paths(*paths: str) -> Distribution:
    return Distribution("x", "x", "1.0", Path("/nowhere/x-1.0.dist-info"), tuple(RecordEntry(p) for p in paths))


def test_a_distribution_inside_the_folder_is_safe_to_link() -> None:
    assert with_paths("x/__init__.py", "x-1.0.dist-info/RECORD").safe_to_link
    assert with_paths().safe_to_link


def test_pips_scripts_beside_the_folder_are_safe_to_link() -> None:
    assert with_paths("x/__init__.py", "../../bin/x").safe_to_link


@pytest.mark.parametrize("path", ["/etc/x", "x/../../y", "\\windows\\x"])
def test_a_path_elsewhere_is_not_safe_to_link(path: str) -> None:
    assert not with_paths("x/__init__.py", path).safe_to_link


def test_the_site_fixture_is_safe_to_link(site: Path) -> None:
    assert all(dist.safe_to_link for dist in installed(site))


# -- set_differences, unlisted_pth, unlisted_files -----------------------------------------------

MANIFEST_PACKAGES = [
    {"name": "Foo_Bar", "version": "1.0", "provided_by": "generation"},
    {"name": "baz", "version": "2.0", "provided_by": "generation"},
    {"name": "hosted", "version": "3.0", "provided_by": "host"},  # the host's: never in the site
]


def test_the_set_found_matches_the_manifest(site: Path) -> None:
    assert set_differences(installed(site), MANIFEST_PACKAGES) == []
    assert intact(site, MANIFEST_PACKAGES)


def test_a_deleted_planted_or_replaced_distribution_differs(site: Path) -> None:
    import shutil

    shutil.rmtree(site / "baz-2.0.dist-info")
    make_dist(site, "stranger", "0.1", {"stranger.py": b""})
    assert sorted(set_differences(installed(site), MANIFEST_PACKAGES)) == [
        "missing: baz 2.0: the whole distribution (its dist-info is gone)",
        "not in the manifest: stranger 0.1: stranger-0.1.dist-info",
    ]
    assert not intact(site, MANIFEST_PACKAGES)
    assert intact(site)  # without the manifest's list, only the files of what is there are judged
    make_dist(site, "baz", "2.1", {"baz.py": b"X = 1\n"})
    make_dist(site, "Foo_Bar", "1.1", {})
    assert sorted(set_differences(installed(site), MANIFEST_PACKAGES[:2])) == [
        "another version: Foo_Bar 1.1: the manifest has 1.0",
        "another version: baz 2.1: the manifest has 2.0",
        "installed twice: Foo_Bar 1.0 and 1.1",
        "not in the manifest: stranger 0.1: stranger-0.1.dist-info",
    ]


def test_a_pth_no_record_lists_is_named_and_the_site_is_not_intact(site: Path) -> None:
    make_dist(site, "shipped", "1.0", {"shipped.pth": b"import os\n"})
    assert unlisted_pth(site, installed(site)) == []  # a .pth its wheel ships is verified like any file
    (site / "zz_planted.pth").write_text("import os\n")
    assert unlisted_pth(site, installed(site)) == ["zz_planted.pth"]
    assert not intact(site)


def test_unlisted_files_are_every_file_no_record_lists(site: Path) -> None:
    tag = sys.implementation.cache_tag
    (site / "bin").mkdir()
    (site / "bin" / "foo-bar").write_text("")  # pip --target moves ../../bin/foo-bar here: listed
    (site / "__pycache__").mkdir()
    for name in (f"baz.{tag}.pyc", f"baz.{tag}.opt-2.pyc"):  # beside a listed baz.py: compiled, listed
        (site / "__pycache__" / name).write_bytes(b"")
    assert unlisted_files(site, installed(site)) == []
    for name in (f"other.{tag}.pyc", f"baz.{tag}.weird.pyc", "baz.pyc"):
        (site / "__pycache__" / name).write_bytes(b"")
    (site / "foo_bar" / "data.txt.bak").write_text("")
    assert unlisted_files(site, installed(site)) == [
        f"__pycache__/baz.{tag}.weird.pyc",
        "__pycache__/baz.pyc",
        f"__pycache__/other.{tag}.pyc",
        "foo_bar/data.txt.bak",
    ]
