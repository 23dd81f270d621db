"""bootstrap.azure_functions: the registered functions, called with real azure.functions.HttpRequest objects."""

from __future__ import annotations

import functools
import http.server
import json
import logging
import os
import re
import shutil
import sys
import threading
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

from bootstrap import azure_functions
from bootstrap.host import child, live
from tests.conftest import Repo, local_server, python_with_bootstrap
from tests.test_watch import WAIT, save_by_rename, wait_for
from tests.test_workflow import (
    DOCUMENTED_CALL,
    DOCUMENTED_FIRST_RUN,
    DOCUMENTED_LATER_RUN,
    WORKFLOW,
    assert_documented,
    process_state_restored,
)

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
    return handlers_of(app)


def handlers_of(app: func.FunctionApp) -> dict[str, Handler]:
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
    response = execute_response(handlers, name, body)
    return response.status_code, json.loads(response.get_body())


def execute_response(handlers: dict[str, Handler], name: str, body: bytes | dict[str, Any]) -> func.HttpResponse:
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    request = func.HttpRequest("POST", f"/api/workflows/{name}/execute", route_params={"name": name}, body=raw)
    response = handlers["execute"](request)
    assert response.mimetype == "application/json"
    return response


@pytest.fixture
def workflows(repo: Repo) -> Path:
    """Where the platform keeps its workflows: the repo folder's top level, beside requirements.txt (the
    default), with the test workflow and two more."""
    folder = repo.root
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


def test_the_documented_call_answers_the_documented_response_field_by_field(repo: Repo, workflows: Path) -> None:
    """POST /api/workflows/test_custom_packages_runtime/execute with the documented body, the workflow at the
    repo's top level: the first call installs, the second finds it installed, as the platform documents."""
    handlers = make_app(repo)
    status, first = execute(handlers, WORKFLOW_NAME, {"inputData": DOCUMENTED_CALL})
    assert status == 200, first
    assert_documented(first, DOCUMENTED_FIRST_RUN, repo.packages_dir)
    status, second = execute(handlers, WORKFLOW_NAME, {"inputData": DOCUMENTED_CALL})
    assert status == 200, second
    assert_documented(second, DOCUMENTED_LATER_RUN, repo.packages_dir)


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
    """A workflow-looking file outside the workflow folders (one level above the repo) that records being run,
    and links to it inside both folders (the repo's top level and its workflows/ subfolder)."""
    marker = tmp_path / "outside-ran"
    evil = tmp_path / "evil.py"
    evil.write_text(f"open({str(marker)!r}, 'w').close()\ndef run(input_data):\n    return {{'pwned': True}}\n")
    (workflows / "linked.py").symlink_to(evil)
    (workflows / "workflows").mkdir()
    (workflows / "workflows" / "linked_below.py").symlink_to(evil)
    (workflows / "sub").mkdir()
    (workflows / "sub" / "nested.py").write_text(evil.read_text())
    (workflows / "_helper.py").write_text(evil.read_text())
    (workflows / "function_app.py").write_text(evil.read_text())  # the host's own entry point, if it is here
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
        "linked_below",
        "_helper",
        "function_app",
        "workflows",
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
    assert str(repo.root) not in answer["error"] and str(tmp_path) not in answer["error"]  # no folder for callers
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
    logged = [record.getMessage() for record in caplog.records if "workflow boom failed" in record.getMessage()]
    assert logged and "Traceback (most recent call last)" in logged[0]  # the traceback went to the log


