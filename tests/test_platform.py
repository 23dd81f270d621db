"""The platform as it really runs, end to end: its function_app.py, its repo layout, its old habits, its restarts.

A repo laid out as the platform lays it out (the test workflow at the repo folder's top level), a packages
folder that already holds ``pip install --target`` content, and a ``function_app.py`` that still does
``sys.path.insert(0, "/home/.packages")`` before registering bootstrap's routes. Each host is a fresh
interpreter making the documented call through the real ``azure.functions`` objects; after a restart on
an emptied packages folder (ephemeral storage), the same call answers as a later run.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

from tests.conftest import Repo, python_with_bootstrap
from tests.test_legacy import pip_install_target
from tests.test_workflow import (
    DOCUMENTED_CALL,
    DOCUMENTED_FIRST_RUN,
    DOCUMENTED_LATER_RUN,
    WORKFLOW,
    assert_documented,
)

WORKFLOW_NAME = WORKFLOW.stem

# The platform's own function_app.py (its documentation's lines), with bootstrap's register() added.
FUNCTION_APP = """
import os, sys
PACKAGES_DIR = os.environ["BOOTSTRAP_PACKAGES_DIR"]
os.makedirs(PACKAGES_DIR, exist_ok=True)
sys.path.insert(0, PACKAGES_DIR)  # the platform's old line: bootstrap takes it off again

import azure.functions as func
from bootstrap.azure_functions import register

app = func.FunctionApp()
register(app, block=False, watch=True)
"""

# What the platform's runtime does with a call: the registered handler, the real request object.
CALLS = """
import json
import bootstrap
functions = {{f.get_function_name(): f.get_user_function() for f in app.get_functions()}}
for name, data in {calls!r}:
    body = json.dumps({{"inputData": data}}).encode()
    request = func.HttpRequest("POST", f"/api/workflows/{{name}}/execute", route_params={{"name": name}}, body=body)
    response = functions["bootstrap_execute_workflow"](request)
    print("RESULT " + json.dumps({{"status": response.status_code, "body": json.loads(response.get_body())}}))
health = functions["bootstrap_health"](func.HttpRequest("GET", "/api/health", body=b""))
print("RESULT " + json.dumps({{"status": health.status_code, "body": json.loads(health.get_body())}}))
print("PATH " + json.dumps(sys.path))
bootstrap.stop()
"""

# A workflow of the old way: it imports what a `pip install --target` put in the packages folder.
LEGACY_WORKFLOW = """
def run(input_data):
    import bsf_gamma
    return {"version": bsf_gamma.__version__, "file": bsf_gamma.__file__}
"""


def _host(calls: list[tuple[str, dict[str, Any]]]) -> tuple[list[dict[str, Any]], list[str], str]:
    """One host process: the platform's function_app.py, then ``calls``; (results, health last), its sys.path,
    its log."""
    proc = python_with_bootstrap(
        "import logging; logging.basicConfig(level=logging.INFO)\n" + FUNCTION_APP + CALLS.format(calls=calls)
    )
    assert proc.returncode == 0, proc.stderr
    results = [json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    (path_line,) = [line for line in proc.stdout.splitlines() if line.startswith("PATH ")]
    return results, json.loads(path_line[5:]), proc.stderr


def test_the_platforms_documented_call_first_later_and_after_a_restart_on_emptied_storage(repo: Repo) -> None:
    repo.write("bsf-alpha==1.0")
    shutil.copy(WORKFLOW, repo.root / WORKFLOW.name)  # where the platform keeps workflows: the repo's top level
    (repo.root / "legacy_import.py").write_text(LEGACY_WORKFLOW)
    pip_install_target(repo.packages_dir, "bsf-gamma")  # what the platform's workflows did before bootstrap
    legacy_files = sorted(str(p.relative_to(repo.packages_dir)) for p in repo.packages_dir.rglob("*"))

    # The first host: the documented call twice, and the legacy package imported.
    calls = [(WORKFLOW_NAME, DOCUMENTED_CALL), (WORKFLOW_NAME, DOCUMENTED_CALL), ("legacy_import", {})]
    (first, second, legacy, health), path, log = _host(calls)
    assert first["status"] == 200 and second["status"] == 200, (first, second)
    assert_documented(first["body"], DOCUMENTED_FIRST_RUN, repo.packages_dir)
    assert_documented(second["body"], DOCUMENTED_LATER_RUN, repo.packages_dir)
    generations = str(repo.packages_dir / "generations")
    # The legacy package is adopted and served from the generation; the old sys.path line was taken off.
    assert legacy["status"] == 200 and legacy["body"]["file"].startswith(generations), legacy
    assert str(repo.packages_dir) not in path
    assert sum("function_app.py" in line for line in log.splitlines()) == 1, log
    assert health["status"] == 200 and health["body"]["healthy"], health
    packages = {p["name"]: p for p in repo.manifest()["packages"]}
    assert packages["colorama"]["source"] == "runtime" and packages["bsf-gamma"]["source"] == "runtime"
    assert packages["bsf-alpha"]["source"] != "runtime"
    # The legacy files themselves are never changed or removed.
    assert all((repo.packages_dir / name).exists() for name in legacy_files)

    # A restart on an emptied packages folder (ephemeral storage): what was added at run time comes back.
    shutil.rmtree(repo.packages_dir)
    (again, legacy_again, health_again), path, _ = _host([(WORKFLOW_NAME, DOCUMENTED_CALL), ("legacy_import", {})])
    assert again["status"] == 200, again
    assert_documented(again["body"], DOCUMENTED_LATER_RUN, repo.packages_dir)
    assert legacy_again["status"] == 200 and legacy_again["body"]["file"].startswith(generations), legacy_again
    assert health_again["status"] == 200 and health_again["body"]["healthy"], health_again
    assert {p["name"] for p in repo.manifest()["packages"]} >= {"bsf-alpha", "bsf-gamma", "colorama"}
