"""The documented test workflow (repo_template/test_custom_packages_runtime.py), run as a host runs it.

Offline, its packages are the stand-ins of ``tests/wheels.py`` (``RUNTIME_STAND_INS``); the test marked
``network`` runs it on the real colorama, tabulate, python-dateutil and pyyaml from the public index.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import bootstrap
from bootstrap.host import state
from tests.conftest import Repo, python_with_bootstrap

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "repo_template" / "test_custom_packages_runtime.py"
ALL_STEPS = ["verify_packages_dir", "check_existing", "install", "test_import", "test_usage"]

# The platform's documented response to {"package": "colorama", "test_import": true, "test_usage": true}: the
# fields and values it names, step by step (a result may have more fields, never other values). "<packages>" is
# the packages folder; module_file is checked apart (it ends in colorama/__init__.py inside that folder).
DOCUMENTED_CALL = {"package": "colorama", "test_import": True, "test_usage": True}
_IMPORTED = ("test_import", {"status": "success", "message": "Successfully imported colorama", "from_packages": True})
_USED = (
    "test_usage",
    {"status": "success", "test": "Terminal color formatting", "has_fore": True, "has_back": True, "has_style": True},
)
_ALL_SUCCESSFUL = {"import_successful": True, "usage_successful": True, "all_successful": True}
DOCUMENTED_FIRST_RUN: dict[str, Any] = {
    "steps": [
        ("verify_packages_dir", {"status": "success", "path": "<packages>"}),
        ("check_existing", {"status": "not_installed", "message": "colorama is not installed"}),
        ("install", {"status": "success", "message": "Successfully installed colorama"}),
        _IMPORTED,
        _USED,
    ],
    "summary": {"already_installed": False, **_ALL_SUCCESSFUL},
}
DOCUMENTED_LATER_RUN: dict[str, Any] = {
    "steps": [
        ("verify_packages_dir", {"status": "success", "path": "<packages>"}),
        ("check_existing", {"status": "already_installed", "message": "colorama is already installed"}),
        _IMPORTED,
        _USED,
    ],
    "summary": {"already_installed": True, **_ALL_SUCCESSFUL},
}


def assert_documented(result: dict[str, Any], documented: dict[str, Any], packages_dir: Path) -> None:
    """``result`` carries every field the platform documents, with the documented value, field by field."""
    assert [step["step"] for step in result["steps"]] == [name for name, _ in documented["steps"]], result
    for step, (name, fields) in zip(result["steps"], documented["steps"], strict=True):
        for field, value in fields.items():
            expected = str(packages_dir) if value == "<packages>" else value
            assert field in step, f"{name} has no {field}: {step}"
            assert step[field] == expected, f"{name}.{field} is {step[field]!r}, documented {expected!r}"
    module_file = Path(steps(result)["test_import"]["module_file"])
    assert module_file.as_posix().endswith("colorama/__init__.py"), module_file
    assert module_file.resolve().is_relative_to(packages_dir.resolve()), module_file
    for field, value in documented["summary"].items():
        assert result["summary"][field] is value, f"summary.{field} is {result['summary'][field]!r}, documented {value}"


def load_workflow(path: Path = WORKFLOW) -> ModuleType:
    """Load the workflow by path, as a host does (a fresh module each time)."""
    spec = importlib.util.spec_from_file_location(f"workflow_under_test_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def process_state_restored(tmp_path: Path) -> Iterator[None]:
    """Undo what activating a generation does to this process: sys.path, and modules imported from ``tmp_path``."""
    path, before = list(sys.path), state.current()
    try:
        yield
    finally:
        sys.path[:] = path
        fresh = state.reset()  # and this process's record in the test's packages folder goes
        fresh.site_dir, fresh.first = before.site_dir, before.first
        root = str(tmp_path.resolve())
        for name, module in list(sys.modules.items()):
            where = getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", []) or []), None)
            if where and os.path.realpath(where).startswith(root + os.sep):
                del sys.modules[name]
        importlib.invalidate_caches()


@pytest.fixture(autouse=True)
def _restore_process(tmp_path: Path) -> Iterator[None]:
    with process_state_restored(tmp_path):
        yield


@pytest.fixture
def workflow() -> ModuleType:
    return load_workflow()


def steps(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["step"]: step for step in result["steps"]}


def names(result: dict[str, Any]) -> list[str]:
    return [step["step"] for step in result["steps"]]


def assert_result_shape(result: dict[str, Any]) -> None:
    """Every documented key is there, whatever happened, and the result is JSON."""
    assert set(result) == {"success", "package", "error", "steps", "summary"}
    assert set(result["summary"]) == {"already_installed", "import_successful", "usage_successful", "all_successful"}
    for step in result["steps"]:
        assert {"step", "status", "message"} <= set(step), step
        assert step["status"] in {"success", "error", "skipped", "already_installed", "not_installed"}, step
    json.dumps(result)


def test_first_call_installs_and_second_finds_it_installed(repo: Repo, workflow: ModuleType) -> None:
    first = workflow.run({"package": "colorama"})
    assert_result_shape(first)
    assert first["success"] is True and first["error"] is None, first
    assert first["package"] == "colorama"
    assert names(first) == ALL_STEPS
    by_step = steps(first)
    assert by_step["verify_packages_dir"]["path"] == str(repo.packages_dir)
    assert by_step["check_existing"]["status"] == "not_installed"
    assert by_step["install"]["status"] == "success"
    assert (by_step["install"]["version"], by_step["install"]["provided_by"]) == ("0.4.6", "generation")
    imported = by_step["test_import"]
    assert imported["status"] == "success" and imported["from_packages"] is True
    assert Path(imported["module_file"]).resolve().is_relative_to(repo.packages_dir.resolve())
    usage = by_step["test_usage"]
    assert usage["status"] == "success"
    assert usage["checks"] == {"has_fore": True, "has_back": True, "has_style": True}
    assert (usage["has_fore"], usage["has_back"], usage["has_style"]) == (True, True, True)  # on the step too
    assert first["summary"] == {
        "already_installed": False,
        "import_successful": True,
        "usage_successful": True,
        "all_successful": True,
    }
    assert repo.installed() == {"colorama": "0.4.6"}

    second = workflow.run({"package": "colorama"})
    assert_result_shape(second)
    assert second["success"] is True
    assert names(second) == ["verify_packages_dir", "check_existing", "test_import", "test_usage"]
    assert steps(second)["check_existing"]["status"] == "already_installed"
    assert second["summary"]["already_installed"] is True and second["summary"]["all_successful"] is True
    assert steps(second)["test_import"]["from_packages"] is True

    # A restarted host (a new process) finds it installed too: nothing is installed again.
    proc = python_with_bootstrap(
        "import importlib.util, json\n"
        f"spec = importlib.util.spec_from_file_location('wf', {str(WORKFLOW)!r})\n"
        "wf = importlib.util.module_from_spec(spec); spec.loader.exec_module(wf)\n"
        "print(json.dumps(wf.run({'package': 'colorama'})))\n"
    )
    assert proc.returncode == 0, proc.stderr
    restarted = json.loads(proc.stdout.splitlines()[-1])
    assert restarted["summary"]["already_installed"] is True and restarted["success"] is True, restarted
    assert "install" not in names(restarted)


def test_default_package_is_colorama(repo: Repo, workflow: ModuleType) -> None:
    result = workflow.run({})
    assert result["success"] is True, result
    assert result["package"] == "colorama"
    assert steps(result)["test_usage"]["test"] == "Terminal color formatting"


def test_the_documented_call_answers_the_documented_fields_first_and_later(repo: Repo, workflow: ModuleType) -> None:
    """Field by field, the platform's documented response: a first run that installs, later runs that find it."""
    assert_documented(workflow.run(DOCUMENTED_CALL), DOCUMENTED_FIRST_RUN, repo.packages_dir)
    assert_documented(workflow.run(DOCUMENTED_CALL), DOCUMENTED_LATER_RUN, repo.packages_dir)
    # A fresh load of the workflow (a restarted host loads it again): still a later run.
    assert_documented(load_workflow().run(DOCUMENTED_CALL), DOCUMENTED_LATER_RUN, repo.packages_dir)


