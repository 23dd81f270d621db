"""bootstrap.azure_functions: the registered functions, called with real azure.functions.HttpRequest objects."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

from bootstrap import azure_functions
from bootstrap.host import child
from tests.conftest import Repo, python_with_bootstrap
from tests.test_workflow import WORKFLOW, process_state_restored

Handler = Callable[[func.HttpRequest], func.HttpResponse]
WORKFLOW_NAME = WORKFLOW.stem


@pytest.fixture(autouse=True)
def _restore_process(tmp_path: Path) -> Iterator[None]:
    with process_state_restored(tmp_path):
        yield


def registered(app: func.FunctionApp) -> dict[str, Any]:
    """The app's functions by name (``get_functions`` may be called once per app: it checks names are unique)."""
    return {function.get_function_name(): function for function in app.get_functions()}


def make_app(repo: Repo, workflows_dir: Path | None = None, **options: Any) -> dict[str, Handler]:
    app = func.FunctionApp()
    azure_functions.register(app, settings=repo.settings(), workflows_dir=workflows_dir, **options)
    functions = registered(app)
    return {
        "health": functions["bootstrap_health"].get_user_function(),
        "execute": functions["bootstrap_execute_workflow"].get_user_function(),
    }


def get_health(handlers: dict[str, Handler]) -> tuple[int, dict[str, Any]]:
    response = handlers["health"](func.HttpRequest("GET", "/api/health", body=b""))
    assert response.mimetype == "application/json"
    return response.status_code, json.loads(response.get_body())


def execute(handlers: dict[str, Handler], name: str, body: bytes | dict[str, Any]) -> tuple[int, dict[str, Any]]:
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    request = func.HttpRequest("POST", f"/api/workflows/{name}/execute", route_params={"name": name}, body=raw)
    response = handlers["execute"](request)
    assert response.mimetype == "application/json"
    return response.status_code, json.loads(response.get_body())


@pytest.fixture
def workflows(repo: Repo) -> Path:
    """The repo's workflows folder (the default: beside requirements.txt), with the test workflow and two more."""
    folder = repo.root / "workflows"
    folder.mkdir()
    shutil.copy(WORKFLOW, folder / WORKFLOW.name)
    (folder / "echo.py").write_text("def run(input_data):\n    return {'got': input_data}\n")
    (folder / "boom.py").write_text(
        "def run(input_data):\n    raise ValueError('the workflow broke\\nsecond line of detail')\n"
    )
    return folder


def test_register_adds_two_http_functions_with_their_routes_and_auth_levels(repo: Repo) -> None:
    repo.write("bsf-alpha==1.0")
    app = func.FunctionApp()
    azure_functions.register(app, settings=repo.settings())
    functions = registered(app)
    assert set(functions) == {"bootstrap_health", "bootstrap_execute_workflow"}
    health_trigger = functions["bootstrap_health"].get_trigger()
    execute_trigger = functions["bootstrap_execute_workflow"].get_trigger()
    assert health_trigger.route == "health" and [str(m) for m in health_trigger.methods] == ["GET"]
    assert execute_trigger.route == "workflows/{name}/execute" and [str(m) for m in execute_trigger.methods] == ["POST"]
    assert health_trigger.auth_level == func.AuthLevel.ANONYMOUS
    assert execute_trigger.auth_level == func.AuthLevel.FUNCTION
    # The Python worker reads the handlers' annotations to bind the request: they must resolve.
    for function in functions.values():
        hints = typing.get_type_hints(function.get_user_function())
        assert hints == {"req": func.HttpRequest, "return": func.HttpResponse}
    # register() ran startup(): synced, and the generation is on this process's sys.path.
    assert repo.installed() == {"bsf-alpha": "1.0"}
    assert repo.manifest()["site_dir"] in sys.path


def test_auth_levels_and_names_are_options(repo: Repo) -> None:
    app = func.FunctionApp()
    azure_functions.register(
        app,
        settings=repo.settings(),
        health_auth_level=func.AuthLevel.FUNCTION,
        execute_auth_level=func.AuthLevel.ADMIN,
        function_name_prefix="pkgs_",
    )
    functions = registered(app)
    assert functions["pkgs_health"].get_trigger().auth_level == func.AuthLevel.FUNCTION
    assert functions["pkgs_execute_workflow"].get_trigger().auth_level == func.AuthLevel.ADMIN


