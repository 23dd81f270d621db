"""A live host: ``startup(block=False)``, ``startup(watch=True)``, generation switches and "restart pending".

Each host is a real interpreter (``sys.path`` and imported modules are per
process); every wait is a bounded poll, never a timing assertion.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Repo, python_with_bootstrap
from tests.test_watch import save_by_rename

WAIT = 120.0
ROOT = Path(__file__).resolve().parent.parent

# A host that serves, then waits until its sys.path entry moves to another generation.
HOST = textwrap.dedent(
    """
    import json, sys, time
    import bootstrap
    from bootstrap.host import state

    bootstrap.startup(watch=True)
    import bsf_alpha
    first = state.current().site_dir
    print(json.dumps({"ready": True, "alpha": bsf_alpha.__version__, "site": first}), flush=True)
    deadline = time.monotonic() + 120
    while state.current().site_dir == first and time.monotonic() < deadline:
        time.sleep(0.05)
    import bsf_gamma  # added meanwhile: importable at once, no restart
    print(json.dumps({
        "site": state.current().site_dir,
        "gamma": bsf_gamma.__file__,
        "alpha_still": sys.modules["bsf_alpha"].__version__,
        "pending": bootstrap.restart_pending(),
        "old_site_on_path": first in sys.path,
    }), flush=True)
    sys.stdin.readline()  # the test looks at `check` from outside meanwhile
    bootstrap.stop()
    """
)


@contextmanager
def host(env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOST],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=str(ROOT),
        env={**os.environ, "BOOTSTRAP_WATCH_DEBOUNCE": "0.2", **(env or {})},
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=WAIT)


def read_json_line(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.wait(timeout=WAIT)
        raise AssertionError(f"the host ended: {proc.stderr.read() if proc.stderr else ''}")
    return json.loads(line)  # type: ignore[no-any-return]


def let_exit(proc: subprocess.Popen[str]) -> int:
    """The host waits on stdin once it has reported: let it stop its watcher and exit; its exit code."""
    assert proc.stdin is not None
    proc.stdin.write("\n")
    proc.stdin.flush()
    return proc.wait(timeout=WAIT)


def test_a_watching_host_moves_to_the_new_generation_and_lists_what_needs_a_restart(
    repo: Repo,
    run_cli,  # type: ignore[no-untyped-def]
) -> None:
    repo.write("bsf-alpha==1.0")
    with host() as proc:
        ready = read_json_line(proc)
        assert ready["alpha"] == "1.0"

        save_by_rename(repo.requirements, "bsf-alpha==2.0", "bsf-gamma")  # as an editor saves
        moved = read_json_line(proc)

        new_site = repo.manifest()["site_dir"]
        assert moved["site"] == new_site != ready["site"]
        assert moved["gamma"].startswith(new_site)
        assert not moved["old_site_on_path"], "one generation on sys.path at a time"
        assert moved["alpha_still"] == "1.0", "an imported module is never swapped under the host"
        assert moved["pending"] == [{"name": "bsf-alpha", "loaded": "1.0", "active": "2.0"}]

        # Another process (a health probe) sees it too.
        report = json.loads(run_cli("check", "--json").out)
        assert report["healthy"], "the active generation is fine: only that host runs older code"
        [entry] = [item for item in report["restart_pending"] if item["pid"] == proc.pid]
        assert entry["packages"] == moved["pending"]
        text = run_cli("check")
        assert f"restart pending: pid {proc.pid}" in text.out
        assert "bsf-alpha 1.0 (the active generation has 2.0)" in text.out

        assert let_exit(proc) == 0
    # The host is gone: nothing is pending any more.
    assert json.loads(run_cli("check", "--json").out)["restart_pending"] == []
    assert not list((repo.packages_dir / "processes").glob("*.json"))


def test_a_watching_host_follows_a_package_added_by_another_process(
    repo: Repo,
    run_cli,  # type: ignore[no-untyped-def]
) -> None:
    repo.write("bsf-alpha==1.0")
    with host() as proc:
        assert read_json_line(proc)["alpha"] == "1.0"

        assert run_cli("add", "bsf-gamma").code == 0  # another process, e.g. an operator or a workflow

        moved = read_json_line(proc)
        assert moved["gamma"].startswith(repo.manifest()["site_dir"])
        assert moved["pending"] == [], "bsf-alpha is the same version in both generations"
        assert let_exit(proc) == 0


def test_startup_without_blocking_serves_the_last_good_generation_at_once(
    repo: Repo,
    run_cli,  # type: ignore[no-untyped-def]
    slow_index: str,
) -> None:
    repo.write("bsf-alpha==1.0")
    assert run_cli("sync").code == 0
    old_site = repo.manifest()["site_dir"]
    repo.write("bsf-alpha==2.0")
    code = textwrap.dedent(
        """
        import json, sys
        import bootstrap
        returned = bootstrap.startup(block=False)
        import bsf_alpha  # the slow index keeps the sync busy: this is the last good generation
        served = bsf_alpha.__version__
        done = bootstrap.wait_until_synced(120)
        print(json.dumps({
            "returned": returned["generation"], "served": served, "done": done,
            "path": [p for p in sys.path if "generations" in p], "pending": bootstrap.restart_pending(),
        }))
        """
    )
    proc = python_with_bootstrap(code, env={**os.environ, "PIP_FIND_LINKS": slow_index})

    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    manifest = repo.manifest()
    assert report["served"] == "1.0"
    assert report["done"] is True
    assert manifest["status"] == "ok" and manifest["generation"] != report["returned"]
    assert {p["name"]: p["version"] for p in manifest["packages"]} == {"bsf-alpha": "2.0"}
    assert report["path"] == [manifest["site_dir"]] and old_site not in report["path"]
    assert report["pending"] == [{"name": "bsf-alpha", "loaded": "1.0", "active": "2.0"}]


def test_startup_without_blocking_on_a_fresh_folder_serves_nothing_then_everything(repo: Repo) -> None:
    repo.write("bsf-gamma")
    code = textwrap.dedent(
        """
        import importlib.util, json
        import bootstrap
        returned = bootstrap.startup(block=False)
        assert bootstrap.wait_until_synced(120)
        import bsf_gamma
        print(json.dumps({"returned": returned, "file": bsf_gamma.__file__}))
        """
    )
    proc = python_with_bootstrap(code)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["returned"] is None
    assert report["file"].startswith(repo.manifest()["site_dir"])


def test_a_failed_background_sync_keeps_serving_and_is_recorded(
    repo: Repo,
    run_cli,  # type: ignore[no-untyped-def]
) -> None:
    repo.write("bsf-gamma")
    assert run_cli("sync").code == 0
    repo.write("bsf-gamma", "bsf-alpha>=>1")
    code = textwrap.dedent(
        """
        import json
        import bootstrap
        bootstrap.startup(block=False)
        assert bootstrap.wait_until_synced(120)
        import bsf_gamma
        print(json.dumps({"file": bsf_gamma.__file__}))
        """
    )
    proc = python_with_bootstrap(code)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1])["file"].startswith(repo.manifest()["site_dir"])
    assert "requirements.txt:2: not a valid requirement" in proc.stderr
    assert repo.manifest()["status"] == "failed"


def test_garbage_collection_keeps_a_generation_a_running_host_still_imports_from(
    repo: Repo,
    run_cli,  # type: ignore[no-untyped-def]
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BOOTSTRAP_GENERATIONS_KEPT", "1")
    repo.write("bsf-alpha==1.0")
    with host() as proc:
        first_site = read_json_line(proc)["site"]
        save_by_rename(repo.requirements, "bsf-alpha==2.0", "bsf-gamma")
        moved = read_json_line(proc)  # bsf_alpha 1.0 is still loaded from the first generation, bsf_gamma from this

        repo.write("bsf-alpha==2.0", "bsf-gamma", "jaraco.context")
        assert run_cli("sync").code == 0
        repo.write("bsf-alpha==2.0", "jaraco.context")
        assert run_cli("sync").code == 0

        assert Path(first_site).is_dir(), "the host still imports from it"
        assert Path(moved["site"]).is_dir(), "and from this one (bsf_gamma)"
        assert Path(repo.manifest()["site_dir"]).is_dir()

        assert let_exit(proc) == 0
    repo.write("bsf-gamma")
    assert run_cli("sync").code == 0
    assert not Path(first_site).exists(), "once the host is gone, the next sync removes it"
    assert len(list((repo.packages_dir / "generations").iterdir())) == 1


def test_a_switch_never_leaves_an_importing_thread_without_a_generation(
    repo: Repo,
    run_cli,  # type: ignore[no-untyped-def]
) -> None:
    repo.write("bsf-alpha==1.0")
    assert run_cli("sync").code == 0
    first = repo.manifest()
    repo.write("bsf-alpha==1.0", "bsf-gamma")
    assert run_cli("sync").code == 0
    second = repo.manifest()
    code = textwrap.dedent(
        f"""
        import json, sys, threading
        from bootstrap.host import live
        manifests = [{json.dumps(first)!r}, {json.dumps(second)!r}]
        manifests = [json.loads(m) for m in manifests]
        live.switch(manifests[0])
        sys.setswitchinterval(1e-6)
        stop = threading.Event()
        def flip():
            n = 0
            while not stop.is_set():
                live.switch(manifests[n % 2]); n += 1
        thread = threading.Thread(target=flip); thread.start()
        missing = 0
        for _ in range(20000):
            sys.modules.pop("bsf_alpha", None)
            try:
                import bsf_alpha
            except ModuleNotFoundError:
                missing += 1
        stop.set(); thread.join()
        print(missing)
        """
    )
    proc = python_with_bootstrap(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0"], "an import failed while the process moved between generations"


def test_startup_that_cannot_watch_or_read_its_settings_still_serves(
    repo: Repo,
    run_cli,  # type: ignore[no-untyped-def]
    tmp_path: Path,
) -> None:
    repo.write("bsf-gamma")
    assert run_cli("sync").code == 0
    code = textwrap.dedent(
        """
        import bootstrap
        bootstrap.startup(watch=True)
        bootstrap.startup(block=False)
        import bsf_gamma
        bootstrap.stop()
        print("served")
        """
    )
    bad_setting = python_with_bootstrap(code, env={**os.environ, "BOOTSTRAP_LOCK_TIMEOUT": "soon"})
    assert bad_setting.returncode == 0, bad_setting.stderr
    assert bad_setting.stdout.split() == ["served"]
    assert "BOOTSTRAP_LOCK_TIMEOUT" in bad_setting.stderr

    no_folder = tmp_path / "no-such-repo" / "requirements.txt"
    watching = python_with_bootstrap(
        "import bootstrap\nm = bootstrap.startup(watch=True)\nbootstrap.stop()\nprint(m is None)",
        env={**os.environ, "BOOTSTRAP_REQUIREMENTS_FILE": str(no_folder)},
    )
    assert watching.returncode == 0, watching.stderr
    assert "not watching for changes" in watching.stderr


def test_a_watching_start_up_does_not_repeat_the_sync_that_just_failed(repo: Repo) -> None:
    repo.write("bsf-alpha>=>1")
    proc = python_with_bootstrap("import bootstrap\nbootstrap.startup(watch=True)\nbootstrap.stop()\nprint('served')")
    assert proc.returncode == 0, proc.stderr
    failures = [line for line in proc.stderr.splitlines() if "not a valid requirement" in line]
    assert len(failures) == 1, proc.stderr


def test_stop_with_a_short_timeout_never_leaves_a_watcher_behind(repo: Repo) -> None:
    repo.write("bsf-alpha")
    code = textwrap.dedent(
        """
        import threading, time
        import bootstrap
        bootstrap.startup(watch=True)
        bootstrap.stop(timeout=0.01)  # the watcher is most likely still starting up
        time.sleep(3)
        print(sorted(t.name for t in threading.enumerate() if t.name.startswith("bootstrap")))
        """
    )
    proc = python_with_bootstrap(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[]"], proc.stdout


def test_a_thread_waiting_before_start_up_sees_the_sync_finish(repo: Repo) -> None:
    repo.write("bsf-alpha")
    code = textwrap.dedent(
        """
        import threading
        import bootstrap
        seen = []
        waiter = threading.Thread(target=lambda: seen.append(bootstrap.wait_until_synced(120)))
        waiter.start()
        bootstrap.startup(block=False)
        waiter.join()
        print(seen)
        """
    )
    proc = python_with_bootstrap(code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[True]"], proc.stderr