@pytest.mark.parametrize(
    ("package", "module", "test", "checks"),
    [
        ("tabulate", "tabulate", "Table formatting", {"renders_table", "has_headers", "has_data"}),
        ("python-dateutil", "dateutil", "Date parsing", {"parses_date", "parses_words"}),
        ("PyYAML", "yaml", "YAML round trip", {"dumps", "round_trip", "loads"}),
        # No known import name and no top_level.txt: read from the distribution's RECORD.
        ("bsf-renamed", "bsf_other_name", "Generic import check", {"has_attributes", "version_found"}),
    ],
)
def test_each_package_is_imported_under_its_module_name_and_used(
    repo: Repo, workflow: ModuleType, package: str, module: str, test: str, checks: set[str]
) -> None:
    result = workflow.run({"package": package})
    assert result["success"] is True, result
    imported, usage = steps(result)["test_import"], steps(result)["test_usage"]
    assert imported["module"] == module and imported["from_packages"] is True
    assert usage["test"] == test
    assert usage["checks"] == dict.fromkeys(checks, True)
    assert all(usage[check] is True for check in checks)  # each check on the step itself too


def test_a_failing_usage_check_is_reported_with_its_checks(repo: Repo, workflow: ModuleType) -> None:
    """colorama 0.4.5 of the fixture index is broken on purpose: its colours are not escape codes."""
    result = workflow.run({"package": "colorama==0.4.5"})
    assert_result_shape(result)
    assert result["success"] is False
    usage = result["steps"][-1]
    assert (usage["step"], usage["status"]) == ("test_usage", "error")
    assert usage["checks"] == {"has_fore": False, "has_back": False, "has_style": False}
    assert (usage["has_fore"], usage["has_back"], usage["has_style"]) == (False, False, False)
    assert "has_fore" in usage["message"] and result["error"] == usage["message"]
    assert result["summary"]["import_successful"] is True and result["summary"]["usage_successful"] is False
    assert result["summary"]["all_successful"] is False


