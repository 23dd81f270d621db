"""``bootstrap.verify``: versions compared as versions, dependencies consistent, import-check crashes named."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bootstrap.errors import SettingsError, VerificationError
from bootstrap.pipeline import verify
from bootstrap.store.records import Distribution
from tests.wheels import Dist, build_wheel, module


def dist(name: str, version: str, *requires: str) -> Distribution:
    return Distribution(name, name, version, Path(f"/nowhere/{name}-{version}.dist-info"), (), requires=requires)


def pip_install(site: Path, *wheels: Path) -> Path:
    """Install ``wheels`` as they are (no dependencies) into ``site``, as pip would into a generation."""
    argv = [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(site), *map(str, wheels)]
    subprocess.run(argv, check=True, capture_output=True, text=True)
    return site


def wheel(wheelhouse: Path, name: str, version: str = "1.0") -> Path:
    return wheelhouse / f"{Dist(name, version, {}).filename_stem}-py3-none-any.whl"


def site_with(tmp_path: Path, wheelhouse: Path, *names: str) -> Path:
    """A site folder holding the fixture wheels ``names`` (``name`` or ``name==version``)."""
    wheels = [wheel(wheelhouse, *name.split("==")) for name in names]
    return pip_install(tmp_path / "site", *wheels)


# -- 3a: versions are compared as versions -------------------------------------------------------


@pytest.mark.parametrize(
    ("installed", "locked"),
    [("1.0.0-rc1", "1.0.0rc1"), ("1.0.0", "1.0"), ("1.0", "1.0.0"), ("2.0.POST1", "2.0.post1"), ("1.0", "1.0")],
)
def test_equal_versions_spelled_differently_match(installed: str, locked: str) -> None:
    verify.check_set([dist("foo", installed)], {"foo": locked})


def test_a_different_version_still_differs() -> None:
    with pytest.raises(VerificationError, match=re.escape("foo is 1.0.1, not 1.0")):
        verify.check_set([dist("foo", "1.0.1")], {"foo": "1.0"})


def test_unparseable_versions_fall_back_to_text() -> None:
    verify.check_set([dist("foo", "not a version")], {"foo": "not a version"})
    with pytest.raises(VerificationError, match=re.escape("foo is not a version, not 1.0")):
        verify.check_set([dist("foo", "not a version")], {"foo": "1.0"})


def test_a_metadata_version_spelled_otherwise_verifies(tmp_path: Path) -> None:
    site = tmp_path / "site"
    dist_info = site / "bsf_rc-1.0.0rc1.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: bsf-rc\nVersion: 1.0.0-rc1\n")
    (dist_info / "RECORD").write_text("bsf_rc-1.0.0rc1.dist-info/METADATA,,\nbsf_rc-1.0.0rc1.dist-info/RECORD,,\n")
    found = verify.verify_generation(site, {"bsf-rc": "1.0.0rc1"}, skip=frozenset(), timeout=60)
    assert [(d.name, d.version) for d in found] == [("bsf-rc", "1.0.0-rc1")]


# -- 3b: every installed distribution's requirements are met by the set --------------------------


def test_requires_dist_is_read_from_metadata(tmp_path: Path, wheelhouse: Path) -> None:
    site = site_with(tmp_path, wheelhouse, "bsf-unmet", "bsf-alpha==1.0")
    by_name = {d.name: d for d in verify.installed(site)}
    assert by_name["bsf-unmet"].requires == ("bsf-alpha>=5", 'bsf-nowhere; extra == "cli"')
    assert by_name["bsf-alpha"].requires == ()


def test_an_unsatisfied_version_is_refused(tmp_path: Path, wheelhouse: Path) -> None:
    site = site_with(tmp_path, wheelhouse, "bsf-unmet", "bsf-alpha==1.0")
    with pytest.raises(VerificationError) as info:
        verify.check_dependencies(verify.installed(site))
    message = str(info.value)
    assert "bsf-unmet 1.0 requires bsf-alpha>=5, but bsf-alpha 1.0 is installed" in message
    assert "bsf-nowhere" not in message  # only needed for the [cli] extra
    assert "\n" not in message


def test_verify_generation_checks_dependencies(tmp_path: Path, wheelhouse: Path) -> None:
    site = site_with(tmp_path, wheelhouse, "bsf-beta==1.0")
    with pytest.raises(VerificationError) as info:
        verify.verify_generation(site, {"bsf-beta": "1.0"}, skip=frozenset(), timeout=60)
    assert "bsf-beta 1.0 requires bsf-alpha>=1.0, but bsf-alpha is not in the set" in str(info.value)


def test_a_consistent_set_verifies(tmp_path: Path, wheelhouse: Path) -> None:
    site = site_with(tmp_path, wheelhouse, "bsf-beta==2.0", "bsf-alpha==2.0")
    found = verify.verify_generation(site, {"bsf-beta": "2.0", "bsf-alpha": "2.0"}, skip=frozenset(), timeout=60)
    assert sorted(d.name for d in found) == ["bsf-alpha", "bsf-beta"]


def test_markers_for_other_interpreters_and_extras_are_skipped() -> None:
    verify.check_dependencies(
        [
            dist("app", "1.0", 'missing; python_version < "3"', 'missing; extra == "docs"', "Lib>=1,<2"),
            dist("lib", "1.5"),
        ]
    )


def test_names_are_canonical_and_prereleases_count() -> None:
    verify.check_dependencies([dist("app", "1.0", "Jaraco.Functools>=1"), dist("jaraco-functools", "2.0rc1")])


def test_an_extra_asked_for_by_a_dependent_is_checked() -> None:
    dists = [dist("app", "1.0", "lib[cli]>=1"), dist("lib", "1.0", 'click>=8; extra == "cli"', "base")]
    with pytest.raises(VerificationError) as info:
        verify.check_dependencies(dists)
    message = str(info.value)
    assert 'lib 1.0 requires click>=8; extra == "cli", but click is not in the set' in message
    assert "lib 1.0 requires base, but base is not in the set" in message
    assert message.count("requires base") == 1  # reported once, not once per extra


def test_an_unparseable_requirement_or_version_is_not_a_failure() -> None:
    verify.check_dependencies([dist("app", "1.0", "not a requirement!!", "lib>=1"), dist("lib", "weird")])


# -- 3c: a crash in the import check names the module and the package ------------------------------


def test_a_segfault_at_import_names_the_package(tmp_path: Path, wheelhouse: Path) -> None:
    site = site_with(tmp_path, wheelhouse, "bsf-alpha==1.0", "bsf-segfault")
    with pytest.raises(VerificationError) as info:
        verify.check_imports(site, verify.installed(site), skip=frozenset(), timeout=60)
    message = str(info.value)
    assert "\n" not in message
    assert "SIGSEGV" in message
    assert "while importing bsf_segfault from bsf-segfault 1.0" in message
    assert "BOOTSTRAP_SKIP_IMPORT_CHECK=bsf-segfault" in message
    assert "import importlib" not in message and sys.executable not in message  # never the script or argv
    # skipped, the rest of the set imports
    verify.check_imports(site, verify.installed(site), skip=frozenset({"bsf-segfault"}), timeout=60)


def test_an_exit_at_import_names_the_package(tmp_path: Path) -> None:
    exits = Dist("bsf-exits", "1.0", module("bsf_exits", "1.0", "import os\nos._exit(3)\n"))
    quits = Dist("bsf-quits", "1.0", module("bsf_quits", "1.0", "import os\nos._exit(0)\n"))
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    site = pip_install(tmp_path / "site", build_wheel(exits, wheels), build_wheel(quits, wheels))
    dists = verify.installed(site)
    with pytest.raises(VerificationError) as info:
        verify.check_imports(site, dists, skip=frozenset(), timeout=60)
    message = str(info.value)
    assert "exit code 3" in message and "while importing bsf_exits from bsf-exits 1.0" in message
    assert "\n" not in message and "import importlib" not in message
    with pytest.raises(VerificationError) as info:
        verify.check_imports(site, dists, skip=frozenset({"bsf-exits"}), timeout=60)
    assert "while importing bsf_quits from bsf-quits 1.0" in str(info.value)


def test_a_hang_at_import_names_the_package(tmp_path: Path) -> None:
    hangs = Dist("bsf-hangs", "1.0", module("bsf_hangs", "1.0", "import time\ntime.sleep(60)\n"))
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    site = pip_install(tmp_path / "site", build_wheel(hangs, wheels))
    with pytest.raises(VerificationError) as info:
        verify.check_imports(site, verify.installed(site), skip=frozenset(), timeout=3)
    message = str(info.value)
    assert "timed out while importing bsf_hangs from bsf-hangs 1.0" in message
    assert "BOOTSTRAP_IMPORT_CHECK_TIMEOUT" in message and "\n" not in message


def test_the_children_share_the_modules_and_a_crash_stops_the_others(
    tmp_path: Path, wheelhouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hangs = Dist("bsf-hangs", "1.0", module("bsf_hangs", "1.0", "import time\ntime.sleep(600)\n"))
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    site = site_with(tmp_path, wheelhouse, "bsf-segfault")
    pip_install(site, build_wheel(hangs, wheels))
    dists = verify.installed(site)
    monkeypatch.setattr(verify.runner, "cores", lambda: 2)  # two children, whatever the machine
    groups = verify._share_out({module: dist for dist in dists for module in dist.modules()}, 2)
    assert sorted(groups) == [["bsf_hangs"], ["bsf_segfault"]]
    started = time.monotonic()
    with pytest.raises(VerificationError) as info:
        verify.check_imports(site, dists, skip=frozenset(), timeout=120)
    # The segfault is the cause, not the sibling stopped because of it; nobody waited for the hang.
    assert "crashed (SIGSEGV) while importing bsf_segfault from bsf-segfault 1.0" in str(info.value)
    assert time.monotonic() - started < 100, "the hanging child was stopped, not waited for"


def test_an_import_error_is_still_reported_per_module(tmp_path: Path, wheelhouse: Path) -> None:
    site = site_with(tmp_path, wheelhouse, "bsf-broken", "bsf-gamma")
    with pytest.raises(VerificationError) as info:
        verify.check_imports(site, verify.installed(site), skip=frozenset(), timeout=60)
    message = str(info.value)
    assert "bsf-broken 1.0: import bsf_broken failed (RuntimeError: boom at import)" in message
    assert "BOOTSTRAP_SKIP_IMPORT_CHECK=bsf-broken" in message


# -- 3d: skip names are compared canonically ---------------------------------------------------------


@pytest.mark.parametrize("spelling", ["bsf-needs-config", "BSF_Needs_Config", "bsf.needs.config"])
def test_skip_names_are_canonicalised(tmp_path: Path, wheelhouse: Path, spelling: str) -> None:
    site = site_with(tmp_path, wheelhouse, "bsf-needs-config")
    dists = verify.installed(site)
    with pytest.raises(VerificationError):
        verify.check_imports(site, dists, skip=frozenset(), timeout=60)
    verify.check_imports(site, dists, skip=frozenset({spelling}), timeout=60)


def test_a_crash_before_any_import_blames_no_package(tmp_path: Path, wheelhouse: Path) -> None:
    site = site_with(tmp_path, wheelhouse, "bsf-gamma")
    (site / "zz-crash.pth").write_text("import os; os._exit(5)\n")  # .pth lines run at site.addsitedir
    with pytest.raises(VerificationError) as info:
        verify.check_imports(site, verify.installed(site), skip=frozenset(), timeout=60)
    message = str(info.value)
    assert (
        message
        == "the import check crashed (exit code 5) before importing any module (a .pth file in the new site folder?)"
    )


def test_an_import_check_that_cannot_start_is_no_pass(
    tmp_path: Path, wheelhouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = site_with(tmp_path, wheelhouse, "bsf-gamma")
    monkeypatch.setattr(verify.sys, "executable", str(tmp_path / "no-such-python"))
    # One line naming the program (not "cannot use the packages folder"); it never passes.
    with pytest.raises(SettingsError, match="no-such-python is not there"):
        verify.check_imports(site, verify.installed(site), skip=frozenset(), timeout=60)


def test_commands_run_at_once_report_the_first_failure_and_stop_the_rest() -> None:
    from bootstrap.errors import CommandError
    from bootstrap.tools import runner

    sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
    failing = [sys.executable, "-c", "import sys, time; time.sleep(0.5); sys.exit(3)"]
    outcomes = runner.run_all([sleeper, failing, sleeper], timeout=300, stop_on_failure=True)
    assert not outcomes.completed
    assert len(outcomes.failures) == 3
    first = outcomes.failures[0]
    assert isinstance(first, CommandError) and first.returncode == 3, "the cause comes first"
    assert all(isinstance(exc, CommandError) and exc.returncode == -9 for exc in outcomes.failures[1:])


def test_a_module_needing_what_nothing_provides_is_an_optional_part(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """ipython's matplotlib_inline imports matplotlib, which ipython does not require: pip installs it,
    and so does a sync, with a warning naming the module and what it needs."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    shell = Dist(
        "bsf-shell",
        "1.0",
        {
            "bsf_shell/__init__.py": "X = 1\n",
            "bsf_shell_inline/__init__.py": "import bsf_plotting_nobody_has.backend\n",
        },
    )
    site = pip_install(tmp_path / "site", build_wheel(shell, wheels))
    with caplog.at_level("WARNING", logger="bootstrap"):
        found = verify.verify_generation(site, {"bsf-shell": "1.0"}, skip=frozenset(), timeout=60)
    assert [dist.name for dist in found] == ["bsf-shell"]
    assert "import bsf_shell_inline needs bsf_plotting_nobody_has, which nothing" in caplog.text
    assert "optional part" in caplog.text


def test_a_module_missing_from_a_package_the_set_has_still_fails(tmp_path: Path) -> None:
    """A missing module the set should provide (its package is there, the module is not) is a broken set."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    base = Dist("bsf-base", "1.0", {"bsf_base/__init__.py": ""})
    user = Dist("bsf-user", "1.0", {"bsf_user/__init__.py": "import bsf_base.gone\n"}, requires=("bsf-base",))
    site = pip_install(tmp_path / "site", build_wheel(base, wheels), build_wheel(user, wheels))
    with pytest.raises(VerificationError, match="import bsf_user failed"):
        verify.verify_generation(site, {"bsf-base": "1.0", "bsf-user": "1.0"}, skip=frozenset(), timeout=60)


def test_a_crash_or_a_syntax_error_still_fails_the_generation(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    bad = Dist("bsf-syntax", "1.0", {"bsf_syntax/__init__.py": "def broken(:\n"})
    site = pip_install(tmp_path / "site", build_wheel(bad, wheels))
    with pytest.raises(VerificationError, match=r"import bsf_syntax failed \(SyntaxError"):
        verify.verify_generation(site, {"bsf-syntax": "1.0"}, skip=frozenset(), timeout=60)
