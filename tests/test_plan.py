"""Unit tests of ``bootstrap.pipeline.plan`` (what a sync does, and the manifest's package entries)
and of ``bootstrap.pipeline.resolve.cache_key`` (what a cached resolution depends on)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bootstrap.inputs import overlay, requirements
from bootstrap.inputs.requirements import Desired, Policy
from bootstrap.pipeline.lockfile import Lock, Pin
from bootstrap.pipeline.plan import Active, package_entries, plan, refreshed_entries
from bootstrap.pipeline.resolve import cache_key
from bootstrap.store.manifest import PACKAGE_KEYS
from bootstrap.store.records import Distribution

WHEEL_URL = "https://files.example/direct-1.0-py3-none-any.whl"


def lock_of(*pins: Pin) -> Lock:
    return Lock(pins, "", "resolved")


def desired_from(folder: Path, *lines: str, runtime: tuple[str, ...] = ()) -> Desired:
    """A requirements.txt of ``lines`` in ``folder``, and the runtime overlay's ``runtime`` lines merged in."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "requirements.txt"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    desired = requirements.read(path)
    if runtime:
        overlay_file = folder / "runtime-requirements.txt"
        text = "".join(line + "\n" for line in runtime)
        lines_added = overlay.parse_overlay(overlay_file, text, Policy())
        desired = overlay.merged(desired, lines_added, {str(overlay_file): None})
    return desired


def dist(display_name: str, version: str) -> Distribution:
    name = display_name.lower().replace("_", "-").replace(".", "-")
    return Distribution(name, display_name, version, Path(f"/nowhere/{display_name}-{version}.dist-info"), ())


# -- plan ----------------------------------------------------------------------------------------

LOCK = lock_of(Pin("foo", "1.0"), Pin("bar", "2.0"), Pin("baz", "3.0"))


def test_with_no_host_packages_everything_is_installed() -> None:
    made = plan(LOCK, {}, (), None)
    assert made.lock is LOCK
    assert made.provided == {}
    assert [pin.name for pin in made.to_install.pins] == ["foo", "bar", "baz"]
    assert made.overrides == []
    assert made.keep_active is False


def test_a_host_package_at_the_same_version_is_provided() -> None:
    made = plan(LOCK, {"foo": "1.0", "unrelated": "9.0"}, (), None)
    assert made.provided == {"foo": "1.0"}
    assert [pin.name for pin in made.to_install.pins] == ["bar", "baz"]
    assert made.to_install.sha256 != LOCK.sha256
    assert made.overrides == []


def test_a_host_package_at_another_version_is_installed() -> None:
    made = plan(LOCK, {"foo": "1.1", "bar": "2.0"}, (), None)
    assert made.provided == {"bar": "2.0"}
    assert [pin.name for pin in made.to_install.pins] == ["foo", "baz"]
    assert made.overrides == []  # only the operator's overrides are listed


def test_a_url_pin_is_never_provided_by_the_host() -> None:
    lock = lock_of(Pin("direct", None, (), WHEEL_URL), Pin("foo", "1.0"))
    made = plan(lock, {"direct": "1.0", "foo": "1.0"}, (), None)
    assert made.provided == {"foo": "1.0"}
    assert [pin.name for pin in made.to_install.pins] == ["direct"]


def test_an_overridden_host_package_is_installed_and_listed() -> None:
    made = plan(LOCK, {"foo": "1.0", "bar": "1.0"}, ["Foo", "bar", "baz", "absent"], None)
    assert made.provided == {}
    assert [pin.name for pin in made.to_install.pins] == ["foo", "bar", "baz"]
    assert made.overrides == ["bar", "foo"]  # sorted; baz and absent are not the host's


@pytest.mark.parametrize(
    ("active", "keep"),
    [
        (Active(Path("/gen/site"), LOCK.sha256, intact=True), True),
        (Active(Path("/gen/site"), "0" * 64, intact=True), False),
        (Active(Path("/gen/site"), None, intact=True), False),
        (Active(Path("/gen/site"), LOCK.sha256, intact=False), False),
        (Active(None, LOCK.sha256, intact=True), False),
        (None, False),
    ],
)
def test_the_active_generation_is_kept_only_when_it_holds_these_pins_intact(active: Active | None, keep: bool) -> None:
    assert plan(LOCK, {}, (), active).keep_active is keep


def test_keep_active_compares_the_whole_lock_not_what_is_installed() -> None:
    made = plan(LOCK, {"foo": "1.0"}, (), Active(Path("/gen/site"), LOCK.sha256, intact=True))
    assert made.keep_active is True
    made = plan(LOCK, {"foo": "1.0"}, (), Active(Path("/gen/site"), LOCK.without({"foo"}).sha256, intact=True))
    assert made.keep_active is False


# -- package_entries and refreshed_entries --------------------------------------------------------


