"""Several processes at once on one folder, and a sync killed in the middle."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bootstrap.sync import sync
from tests.conftest import Repo, python_in


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


def _session(session: int) -> dict[int, str]:
    """The processes of ``session`` (one we started with start_new_session): pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) == session:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ProcessLookupError):
            continue
    return found


def _children_running(session: int, needle: str) -> bool:
    return any(needle in cmdline for cmdline in _session(session).values())


def _kill_session(session: int) -> None:
    """The whole host dies at once: the sync, pip, and anything pip started."""
    for pid in _session(session):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


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
    while time.monotonic() < deadline and not _children_running(proc.pid, "--target"):
        time.sleep(0.05)
    assert _children_running(proc.pid, "--target"), "the sync never reached pip install"
    _kill_session(proc.pid)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while _session(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)

    after = repo.manifest()
    assert after["generation"] == before["generation"] and after["status"] == "ok"
    assert python_in(after["site_dir"], "import bsf_alpha; print(bsf_alpha.__version__)").stdout.strip() == "1.0"
    staging = repo.packages_dir / "staging"
    assert any(staging.iterdir()), "the killed sync left its staging folder (debris)"

    result = sync(repo.settings())  # the next sync cleans the debris and converges
    assert result.changed
    assert repo.installed() == {"bsf-alpha": "2.0"}
    assert not any(staging.iterdir())