def test_a_workflow_traceback_in_the_log_has_no_password(
    repo: Repo, workflows: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (workflows / "leaky.py").write_text(
        "def run(input_data):\n    raise RuntimeError('pip failed:\\n  https://bob:s3cret@index.example/simple')\n"
    )
    handlers = make_app(repo)
    with caplog.at_level(logging.ERROR, logger="bootstrap"):
        status, _ = execute(handlers, "leaky", {"inputData": {}})
    assert status == 500
    assert "leaky.py" in caplog.text and "****@index.example" in caplog.text  # the traceback, redacted
    assert "s3cret" not in caplog.text  # before: logger.exception printed the exception as raised


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


def test_a_workflow_at_the_repo_top_level_is_found_as_is_one_in_a_workflows_subfolder(
    repo: Repo, caplog: pytest.LogCaptureFixture
) -> None:
    """The platform keeps its workflows at the repo folder's top level; a workflows/ subfolder works too, and
    when both have a name, the top level's runs (logged)."""
    repo.write("bsf-alpha==1.0")
    (repo.root / "workflows").mkdir()
    (repo.root / "top.py").write_text("def run(input_data):\n    return {'from': 'top'}\n")
    (repo.root / "workflows" / "below.py").write_text("def run(input_data):\n    return {'from': 'below'}\n")
    (repo.root / "both.py").write_text("def run(input_data):\n    return {'from': 'top'}\n")
    (repo.root / "workflows" / "both.py").write_text("def run(input_data):\n    return {'from': 'below'}\n")
    handlers = make_app(repo)
    assert execute(handlers, "top", {}) == (200, {"from": "top"})
    assert execute(handlers, "below", {}) == (200, {"from": "below"})
    with caplog.at_level(logging.WARNING, logger="bootstrap"):
        assert execute(handlers, "both", {}) == (200, {"from": "top"})
    assert any("the repo folder's comes first" in record.getMessage() for record in caplog.records), caplog.text


def test_workflows_dir_can_be_given(repo: Repo, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "hello.py").write_text("def run(input_data):\n    return {'hello': input_data.get('who')}\n")
    handlers = make_app(repo, workflows_dir=elsewhere)
    assert execute(handlers, "hello", {"inputData": {"who": "you"}}) == (200, {"hello": "you"})


# After the README's function_app.py: the platform's documented call, through the registered handler, twice.
README_CALLER = """
import json
import bootstrap
functions = {{f.get_function_name(): f.get_user_function() for f in app.get_functions()}}
print(json.dumps(sorted(functions)))
body = json.dumps({{"inputData": {call}}}).encode()
for _ in range(2):
    request = func.HttpRequest(
        "POST", "/api/workflows/{name}/execute", route_params={{"name": "{name}"}}, body=body
    )
    response = functions["bootstrap_execute_workflow"](request)
    print(json.dumps({{"status": response.status_code, "body": json.loads(response.get_body())}}))
bootstrap.stop()
"""


def test_the_readme_function_app_example_runs_the_documented_call(repo: Repo) -> None:
    """The README's function_app.py, as the platform would have it, with BOOTSTRAP_* pointing at a repo laid out
    as the platform lays it out (the test workflow at the top level): the documented call answers as documented."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Running inside Azure Functions", 1)[1].split("\n## ", 1)[0]
    (example,) = re.findall(r"```py\n(.*?)```", section, flags=re.DOTALL)
    repo.write("bsf-alpha==1.0")
    shutil.copy(WORKFLOW, repo.root / WORKFLOW.name)
    caller = README_CALLER.format(call=repr(DOCUMENTED_CALL), name=WORKFLOW_NAME)
    proc = python_with_bootstrap(example + caller)
    assert proc.returncode == 0, proc.stderr
    names, first, second = (json.loads(line) for line in proc.stdout.splitlines()[-3:])
    assert names == ["bootstrap_execute_workflow", "bootstrap_health"]
    assert first["status"] == 200, first
    assert_documented(first["body"], DOCUMENTED_FIRST_RUN, repo.packages_dir)
    assert second["status"] == 200, second
    assert_documented(second["body"], DOCUMENTED_LATER_RUN, repo.packages_dir)
    assert repo.installed() == {"bsf-alpha": "1.0", "colorama": "0.4.6"}  # register()'s sync, then the workflow's


def test_the_host_records_the_generation_it_runs_on_so_gc_keeps_it(repo: Repo, tmp_path: Path) -> None:
    repo.write("bsf-gamma")
    with process_state_restored(tmp_path):
        azure_functions.register(func.FunctionApp(), workflows_dir=tmp_path)
        records = list((repo.packages_dir / "processes").glob(f"*-{os.getpid()}.json"))
        assert len(records) == 1
        assert repo.manifest()["generation"] in json.loads(records[0].read_text())["generations"]


# register(block=False, watch=...): the host's import of function_app.py never waits for a sync.

USES_ALPHA = "import bsf_alpha\ndef run(input_data):\n    return {'alpha': bsf_alpha.__version__}\n"


@pytest.fixture
def held_index(wheelhouse: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """pip's find-links on 127.0.0.1, answering nothing until the test sets the event it returns: a sync that
    needs a package is held, however fast the machine (never a timing)."""
    release = threading.Event()

    class Held(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            release.wait(WAIT)
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:
            pass

    with local_server(functools.partial(Held, directory=str(wheelhouse))) as url:
        monkeypatch.setenv("PIP_FIND_LINKS", url + "/")
        try:
            yield release
        finally:
            release.set()
            live.stop(WAIT)  # the background sync (or the watcher) ends inside the test


def test_register_block_false_returns_before_the_sync_and_a_call_waits_for_it(
    repo: Repo, held_index: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo.write("bsf-alpha==1.0")
    (repo.root / "uses_alpha.py").write_text(USES_ALPHA)
    handlers = make_app(repo, block=False)
    assert not repo.manifest_path.exists(), "register() returned while the sync is still held at the index"

    waiting = threading.Event()
    real_wait = live.wait_until_synced

    def wait_until_synced(timeout: float | None = None) -> bool:
        waiting.set()
        return real_wait(timeout)

    monkeypatch.setattr(live, "wait_until_synced", wait_until_synced)
    answers: list[tuple[int, dict[str, Any]]] = []
    call = threading.Thread(target=lambda: answers.append(execute(handlers, "uses_alpha", {})))
    call.start()
    assert waiting.wait(WAIT), "the call did not wait for the first sync"
    held_index.set()  # the index answers: the sync goes on, and the waiting call with it
    call.join(WAIT)
    # The workflow imports bsf_alpha when it loads: it ran after the sync, not into a ModuleNotFoundError.
    assert answers == [(200, {"alpha": "1.0"})]
    assert repo.installed() == {"bsf-alpha": "1.0"}


def test_a_call_that_waits_past_first_sync_timeout_is_503_with_retry_after(
    repo: Repo, held_index: threading.Event
) -> None:
    repo.write("bsf-alpha==1.0")
    (repo.root / "uses_alpha.py").write_text(USES_ALPHA)
    handlers = make_app(repo, block=False, first_sync_timeout=0.01)
    response = execute_response(handlers, "uses_alpha", {})  # the sync is held: it cannot have finished
    assert response.status_code == 503
    assert "still being installed" in json.loads(response.get_body())["error"]
    assert response.headers["Retry-After"] == "30"
    held_index.set()
    assert live.wait_until_synced(WAIT)
    assert execute(handlers, "uses_alpha", {}) == (200, {"alpha": "1.0"})


def test_register_watch_follows_the_requirements_file(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    """block=False, watch=True (the README's choice for the platform): the first call waits for the watcher's
    first sync; a package added to the file later is importable by the next workflow call, without a restart."""
    monkeypatch.setenv("BOOTSTRAP_WATCH_DEBOUNCE", "0.2")
    repo.write("bsf-alpha==1.0")
    (repo.root / "uses_alpha.py").write_text(USES_ALPHA)
    (repo.root / "uses_gamma.py").write_text("def run(input_data):\n    import bsf_gamma\n    return {'gamma': True}\n")
    try:
        handlers = make_app(repo, block=False, watch=True)
        assert execute(handlers, "uses_alpha", {}) == (200, {"alpha": "1.0"})
        save_by_rename(repo.requirements, "bsf-alpha==1.0", "bsf-gamma")
        wait_for(lambda: execute(handlers, "uses_gamma", {})[0] == 200, "the watcher's sync of bsf-gamma")
        assert set(repo.installed()) == {"bsf-alpha", "bsf-gamma"}
    finally:
        live.stop(WAIT)


# What callers see: no index URLs, no internal paths (the log keeps them).

SECRET_INDEX = "https://alice:s3cret@pypi.internal.example/simple"
INTERNAL_PATH = "/srv/operator/wheelhouse"


def test_the_health_body_hides_index_urls_and_paths_the_log_keeps_them(
    repo: Repo, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    repo.write("bsf-alpha==1.0")
    handlers = make_app(repo)
    message = f"requirements.txt:1: bsf-x was not found on index {SECRET_INDEX} and find-links {INTERNAL_PATH}"
    report = {
        "healthy": False,
        "problems": [f"the last sync failed at resolve: {message}", f"run `chmod o-w {repo.packages_dir}`"],
        "notes": [f"staging/x is left from an interrupted sync ({repo.packages_dir}/staging/x)"],
        "site_dir": f"{repo.packages_dir}/generations/abc/site",
        "requirements_file": str(repo.requirements),
        "packages_dir": str(repo.packages_dir),
        "last_error": {"message": message, "inputs": {str(repo.requirements): "ab12", str(repo.root / "x.lock"): None}},
    }
    monkeypatch.setattr(child, "run", lambda *args, **kwargs: [{"event": "report", "report": report}])
    with caplog.at_level(logging.DEBUG, logger="bootstrap"):
        response = handlers["health"](func.HttpRequest("GET", "/api/health", body=b""))
    body = response.get_body().decode()
    assert response.status_code == 503
    for secret in ("s3cret", "alice", "pypi.internal.example", INTERNAL_PATH, str(repo.root), str(repo.packages_dir)):
        assert secret not in body, (secret, body)
    public = json.loads(body)
    assert public["problems"] == [
        "the last sync failed at resolve: requirements.txt:1: bsf-x was not found on index <url> and find-links <path>",
        "run `chmod o-w <packages>`",
    ]
    assert public["site_dir"] == "<packages>/generations/abc/site"
    assert public["requirements_file"] == "<repo>/requirements.txt"
    assert set(public["last_error"]["inputs"]) == {"<repo>/requirements.txt", "<repo>/x.lock"}
    # The operator's log has it all (credentials redacted, as in every log line).
    assert "https://****@pypi.internal.example/simple" in caplog.text and INTERNAL_PATH in caplog.text
    assert str(repo.packages_dir) in caplog.text and "s3cret" not in caplog.text


def test_a_real_failed_sync_on_a_private_index_health_hides_it_check_json_keeps_it(
    repo: Repo,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    run_cli,  # type: ignore[no-untyped-def]
) -> None:
    """An index with credentials that cannot be reached (a closed port): the sync fails, the health route says
    so without the URL or the wheelhouse's path; `check --json` on the command line gives both."""
    monkeypatch.delenv("PIP_NO_INDEX")
    monkeypatch.setenv("PIP_INDEX_URL", "http://alice:s3cret@127.0.0.1:9/simple")
    monkeypatch.setenv("BOOTSTRAP_INDEX_RETRIES", "0")
    wheelhouse = os.environ["PIP_FIND_LINKS"]
    repo.write("bsf-not-anywhere")
    handlers = make_app(repo)  # the sync fails; register() logs it and the host starts
    with caplog.at_level(logging.WARNING, logger="bootstrap"):
        status, public = get_health(handlers)
    assert status == 503
    text = json.dumps(public)
    assert "the last sync failed" in text and "<url>" in text and "<path>" in text, text
    for secret in ("s3cret", "127.0.0.1:9", wheelhouse, str(repo.root), str(repo.packages_dir)):
        assert secret not in text, (secret, text)
    assert "http://****@127.0.0.1:9/simple" in caplog.text and wheelhouse in caplog.text
    cli = run_cli("check", "--json")
    assert "http://****@127.0.0.1:9/simple" in cli.out and wheelhouse in cli.out and str(repo.packages_dir) in cli.out


def test_execute_error_bodies_hide_index_urls_and_paths_the_log_keeps_them(
    repo: Repo, workflows: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (workflows / "leaky.py").write_text(
        f"def run(input_data):\n    raise RuntimeError('cannot reach {SECRET_INDEX} from {INTERNAL_PATH}/x.whl')\n"
    )
    (workflows / "leaky_load.py").write_text(f"open({INTERNAL_PATH + '/missing.txt'!r})\n")
    handlers = make_app(repo)
    with caplog.at_level(logging.INFO, logger="bootstrap"):
        assert execute(handlers, "leaky", {}) == (
            500,
            {"error": "workflow leaky failed: RuntimeError: cannot reach <url> from <path>"},
        )
        status, answer = execute(handlers, "leaky_load", {})
        assert status == 500 and INTERNAL_PATH not in answer["error"] and "<path>" in answer["error"], answer
        status, answer = execute(handlers, "missing", {})
        assert (status, answer) == (404, {"error": "there is no workflow named 'missing'"})
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "https://****@pypi.internal.example/simple" in logged and f"{INTERNAL_PATH}/x.whl" in logged, logged
    assert f"{INTERNAL_PATH}/missing.txt" in logged and str(workflows) in logged, logged


@pytest.mark.parametrize(
    ("text", "public"),
    [
        (
            "requirements.txt:2: bad line; and/or 1/2, staging/trash-1",
            "requirements.txt:2: bad line; and/or 1/2, staging/trash-1",
        ),
        ("could not reach (http://u:p@10.0.0.5:8080/simple); retry", "could not reach (<url>); retry"),
        ("index https://bob:p@ss;w@rd@host/simple failed", "index <url> failed"),
        ("find-links file:///srv/wheels/x.whl", "find-links <url>"),
        ("cannot write /srv/a b: denied", "cannot write <path> b: denied"),
        ("chmod o-w /pk/packages/generations/abc/site.", "chmod o-w <packages>/generations/abc/site."),
        ("/pk/packages2 and /repo/x/requirements.txt:3: y", "<path> and <repo>/requirements.txt:3: y"),
    ],
)
def test_what_is_replaced_in_a_body_and_what_is_kept(text: str, public: str) -> None:
    from bootstrap.host.azure_functions import _Scrubber

    scrub = _Scrubber({"/pk/packages": "<packages>", "/repo/x": "<repo>"})
    assert scrub(text) == public
    assert scrub({text: [text]}) == {public: [public]}
