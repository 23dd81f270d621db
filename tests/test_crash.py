"""Real kills at many points of a real sync, a lock held too long, an index that never answers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootstrap.errors import BootstrapError, LockTimeoutError
from bootstrap.pipeline.sync import sync
from tests.conftest import Repo, kill_session, python_in, session_processes

# Where a sync is killed: the first stderr line (of `-v sync`) containing the text, or a delay.
KILL_POINTS = [
    "resolving 2 requirements",  # pip-compile starting
    "pip-compile:",  # pip-compile under way
    "installing 2 distributions",  # pip install starting
    "pip: ",  # pip install under way
    "verifying the new generation",
    "import-checking",
    "published generation",  # the manifest is written: garbage collection under way
    0.2,
    0.8,
    1.6,
    2.4,
    3.2,
]


def _run_and_kill(env: dict[str, str], point: str | float) -> str:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bootstrap", "-v", "sync"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stderr is not None
    seen = []
    if isinstance(point, float):
        time.sleep(point)
    else:
        for line in proc.stderr:
            seen.append(line)
            if point in line:
                break
        else:
            pytest.fail(f"the sync ended before {point!r}:\n{''.join(seen)}")
    kill_session(proc.pid)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while session_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.stderr.close()
    return "".join(seen)


@pytest.mark.slow
@pytest.mark.parametrize("point", KILL_POINTS, ids=str)
def test_kill_anywhere_leaves_a_serving_generation_and_the_next_sync_converges(
    repo: Repo, slow_index: str, point: str | float
) -> None:
    repo.write("bsf-alpha==1.0")
    sync(repo.settings())
    before = repo.manifest()["generation"]

    repo.write("bsf-alpha==2.0", "bsf-gamma")
    _run_and_kill({**os.environ, "PIP_FIND_LINKS": slow_index}, point)

    m = json.loads(repo.manifest_path.read_text())  # readable: never half-written
    assert m["status"] == "ok"
    generations = {p.name for p in (repo.packages_dir / "generations").iterdir()}
    assert m["generation"] in generations
    expected = {"bsf-alpha": "1.0"} if m["generation"] == before else {"bsf-alpha": "2.0", "bsf-gamma": "1.0"}
    assert {p["name"]: p["version"] for p in m["packages"]} == expected
    proc = python_in(m["site_dir"], "import bsf_alpha; print(bsf_alpha.__version__)")
    assert proc.stdout.strip() == expected["bsf-alpha"], proc.stderr

    sync(repo.settings())  # the next sync cleans up and converges
    assert repo.installed() == {"bsf-alpha": "2.0", "bsf-gamma": "1.0"}
    staging = repo.packages_dir / "staging"
    assert not staging.exists() or not any(staging.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("point", ["installing while resolving", "pip (speculative):", "pip-compile:", 0.5, 1.5])
def test_kill_a_cold_sync_anywhere_and_the_next_one_converges(repo: Repo, slow_index: str, point: str | float) -> None:
    """The first sync on an empty folder (pip-compile and a speculative install side by side)."""
    repo.write("bsf-alpha==2.0", "bsf-gamma")
    _run_and_kill({**os.environ, "PIP_FIND_LINKS": slow_index}, point)
    if repo.manifest_path.exists():  # only ever a complete generation, or none
        m = json.loads(repo.manifest_path.read_text())
        assert m["site_dir"] is None or Path(m["site_dir"]).is_dir()
    sync(repo.settings())
    assert repo.installed() == {"bsf-alpha": "2.0", "bsf-gamma": "1.0"}
    staging = repo.packages_dir / "staging"
    assert not staging.exists() or not any(staging.iterdir())


def test_a_lock_held_too_long_names_its_holder(repo: Repo) -> None:
    repo.write("bsf-alpha")
    code = (
        "import sys, time\n"
        "from bootstrap.store.layout import Layout\n"
        "from bootstrap.store.locks import build_lock\n"
        f"with build_lock(Layout({str(repo.packages_dir)!r}), 5):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(60)\n"
    )
    repo.packages_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(LockTimeoutError) as failure:
            sync(repo.settings(lock_timeout=0.5))
        message = str(failure.value)
        assert f"pid {holder.pid} on {socket.gethostname()}" in message and "BOOTSTRAP_LOCK_TIMEOUT" in message
        # Not recorded: without the lock, writing the manifest could undo what the holder publishes.
        assert not repo.manifest_path.exists()
    finally:
        holder.kill()
        holder.wait()
    assert sync(repo.settings()).changed  # the lock died with its holder


@pytest.fixture
def silent_index() -> Iterator[str]:
    """An index on 127.0.0.1 that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/simple"
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        server.close()


def test_an_index_that_never_answers_ends_in_a_clear_error(
    repo: Repo, monkeypatch: pytest.MonkeyPatch, silent_index: str
) -> None:
    repo.write("bsf-alpha==1.0")
    sync(repo.settings())
    monkeypatch.delenv("PIP_NO_INDEX")
    monkeypatch.delenv("PIP_FIND_LINKS")
    monkeypatch.setenv("PIP_INDEX_URL", silent_index)
    repo.write("bsf-alpha==2.0")
    with pytest.raises(BootstrapError) as failure:
        sync(repo.settings(index_timeout=1, index_retries=1))
    message = str(failure.value)
    assert silent_index.split("/simple")[0] in message and "\n" not in message, message
    assert "timed out" in message or "could not reach" in message, message
    assert repo.installed() == {"bsf-alpha": "1.0"}
    assert Path(repo.manifest()["site_dir"]).is_dir()