def test_entries_name_who_provides_and_who_asked(tmp_path: Path) -> None:
    desired = desired_from(tmp_path, "Foo_Bar>=1", "hosted", runtime=("added", "foo-bar<3"))
    dists = [dist("zeta", "1.0"), dist("Foo_Bar", "2.0"), dist("added", "0.1")]
    entries = package_entries(dists, {"hosted": "5.0", "dep-of-host": "1.2"}, desired)
    assert [entry["name"] for entry in entries] == ["added", "dep-of-host", "Foo_Bar", "hosted", "zeta"]
    for entry in entries:
        assert tuple(entry) == PACKAGE_KEYS
    by_name = {entry["name"]: entry for entry in entries}
    assert by_name["Foo_Bar"] == {
        "name": "Foo_Bar",
        "version": "2.0",
        "requested": True,
        "provided_by": "generation",
        "source": "repo",  # the runtime line narrows it, but the committed file names it
    }
    assert by_name["added"] == {
        "name": "added",
        "version": "0.1",
        "requested": True,
        "provided_by": "generation",
        "source": "runtime",
    }
    assert by_name["zeta"]["requested"] is False and by_name["zeta"]["source"] is None
    assert by_name["hosted"] == {
        "name": "hosted",
        "version": "5.0",
        "requested": True,
        "provided_by": "host",
        "source": "repo",
    }
    assert by_name["dep-of-host"]["provided_by"] == "host"
    assert by_name["dep-of-host"]["requested"] is False and by_name["dep-of-host"]["source"] is None


def test_entries_are_sorted_by_canonical_name(tmp_path: Path) -> None:
    desired = desired_from(tmp_path)
    entries = package_entries([dist("b.c", "1"), dist("B_A", "1"), dist("a", "1")], {"B-B": "1"}, desired)
    assert [entry["name"] for entry in entries] == ["a", "B_A", "B-B", "b.c"]


def test_no_distributions_no_entries(tmp_path: Path) -> None:
    assert package_entries([], {}, desired_from(tmp_path, "foo")) == []


def test_refreshed_entries_follow_the_requirements(tmp_path: Path) -> None:
    before = desired_from(tmp_path / "before", "foo", runtime=("bar",))
    after = desired_from(tmp_path / "after", "bar", "Baz_Q")
    entries = package_entries([dist("foo", "1.0"), dist("bar", "2.0"), dist("baz-q", "3.0")], {"h": "4"}, before)
    assert [(e["name"], e["requested"], e["source"]) for e in entries] == [
        ("bar", True, "runtime"),
        ("baz-q", False, None),
        ("foo", True, "repo"),
        ("h", False, None),
    ]
    refreshed = refreshed_entries(entries, after)
    assert [(e["name"], e["version"], e["provided_by"], e["requested"], e["source"]) for e in refreshed] == [
        ("bar", "2.0", "generation", True, "repo"),
        ("baz-q", "3.0", "generation", True, "repo"),
        ("foo", "1.0", "generation", False, None),
        ("h", "4", "host", False, None),
    ]
    for entry in refreshed:
        assert tuple(entry) == PACKAGE_KEYS
    assert entries[2]["requested"] is True  # the entries given are not changed


# -- resolve.cache_key ---------------------------------------------------------------------------


def key(desired: Desired, *, hashes: bool = False, backend: str = "pip", around: str = "") -> str:
    return cache_key(desired, hashes=hashes, backend=backend, around=around)


def test_equal_inputs_have_equal_keys(tmp_path: Path) -> None:
    one = desired_from(tmp_path / "one", "foo>=1", "bar==2.0")
    same = desired_from(tmp_path / "two", "# the same, commented", "foo >= 1  # why", "", "bar==2.0")
    assert key(one) == key(one)
    assert key(one) == key(same)


@pytest.mark.parametrize(
    "lines",
    [
        ("foo>=2", "bar==2.0"),
        ("foo>=1", "bar==2.1"),
        ("foo>=1",),
        ("foo>=1", "bar==2.0", "baz"),
        ("--pre", "foo>=1", "bar==2.0"),
    ],
)
def test_other_requirements_have_another_key(tmp_path: Path, lines: tuple[str, ...]) -> None:
    base = desired_from(tmp_path / "base", "foo>=1", "bar==2.0")
    assert key(base) != key(desired_from(tmp_path / "other", *lines))


def test_constraints_count(tmp_path: Path) -> None:
    base = desired_from(tmp_path / "base", "foo>=1")
    constrained = desired_from(tmp_path / "other", "foo>=1", runtime=("foo<3",))  # a narrowing constraint
    assert constrained.constraints
    assert key(base) != key(constrained)


def test_the_host_the_lock_around_hashes_and_backend_count(tmp_path: Path) -> None:
    desired = desired_from(tmp_path, "foo>=1")
    keys = {
        key(desired),
        key(dataclasses.replace(desired, host_constraints="foo==1.0\n")),
        key(dataclasses.replace(desired, host_constraints="foo==1.1\n")),
        key(desired, around="foo==1.0\n"),
        key(desired, around="foo==1.1\n"),
        key(desired, hashes=True),
        key(desired, backend="uv"),
    }
    assert len(keys) == 7


def test_pips_index_settings_count_but_not_its_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    desired = desired_from(tmp_path, "foo>=1")
    base = key(desired)
    monkeypatch.setenv("PIP_DEFAULT_TIMEOUT", "60")  # how long pip waits does not change what resolves
    assert key(desired) == base
    monkeypatch.setenv("PIP_INDEX_URL", "https://alice:one@pypi.example/simple")
    with_index = key(desired)
    assert with_index != base
    monkeypatch.setenv("PIP_INDEX_URL", "https://alice:two@pypi.example/simple")
    assert key(desired) == with_index
    monkeypatch.setenv("PIP_INDEX_URL", "https://alice:one@mirror.example/simple")
    assert key(desired) != with_index


def test_the_pip_config_file_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    desired = desired_from(tmp_path, "foo>=1")
    conf = tmp_path / "pip.conf"
    conf.write_text("", encoding="utf-8")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    base = key(desired)
    conf.write_text("[global]\nindex-url = https://mirror.example/simple\n", encoding="utf-8")
    assert key(desired) != base