def test_health_is_200_when_synced_and_while_a_sync_is_pending(repo: Repo) -> None:
    repo.write("bsf-alpha==1.0")
    handlers = make_app(repo)
    status, report = get_health(handlers)
    assert status == 200 and report["healthy"] is True, report
    assert report["generation"] == repo.manifest()["generation"]
    repo.write("bsf-alpha==2.0")  # not synced yet: degraded, and the probe passes
    status, report = get_health(handlers)
    assert status == 200 and report["healthy"] is True and report["state"] == "degraded"
    assert any("changed since the last sync" in reason for reason in report["pending"]), report


def test_health_is_503_when_the_requirements_file_has_a_bad_line(repo: Repo) -> None:
    repo.write("bsf-alpha==1.0", "colorama>=>1")
    handlers = make_app(repo)  # startup() logs the failure and keeps going: the host starts
    status, report = get_health(handlers)
    assert status == 503 and report["healthy"] is False
    assert any("requirements.txt:2" in problem for problem in report["problems"]), report


def test_health_is_503_when_the_check_itself_breaks(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    handlers = make_app(repo)

    def broken(*args: object, **kwargs: object) -> list[dict[str, Any]]:
        raise OSError("the share went away")

    monkeypatch.setattr(child, "run", broken)
    status, report = get_health(handlers)
    assert status == 503 and report["healthy"] is False
    assert report["problems"] == ["the health check failed: OSError: the share went away"]


def test_the_test_workflow_end_to_end(repo: Repo, workflows: Path) -> None:
    handlers = make_app(repo)
    status, first = execute(handlers, WORKFLOW_NAME, {"inputData": {"package": "colorama"}})
    assert status == 200, first
    assert first["success"] is True and first["summary"]["already_installed"] is False, first
    assert [step["step"] for step in first["steps"]] == [
        "verify_packages_dir",
        "check_existing",
        "install",
        "test_import",
        "test_usage",
    ]
    assert first["summary"]["all_successful"] is True
    assert repo.installed() == {"colorama": "0.4.6"}

    status, second = execute(handlers, WORKFLOW_NAME, {"inputData": {"package": "colorama"}})
    assert status == 200
    assert second["success"] is True and second["summary"]["already_installed"] is True, second
    assert "install" not in [step["step"] for step in second["steps"]]

    # The workflow's own failures are results (200), not server errors.
    status, failed = execute(handlers, WORKFLOW_NAME, {"inputData": {"package": "bsf-does-not-exist"}})
    assert status == 200 and failed["success"] is False and failed["steps"][-1]["step"] == "install"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", {}),
        (b"{}", {}),
        ({"inputData": None}, {}),
        ({"inputData": {"package": "x", "n": [1, 2]}}, {"package": "x", "n": [1, 2]}),
    ],
)
def test_input_data_reaches_the_workflow(
    repo: Repo, workflows: Path, body: bytes | dict[str, Any], expected: dict[str, Any]
) -> None:
    status, result = execute(make_app(repo), "echo", body)
    assert (status, result) == (200, {"got": expected})


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"inputData"', "must be a JSON object"),
        (b'{"inputData": [1, 2]}', "inputData must be a JSON object, not an array"),
        (b'{"inputData": "colorama"}', "inputData must be a JSON object, not a string"),
        (b'{"inputData": 3}', "inputData must be a JSON object, not a number"),
    ],
)
def test_a_bad_body_is_400_with_a_clear_message(repo: Repo, workflows: Path, body: bytes, message: str) -> None:
    marker = repo.root / "ran"
    (workflows / "marks.py").write_text(
        f"def run(input_data):\n    open({str(marker)!r}, 'w').close()\n    return {{}}\n"
    )
    status, answer = execute(make_app(repo), "marks", body)
    assert status == 400
    assert message in answer["error"], answer
    assert not marker.exists()  # the workflow did not run


