"""bootstrap.execute: an org's workflow runs in this process when its set agrees with it, else in a worker.

Real org sets (synced with the real pipeline from the fixture wheelhouse), real worker processes, real kills.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

import bootstrap
from bootstrap import azure_functions, cli
from bootstrap.errors import WorkflowError
from bootstrap.host import isolation, workers
from bootstrap.store import paths, registry
from bootstrap.store.layout import Layout
from tests.conftest import Repo
from tests.test_azure_functions import handlers_of

pytestmark = pytest.mark.usefixtures("clean_process")  # every test: the process as it was after it

# Imports each module named in inputData["modules"] twice (the statement and importlib.import_module) and
# says what it got; reads a distribution's version through importlib.metadata; may sleep (after writing a
# marker file, so a test knows run() is under way).
WHICH = """\
import importlib, importlib.metadata, os, sys, time


def run(input_data):
    found = {}
    for name in input_data.get("modules", []):
        got = []
        try:
            namespace = {}
            exec(f"import {name} as module", namespace)
            got.append(getattr(namespace["module"], "__version__", "?"))
        except ModuleNotFoundError:
            got.append(None)
        try:
            got.append(getattr(importlib.import_module(name), "__version__", "?"))
        except ModuleNotFoundError:
            got.append(None)
        found[name] = got
    metadata = {}
    for dist in input_data.get("dists", []):
        try:
            metadata[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            metadata[dist] = None
    if input_data.get("marker"):
        open(input_data["marker"], "w").close()
    if input_data.get("print"):
        print("a workflow's own print", flush=True)
        os.write(1, b"and a write on fd 1\\n")
    time.sleep(input_data.get("sleep", 0))
    return {"modules": found, "metadata": metadata, "pid": os.getpid()}
"""

# Conflicting pins of one package (bsf-alpha 1.0 and 2.0) for two orgs; a third org adds bsf-gamma; a fourth
# adds a distribution to the namespace package ("jaraco") the workspace already has.
ORG_SETS = {  # each org's own file: the workspace's jaraco.functools==1.0 comes with it
    "org-old": ["bsf-alpha==1.0"],
    "org-new": ["bsf-alpha==2.0"],
    "org-extra": ["bsf-gamma==1.0"],
    "org-ns": ["jaraco.context==1.0"],
}


def make_org(repo: Repo, org: str, lines: list[str]) -> str:
    """Write ``org``'s own file (``orgs/<org>/requirements.txt`` in the repo) and sync it with the org sync
    (``python -m bootstrap sync --org``, in-process); return the org generation's id."""
    source = repo.root / "orgs" / org / "requirements.txt"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text("".join(line + "\n" for line in lines))
    assert cli.main(["sync", "--org", org]) == 0
    manifest = json.loads((Path(paths.org_packages_dir(str(repo.packages_dir), org)) / paths.MANIFEST_NAME).read_text())
    assert manifest["org"] == org
    return str(manifest["generation"])


@pytest.fixture
def orgs(repo: Repo) -> dict[str, str]:
    """A synced and activated workspace (jaraco.functools 1.0), the four orgs synced, the workflow in the
    repo folder: each org's generation id."""
    repo.write("jaraco.functools==1.0")
    bootstrap.startup()
    (repo.root / "which.py").write_text(WHICH)
    return {org: make_org(repo, org, lines) for org, lines in ORG_SETS.items()}


Run = Callable[..., dict[str, Any]]


@pytest.fixture
def run(repo: Repo) -> Run:
    def call(org: str | None, **input_data: Any) -> dict[str, Any]:
        return bootstrap.execute("which", input_data, org=org, settings=repo.settings())

    return call


def in_threads(*calls: Callable[[], Any]) -> list[Any]:
    """Run ``calls`` at once, each in its own thread; their results (or exceptions), in order."""
    results: list[Any] = [None] * len(calls)

    def one(index: int) -> None:
        try:
            results[index] = calls[index]()
        except BaseException as exc:
            results[index] = exc

    threads = [threading.Thread(target=one, args=(index,)) for index in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


def importable_here(name: str) -> list[bool]:
    """Whether this process, outside any execution, can import ``name`` (statement, import_module)."""
    found = []
    for how in (lambda: exec(f"import {name}", {}), lambda: importlib.import_module(name)):
        try:
            how()
            found.append(True)
        except ModuleNotFoundError:
            found.append(False)
    return found


def test_the_workspace_runs_in_this_process(orgs: dict[str, str], run: Run, repo: Repo) -> None:
    execution = run(None, modules=["jaraco.functools", "bsf_alpha"])
    assert execution["isolation"] == "in-process" and execution["org"] is None
    assert execution["generation"] == repo.manifest()["generation"]
    assert execution["result"]["pid"] == os.getpid()
    assert execution["result"]["modules"] == {"jaraco.functools": ["1.0", "1.0"], "bsf_alpha": [None, None]}
    assert execution["workflow"] == "which" and set(execution) == {
        "workflow",
        "org",
        "isolation",
        "generation",
        "result",
    }


def test_two_orgs_with_conflicting_pins_run_at_once_each_with_its_own_version(orgs: dict[str, str], run: Run) -> None:
    for _ in range(2):  # the second round reuses the worker
        old, new = in_threads(
            lambda: run("org-old", modules=["bsf_alpha"], dists=["bsf-alpha"], sleep=0.5),
            lambda: run("org-new", modules=["bsf_alpha"], dists=["bsf-alpha"], sleep=0.5),
        )
        assert old["result"]["modules"] == {"bsf_alpha": ["1.0", "1.0"]}, old
        assert new["result"]["modules"] == {"bsf_alpha": ["2.0", "2.0"]}, new
        assert old["result"]["metadata"] == {"bsf-alpha": "1.0"} and new["result"]["metadata"] == {"bsf-alpha": "2.0"}
        # Whichever came first took bsf-alpha in this process; the other runs in a worker for its generation.
        assert {old["isolation"], new["isolation"]} == {"in-process", "process"}
        inside = old if old["isolation"] == "in-process" else new
        outside = new if inside is old else old
        assert inside["result"]["pid"] == os.getpid() != outside["result"]["pid"]
        assert outside["generation"] == orgs[outside["org"]]
    assert importable_here("bsf_alpha") == [False, False]  # nor outside any execution, after both ran
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.version("bsf-alpha")


def test_an_org_with_an_extra_package_runs_in_process_and_keeps_it_its_own(
    orgs: dict[str, str], run: Run, repo: Repo
) -> None:
    extra = run("org-extra", modules=["bsf_gamma", "jaraco.functools"], dists=["bsf-gamma"])
    assert extra["isolation"] == "in-process" and extra["result"]["pid"] == os.getpid()
    assert extra["result"]["modules"] == {"bsf_gamma": ["1.0", "1.0"], "jaraco.functools": ["1.0", "1.0"]}
    assert extra["result"]["metadata"] == {"bsf-gamma": "1.0"}
    # Outside its executions, even after it imported bsf_gamma into this process: not importable, no metadata.
    assert importable_here("bsf_gamma") == [False, False]
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        importlib.metadata.version("bsf-gamma")
    # Nor from another org's execution (in-process too), nor from the workspace's.
    other = run("org-old", modules=["bsf_gamma"], dists=["bsf-gamma"])
    assert other["isolation"] == "in-process"
    assert other["result"]["modules"] == {"bsf_gamma": [None, None]} and other["result"]["metadata"] == {
        "bsf-gamma": None
    }
    assert run(None, modules=["bsf_gamma"])["result"]["modules"] == {"bsf_gamma": [None, None]}
    assert run("org-extra", modules=["bsf_gamma"])["result"]["modules"] == {"bsf_gamma": ["1.0", "1.0"]}  # still
    # An org's settings (settings.for_org) run for that org.
    through_settings = bootstrap.execute(
        "which", {"modules": ["bsf_gamma"]}, settings=repo.settings().for_org("org-extra")
    )
    assert through_settings["org"] == "org-extra" and through_settings["result"]["modules"] == {
        "bsf_gamma": ["1.0", "1.0"]
    }


def test_whether_an_import_works_does_not_depend_on_which_org_ran_first(orgs: dict[str, str], run: Run) -> None:
    modules = ["bsf_alpha", "bsf_gamma", "jaraco.functools"]
    expected = {
        None: {"bsf_alpha": [None, None], "bsf_gamma": [None, None], "jaraco.functools": ["1.0", "1.0"]},
        "org-old": {"bsf_alpha": ["1.0", "1.0"], "bsf_gamma": [None, None], "jaraco.functools": ["1.0", "1.0"]},
        "org-new": {"bsf_alpha": ["2.0", "2.0"], "bsf_gamma": [None, None], "jaraco.functools": ["1.0", "1.0"]},
        "org-extra": {"bsf_alpha": [None, None], "bsf_gamma": ["1.0", "1.0"], "jaraco.functools": ["1.0", "1.0"]},
    }
    for first in expected:
        workers.POOL.shutdown()
        isolation.reset()  # as a new host process: nothing admitted yet
        order = [first, *(org for org in expected if org != first)]
        for org in [*order, *order]:
            assert run(org, modules=modules)["result"]["modules"] == expected[org], (order, org)


def test_a_namespace_the_process_has_sends_the_org_to_a_worker(orgs: dict[str, str], run: Run) -> None:
    # jaraco.context is the org's own, but "jaraco" is this process's too (the workspace's jaraco.functools):
    # a top-level finder cannot serve it, so the org runs in a worker, where both are on one path.
    execution = run("org-ns", modules=["jaraco.context", "jaraco.functools"])
    assert execution["isolation"] == "process" and execution["result"]["pid"] != os.getpid()
    assert execution["result"]["modules"] == {"jaraco.context": ["1.0", "1.0"], "jaraco.functools": ["1.0", "1.0"]}
    assert importable_here("jaraco.context") == [False, False]


def test_a_worker_killed_mid_execution_fails_that_execution_and_the_next_gets_a_new_worker(
    orgs: dict[str, str], run: Run, tmp_path: Path
) -> None:
    assert run("org-old")["isolation"] == "in-process"  # bsf-alpha 1.0 is this process's now: org-new, a worker
    marker = tmp_path / "running"
    outcome, killed = in_threads(
        lambda: run("org-new", sleep=60, marker=str(marker)),
        lambda: kill_when(marker, "org-new"),
    )
    assert isinstance(outcome, WorkflowError) and outcome.reason == "crashed", outcome
    assert "worker process ended (SIGKILL)" in str(outcome) and "\n" not in str(outcome)
    again = run("org-new", modules=["bsf_alpha"])
    assert again["isolation"] == "process" and again["result"]["modules"] == {"bsf_alpha": ["2.0", "2.0"]}
    assert isinstance(killed, int) and again["result"]["pid"] != killed
    # Killed while idle, between executions: the next execution is not failed for it, it gets a new worker.
    os.kill(again["result"]["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while (
        registry.alive(again["result"]["pid"]) and not _zombie(again["result"]["pid"]) and time.monotonic() < deadline
    ):
        time.sleep(0.02)
    third = run("org-new", modules=["bsf_alpha"])
    assert (
        third["result"]["modules"] == {"bsf_alpha": ["2.0", "2.0"]} and third["result"]["pid"] != again["result"]["pid"]
    )


def kill_when(marker: Path, org: str) -> int:
    """SIGKILL ``org``'s worker once its run() is under way (the marker written)."""
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    (pid,) = workers.POOL.pids(org)
    os.kill(pid, signal.SIGKILL)
    return pid


def test_what_a_workflow_prints_in_a_worker_does_not_break_its_answer(
    orgs: dict[str, str], run: Run, capfd: pytest.CaptureFixture[str]
) -> None:
    run("org-old")
    execution = run("org-new", modules=["bsf_alpha"], print=True)
    assert execution["isolation"] == "process" and execution["result"]["modules"] == {"bsf_alpha": ["2.0", "2.0"]}
    assert "a workflow's own print" in capfd.readouterr().err


def test_a_workflow_that_fails_in_a_worker_is_one_line_and_the_worker_serves_on(
    orgs: dict[str, str], run: Run, repo: Repo
) -> None:
    (repo.root / "boom.py").write_text("def run(input_data):\n    raise ValueError('broke\\nsecond line')\n")
    run("org-old")
    with pytest.raises(WorkflowError, match=r"^workflow boom failed: ValueError: broke$"):
        bootstrap.execute("boom", {}, org="org-new", settings=repo.settings())
    (pid,) = workers.POOL.pids("org-new")
    assert run("org-new")["result"]["pid"] == pid


def test_errors_name_what_is_wrong(orgs: dict[str, str], repo: Repo) -> None:
    settings = repo.settings()
    for name, org, reason in [
        ("nope", None, "missing"),
        ("../which", None, "missing"),
        ("which", "Bad Org", "invalid"),
        ("which", "org-unknown", "org"),
    ]:
        with pytest.raises(WorkflowError) as caught:
            bootstrap.execute(name, {}, org=org, settings=settings)
        assert caught.value.reason == reason and "\n" not in str(caught.value)


def test_generations_in_use_are_recorded_for_gc(orgs: dict[str, str], run: Run, repo: Repo) -> None:
    run("org-old")  # in-process: this process's record
    run("org-new")  # a worker: the worker's own record
    for org in ("org-old", "org-new"):
        layout = Layout(paths.org_packages_dir(str(repo.packages_dir), org))
        assert orgs[org] in registry.generations_in_use(layout), org
    (pid,) = workers.POOL.pids("org-new")
    records = registry.process_records(Layout(paths.org_packages_dir(str(repo.packages_dir), "org-new")))
    assert [record["pid"] for record in records] == [pid]


def test_a_new_generation_of_an_org_retires_its_old_worker(orgs: dict[str, str], run: Run, repo: Repo) -> None:
    run("org-old")
    first = run("org-new")
    (old_pid,) = workers.POOL.pids("org-new")
    generation = make_org(repo, "org-new", [*ORG_SETS["org-new"], "bsf-gamma==1.0"])
    assert generation != first["generation"]
    second = run("org-new", modules=["bsf_gamma", "bsf_alpha"])
    assert second["generation"] == generation and second["result"]["pid"] != old_pid
    assert second["result"]["modules"] == {"bsf_gamma": ["1.0", "1.0"], "bsf_alpha": ["2.0", "2.0"]}
    assert workers.POOL.pids("org-new") == [second["result"]["pid"]]
    assert not registry.alive(old_pid) or _zombie(old_pid)


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


# --------------------------------------------------------------------------- the Azure Functions route


def route(repo: Repo, **options: Any) -> Callable[..., func.HttpResponse]:
    app = func.FunctionApp()
    azure_functions.register(app, settings=repo.settings(), org_header="X-Org-Id", **options)
    handler: Callable[[func.HttpRequest], func.HttpResponse] = handlers_of(app)["execute"]

    def call(name: str, body: dict[str, Any], org: str | None = None) -> func.HttpResponse:
        request = func.HttpRequest(
            "POST",
            f"/api/workflows/{name}/execute",
            headers={"X-Org-Id": org} if org is not None else {},
            route_params={"name": name},
            body=json.dumps(body).encode(),
        )
        return handler(request)

    return call


def test_the_route_runs_two_conflicting_orgs_at_once_from_the_header(orgs: dict[str, str], repo: Repo) -> None:
    call = route(repo)
    body = {"inputData": {"modules": ["bsf_alpha"], "sleep": 0.5}}
    old, new = in_threads(lambda: call("which", body, "org-old"), lambda: call("which", body, "org-new"))
    for response, version in ((old, "1.0"), (new, "2.0")):
        assert response.status_code == 200, response.get_body()
        assert json.loads(response.get_body())["modules"] == {"bsf_alpha": [version, version]}  # the result, as today
    assert (old.headers["X-Bootstrap-Org"], new.headers["X-Bootstrap-Org"]) == ("org-old", "org-new")
    assert {old.headers["X-Bootstrap-Isolation"], new.headers["X-Bootstrap-Isolation"]} == {"in-process", "process"}
    workspace = call("which", body)  # no header: the workspace
    assert workspace.status_code == 200 and workspace.headers["X-Bootstrap-Isolation"] == "in-process"
    assert "X-Bootstrap-Org" not in workspace.headers
    assert json.loads(workspace.get_body())["modules"] == {"bsf_alpha": [None, None]}


def test_the_route_refuses_a_bad_org_id_and_an_unsynced_org_in_one_line(orgs: dict[str, str], repo: Repo) -> None:
    call = route(repo)
    bad = call("which", {}, "../org-old")
    assert bad.status_code == 400
    assert json.loads(bad.get_body()) == {"error": f"the X-Org-Id header is not an org id: {paths.ORG_ID_RULE}"}
    unknown = call("which", {}, "org-nobody")
    assert unknown.status_code == 503 and unknown.headers["Retry-After"]
    assert json.loads(unknown.get_body())["error"].startswith("org org-nobody has no synced packages set")
    assert call("nope", {}, "org-old").status_code == 404


def test_without_an_org_header_option_the_header_is_ignored(orgs: dict[str, str], repo: Repo) -> None:
    app = func.FunctionApp()
    azure_functions.register(app, settings=repo.settings())
    request = func.HttpRequest(
        "POST",
        "/api/workflows/which/execute",
        headers={"X-Org-Id": "org-extra"},
        route_params={"name": "which"},
        body=json.dumps({"inputData": {"modules": ["bsf_gamma"]}}).encode(),
    )
    response = handlers_of(app)["execute"](request)
    assert response.status_code == 200 and json.loads(response.get_body())["modules"] == {"bsf_gamma": [None, None]}


def test_workers_end_when_the_host_process_ends(orgs: dict[str, str], tmp_path: Path) -> None:
    code = (
        "import bootstrap\nbootstrap.startup()\n"
        "execution = bootstrap.execute('which', {}, org='org-ns')\n"
        "assert execution['isolation'] == 'process', execution\n"
        "print(execution['result']['pid'], flush=True)\n"
    )
    with open(tmp_path / "host-stderr.txt", "w") as stderr:  # not a pipe: the worker inherits it
        host = subprocess.run(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=120
        )
    assert host.returncode == 0, (tmp_path / "host-stderr.txt").read_text()
    worker = int(host.stdout.strip())
    deadline = time.monotonic() + 30
    while registry.alive(worker) and not _zombie(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not registry.alive(worker) or _zombie(worker), "the worker outlived its host"


def test_an_org_set_that_cannot_be_trusted_is_not_run(orgs: dict[str, str], repo: Repo) -> None:
    """What a host imports is what was verified: an org's manifest naming a folder outside its packages, or an
    ``orgs`` folder every local user can write, is refused in one line, never imported from."""
    settings = repo.settings()
    org_root = Path(paths.org_packages_dir(str(repo.packages_dir), "org-extra"))
    manifest_file = org_root / paths.MANIFEST_NAME
    saved = manifest_file.read_text()
    elsewhere = repo.root / "evil" / "site"
    elsewhere.mkdir(parents=True)
    (elsewhere / "bsf_gamma.py").write_text("raise SystemExit('planted')\n")
    try:
        manifest_file.write_text(json.dumps({**json.loads(saved), "generation": "../../../repo/evil"}))
        with pytest.raises(WorkflowError) as caught:
            bootstrap.execute("which", {"modules": ["bsf_gamma"]}, org="org-extra", settings=settings)
        assert caught.value.reason == "org" and "packages are not served" in str(caught.value)
    finally:
        manifest_file.write_text(saved)
    os.chmod(org_root.parent, 0o777)
    try:
        with pytest.raises(WorkflowError) as caught:
            bootstrap.execute("which", {}, org="org-extra", settings=settings)
        assert "is writable by every local user" in str(caught.value)
    finally:
        os.chmod(org_root.parent, 0o700)
    assert bootstrap.execute("which", {}, org="org-extra", settings=settings)["isolation"] == "in-process"


def test_an_org_whose_own_package_a_shared_one_may_import_runs_in_a_worker(
    repo: Repo, run: Run, wheelhouse: Path
) -> None:
    """pandas imports ``tabulate`` when it finds it and keeps it: were an org's own tabulate found in-process,
    every later org (and the workspace) would get that org's. A package a shared distribution asks for under an
    extra therefore sends the org that has one of its own to a worker."""
    from tests.wheels import Dist, build_wheel, module

    user = Dist("bsf-optional-user", "1.0", module("bsf_optional_user", "1.0"), requires=('bsf-gamma; extra == "fmt"',))
    build_wheel(user, wheelhouse)
    repo.write("bsf-optional-user==1.0")
    bootstrap.startup()
    (repo.root / "which.py").write_text(WHICH)
    make_org(repo, "org-fmt", ["bsf-gamma==1.0"])
    make_org(repo, "org-plain", ["jaraco.context==1.0"])
    execution = run("org-fmt", modules=["bsf_gamma"])
    assert execution["isolation"] == "process"
    assert execution["result"]["modules"]["bsf_gamma"] == ["1.0", "1.0"]
    assert run("org-plain", modules=["jaraco.context"])["isolation"] == "in-process"
    assert importable_here("bsf_gamma") == [False, False]


COLORAMA = """
import importlib.metadata
import colorama


def run(input_data):
    return {"module": colorama.__version__, "metadata": importlib.metadata.version("colorama")}
"""


@pytest.mark.network
def test_two_orgs_on_conflicting_pins_of_a_real_package_at_once(
    repo: Repo, run: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    """colorama 0.4.5 for one org, 0.4.6 for another, from the public index, one workflow at once: each its own."""
    monkeypatch.delenv("PIP_NO_INDEX")
    monkeypatch.delenv("PIP_FIND_LINKS")
    repo.write("tabulate==0.9.0")
    bootstrap.startup()
    (repo.root / "colors.py").write_text(COLORAMA)
    make_org(repo, "old-colors", ["colorama==0.4.5"])
    make_org(repo, "new-colors", ["colorama==0.4.6"])

    def call(org: str) -> Callable[[], dict[str, Any]]:
        return lambda: bootstrap.execute("colors", {}, org=org, settings=repo.settings())

    for _round in range(2):
        old, new = in_threads(call("old-colors"), call("new-colors"))
        assert old["result"] == {"module": "0.4.5", "metadata": "0.4.5"}, old
        assert new["result"] == {"module": "0.4.6", "metadata": "0.4.6"}, new
        assert "process" in (old["isolation"], new["isolation"])  # never both in this one process