def test_an_installed_version_that_does_not_satisfy_the_request_is_not_installed(
    repo: Repo, workflow: ModuleType
) -> None:
    assert workflow.run({"package": "bsf-alpha==1.0"})["success"] is True
    result = workflow.run({"package": "bsf-alpha>=2"})
    assert result["success"] is True, result
    assert steps(result)["check_existing"]["status"] == "not_installed"
    assert steps(result)["install"]["version"] == "2.0"
    assert repo.installed()["bsf-alpha"] == "2.0"


def test_a_package_the_host_provides_is_not_installed_into_the_folder(repo: Repo, workflow: ModuleType) -> None:
    result = workflow.run({"package": "packaging"})
    assert result["success"] is True, result
    assert steps(result)["install"]["provided_by"] == "host"
    assert steps(result)["test_import"]["from_packages"] is False  # the host's own copy


def test_an_unknown_package_fails_in_the_install_step(repo: Repo, workflow: ModuleType) -> None:
    assert workflow.run({"package": "colorama"})["success"] is True
    result = workflow.run({"package": "bsf-does-not-exist"})
    assert_result_shape(result)
    assert result["success"] is False
    assert names(result) == ["verify_packages_dir", "check_existing", "install"]
    install = steps(result)["install"]
    assert install["status"] == "error" and "bsf-does-not-exist" in install["message"]
    assert "\n" not in install["message"] and result["error"] == install["message"]
    assert not any(result["summary"].values())
    assert repo.installed() == {"colorama": "0.4.6"}  # the previous set keeps serving


@pytest.mark.parametrize(
    "input_data",
    [
        {"package": 42},
        {"package": None},
        {"package": ""},
        {"package": ["colorama"]},
        {"package": "colorama>=>1"},
        {"package": "colorama @ https://example.invalid/colorama.whl"},
        {"package": "colorama", "test_import": "yes"},
        "colorama",
        ["colorama"],
        42,
    ],
)
def test_bad_input_is_a_failed_result_never_an_exception(repo: Repo, workflow: ModuleType, input_data: Any) -> None:
    result = workflow.run(input_data)
    assert_result_shape(result)
    assert result["success"] is False
    assert names(result) == ["validate_input"]
    assert result["steps"][0]["status"] == "error" and result["error"] == result["steps"][0]["message"]
    assert not any(result["summary"].values())
    assert not repo.manifest_path.exists()  # nothing was installed