@pytest.fixture
def outside(repo: Repo, workflows: Path, tmp_path: Path) -> Path:
    """A workflow-looking file outside the workflows folder that records being run, and a link to it inside."""
    marker = tmp_path / "outside-ran"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').close()\ndef run(input_data):\n    return {{'pwned': True}}\n")
    (repo.root / "evil.py").write_text(evil.read_text())  # one level up, beside requirements.txt
    (workflows / "linked.py").symlink_to(evil)
    (workflows / "sub").mkdir()
    (workflows / "sub" / "nested.py").write_text(evil.read_text())
    (workflows / "_helper.py").write_text(evil.read_text())
    return marker


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd",
        "../evil",
        "..%2Fevil",
        "..%2F..%2Fevil",
        "..\\evil",
        "/etc/passwd",
        "PLACEHOLDER_ABSOLUTE",
        "evil.py",
        "sub/nested",
        "sub.nested",
        "linked",
        "_helper",
        ".",
        "..",
        "",
        "missing",
        "echo\x00",
        "echo ",
        "x" * 500,
    ],
)
def test_a_name_that_is_not_a_workflow_file_is_404_and_touches_nothing_outside(
    repo: Repo, workflows: Path, outside: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    if name == "PLACEHOLDER_ABSOLUTE":
        name = str(tmp_path / "evil")
    handlers = make_app(repo)
    opened: list[str] = []
    real_open = os.open

    def spy(path: Any, *args: Any, **kwargs: Any) -> int:
        opened.append(os.path.realpath(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    status, answer = execute(handlers, name, {"inputData": {}})
    assert status == 404, answer
    assert "no workflow named" in answer["error"]
    assert not outside.exists()  # nothing outside the folder ran
    assert opened == []  # and nothing was even opened


def test_a_link_to_a_file_inside_the_folder_is_a_workflow(repo: Repo, workflows: Path) -> None:
    (workflows / "alias.py").symlink_to(workflows / "echo.py")
    status, result = execute(make_app(repo), "alias", {"inputData": {"a": 1}})
    assert (status, result) == (200, {"got": {"a": 1}})


def test_a_workflow_that_raises_is_500_with_one_line_and_the_traceback_in_the_log(
    repo: Repo, workflows: Path, caplog: pytest.LogCaptureFixture
) -> None:
    handlers = make_app(repo)
    with caplog.at_level(logging.ERROR, logger="bootstrap"):
        status, answer = execute(handlers, "boom", {"inputData": {}})
    assert status == 500
    assert answer == {"error": "workflow boom failed: ValueError: the workflow broke"}
    logged = [record for record in caplog.records if "workflow boom failed" in record.getMessage()]
    assert logged and logged[0].exc_info is not None  # the traceback went to the log


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def run(input_data):\n    return {\n", "cannot load workflow broken: SyntaxError"),
        ("import bsf_nowhere_at_all\n", "cannot load workflow broken: ModuleNotFoundError"),
        ("RUN = 1\n", "workflow broken has no run(input_data) function"),
        ("def run(input_data):\n    return {'me': run}\n", None),  # default=str makes it JSON
    ],
)
def test_a_broken_workflow_file_is_500(repo: Repo, workflows: Path, source: str, message: str | None) -> None:
    (workflows / "broken.py").write_text(source)
    status, answer = execute(make_app(repo), "broken", {})
    if message is None:
        assert status == 200 and answer["me"].startswith("<function run")
    else:
        assert status == 500 and answer["error"].startswith(message), answer


def test_an_edited_workflow_is_loaded_again(repo: Repo, workflows: Path) -> None:
    handlers = make_app(repo)
    (workflows / "counter.py").write_text(
        "CALLS = []\ndef run(input_data):\n    CALLS.append(1)\n    return {'v': 1, 'calls': len(CALLS)}\n"
    )
    assert execute(handlers, "counter", {}) == (200, {"v": 1, "calls": 1})
    assert execute(handlers, "counter", {}) == (200, {"v": 1, "calls": 2})  # unchanged: loaded once
    (workflows / "counter.py").write_text("def run(input_data):\n    return {'v': 2}\n")
    assert execute(handlers, "counter", {}) == (200, {"v": 2})


def test_workflows_dir_can_be_given(repo: Repo, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "hello.py").write_text("def run(input_data):\n    return {'hello': input_data.get('who')}\n")
    handlers = make_app(repo, workflows_dir=elsewhere)
    assert execute(handlers, "hello", {"inputData": {"who": "you"}}) == (200, {"hello": "you"})


def test_the_readme_function_app_example_runs(repo: Repo) -> None:
    """The README's function_app.py, as the platform would have it, with BOOTSTRAP_* pointing at a repo."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Running inside Azure Functions", 1)[1].split("\n## ", 1)[0]
    (example,) = re.findall(r"```py\n(.*?)```", section, flags=re.DOTALL)
    repo.write("bsf-alpha==1.0")
    proc = python_with_bootstrap(example + "\nprint(sorted(f.get_function_name() for f in app.get_functions()))\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[-2] == "['bootstrap_execute_workflow', 'bootstrap_health']"
    assert repo.installed() == {"bsf-alpha": "1.0"}  # register() ran startup()


def test_the_host_records_the_generation_it_runs_on_so_gc_keeps_it(repo: Repo, tmp_path: Path) -> None:
    repo.write("bsf-gamma")
    with process_state_restored(tmp_path):
        azure_functions.register(func.FunctionApp(), workflows_dir=tmp_path)
        records = list((repo.packages_dir / "processes").glob(f"*-{os.getpid()}.json"))
        assert len(records) == 1
        assert repo.manifest()["generation"] in json.loads(records[0].read_text())["generations"]
