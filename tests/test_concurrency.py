"""Several processes at once on one folder, and a sync killed in the middle."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from bootstrap.pipeline.sync import sync
from tests.conftest import Repo, children_running, kill_session, python_in, session_processes


def _sync_process(extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, **(extra_env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "bootstrap", "sync"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def test_racing_syncs_on_an_empty_folder_all_succeed_with_one_generation(repo: Repo) -> None:
    repo.write("bsf-beta==1.0", "jaraco.context")
    procs = [_sync_process() for _ in range(4)]
    results = [(p.wait(timeout=300), p.communicate()) for p in procs]
    assert [code for code, _ in results] == [0, 0, 0, 0], [err for _, (_, err) in results]
    generations = list((repo.packages_dir / "generations").iterdir())
    assert len(generations) == 1  # one builder; the waiters found the work done
    installs = sum("installing" in err for _, (_, err) in results)
    assert installs == 1
    assert repo.manifest()["generation"] == generations[0].name


def test_a_sync_killed_mid_install_leaves_the_previous_generation_serving(repo: Repo, slow_index: str) -> None:
    repo.write("bsf-alpha==1.0")
    sync(repo.settings())
    before = repo.manifest()

    repo.write("bsf-alpha==2.0")
    env = {**os.environ, "PIP_FIND_LINKS": slow_index}  # every wheel download takes a while
    proc = subprocess.Popen(
        [sys.executable, "-m", "bootstrap", "sync"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not children_running(proc.pid, "--target"):
        time.sleep(0.05)
    assert children_running(proc.pid, "--target"), "the sync never reached pip install"
    kill_session(proc.pid)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while session_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)

    after = repo.manifest()
    assert after["generation"] == before["generation"] and after["status"] == "ok"
    assert python_in(after["site_dir"], "import bsf_alpha; print(bsf_alpha.__version__)").stdout.strip() == "1.0"
    staging = repo.packages_dir / "staging"
    assert any(staging.iterdir()), "the killed sync left its staging folder (debris)"
    from bootstrap.ops.health import check

    report = check(repo.settings())
    assert any("interrupted sync" in note for note in report["notes"])  # named in check

    result = sync(repo.settings())  # the next sync cleans the debris and converges
    assert result.changed
    assert repo.installed() == {"bsf-alpha": "2.0"}
    assert not any(staging.iterdir())