def test_test_import_false_skips_the_import_step(repo: Repo, workflow: ModuleType) -> None:
    result = workflow.run({"package": "colorama", "test_import": False})
    assert result["success"] is True, result
    assert steps(result)["test_import"]["status"] == "skipped"
    assert steps(result)["test_usage"]["status"] == "success"  # the usage test imports it itself
    assert result["summary"]["import_successful"] is False and result["summary"]["all_successful"] is False


def test_test_usage_false_skips_the_usage_step(repo: Repo, workflow: ModuleType) -> None:
    result = workflow.run({"package": "colorama", "test_usage": False})
    assert result["success"] is True, result
    assert steps(result)["test_usage"]["status"] == "skipped" and "checks" not in steps(result)["test_usage"]
    assert result["summary"]["import_successful"] is True and result["summary"]["usage_successful"] is False


def test_a_packages_path_that_is_a_file_fails_the_first_step(repo: Repo, workflow: ModuleType) -> None:
    repo.packages_dir.write_text("not a folder")
    result = workflow.run({"package": "colorama"})
    assert result["success"] is False
    assert names(result) == ["verify_packages_dir"] and "not a folder" in result["error"]


def test_unexpected_errors_become_failed_steps(
    repo: Repo, workflow: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_ensure(requirement: str, **options: Any) -> dict[str, Any]:
        raise RuntimeError("ensure had a bug")

    monkeypatch.setattr(bootstrap, "ensure", broken_ensure)
    result = workflow.run({"package": "colorama"})
    assert result["success"] is False
    assert steps(result)["install"] == {
        "step": "install",
        "status": "error",
        "message": "RuntimeError: ensure had a bug",
    }

    def broken_manifest(packages_dir: object = None) -> dict[str, Any]:
        raise OSError("the share went away")

    monkeypatch.setattr(bootstrap, "read_manifest", broken_manifest)
    result = workflow.run({"package": "colorama"})
    assert result["success"] is False
    assert steps(result)["check_existing"]["status"] == "error"
    assert "the share went away" in result["error"]


@pytest.mark.network
@pytest.mark.parametrize(
    ("package", "test"),
    [
        ("colorama", "Terminal color formatting"),
        ("tabulate", "Table formatting"),
        ("python-dateutil", "Date parsing"),
        ("pyyaml", "YAML round trip"),
    ],
)
def test_real_packages_from_the_public_index(
    repo: Repo, workflow: ModuleType, monkeypatch: pytest.MonkeyPatch, package: str, test: str
) -> None:
    """As an operator would: the public index, no find-links, the real projects."""
    monkeypatch.delenv("PIP_NO_INDEX")
    monkeypatch.delenv("PIP_FIND_LINKS")
    first = workflow.run({"package": package})
    assert first["success"] is True and first["summary"]["all_successful"] is True, first
    assert first["summary"]["already_installed"] is False and "install" in names(first)
    usage = steps(first)["test_usage"]
    assert usage["test"] == test and usage["checks"] and all(usage["checks"].values()), usage
    assert steps(first)["test_import"]["from_packages"] is True
    second = workflow.run({"package": package})
    assert second["summary"]["already_installed"] is True and "install" not in names(second), second
    assert second["summary"]["all_successful"] is True
    if package == "colorama":  # the platform's documented call, on the real colorama
        assert_documented(first, DOCUMENTED_FIRST_RUN, repo.packages_dir)
        assert_documented(second, DOCUMENTED_LATER_RUN, repo.packages_dir)


def test_a_package_present_only_as_a_dependency_is_recorded_so_it_stays(repo: Repo, workflow: ModuleType) -> None:
    from bootstrap.pipeline.sync import sync

    repo.write("bsf-beta==1.0")  # pulls in bsf-alpha
    sync(repo.settings())

    result = workflow.run({"package": "bsf-alpha"})

    assert result["success"] is True, result
    assert steps(result)["check_existing"]["status"] == "not_installed"
    assert steps(result)["install"]["source"] == "runtime"
    repo.write("bsf-gamma")  # the package that pulled it in goes
    sync(repo.settings())
    assert "bsf-alpha" in repo.installed(), "recorded at run time: it stays"
