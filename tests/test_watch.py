"""watch: real files, real threads, a real signal; every wait is a bounded poll, never a timing assertion."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bootstrap.errors import BootstrapError, StorageError
from bootstrap.host.watch import Watcher, watch
from bootstrap.pipeline.sync import SyncResult
from tests.conftest import Repo

WAIT = 60.0  # generous: a loaded 2-core machine; a passing run returns as soon as the condition holds


def wait_for(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


def save_by_rename(path: Path, *lines: str) -> None:
    """Save like editors and git do: write a temporary file beside it, then rename it over the old one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(line + "\n" for line in lines))
    os.replace(tmp, path)


def manifest_or_none(repo: Repo) -> dict[str, Any] | None:
    try:
        return repo.manifest()  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def serves(repo: Repo, expected: dict[str, str]) -> Callable[[], bool]:
    def check() -> bool:
        m = manifest_or_none(repo)
        return m is not None and m["status"] == "ok" and {p["name"]: p["version"] for p in m["packages"]} == expected

    return check


@contextmanager
def running(repo: Repo, **overrides: object) -> Iterator[tuple[Watcher, list[SyncResult | BootstrapError]]]:
    """A started Watcher that records every sync; stopped (threads joined) on the way out."""
    outcomes: list[SyncResult | BootstrapError] = []
    before = set(threading.enumerate())
    watcher = Watcher(repo.settings(watch_debounce=0.3, **overrides), on_synced=outcomes.append)
    watcher.start()
    try:
        wait_for(lambda: len(outcomes) >= 1, "the initial sync")
        yield watcher, outcomes
    finally:
        watcher.stop()
    assert not watcher.running
    left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert not left, f"threads still running after stop(), daemon or not: {left}"


def test_a_rename_save_is_synced(repo: Repo) -> None:
    repo.write("bsf-alpha==1.0")
    with running(repo) as (_, outcomes):
        assert serves(repo, {"bsf-alpha": "1.0"})()
        first = repo.manifest()["generation"]
        save_by_rename(repo.requirements, "bsf-gamma")
        wait_for(serves(repo, {"bsf-gamma": "1.0"}), "the edit to be synced")
    assert repo.manifest()["generation"] != first
    assert any(isinstance(o, SyncResult) and o.changed for o in outcomes[1:])


def test_a_burst_of_writes_is_coalesced(repo: Repo) -> None:
    repo.write("bsf-alpha==1.0")
    burst = [["bsf-gamma"], ["bsf-alpha==2.0"], ["bsf-beta==1.0"], ["bsf-gamma", "bsf-alpha==1.0"], ["bsf-beta==2.0"]]
    with running(repo) as (_, outcomes):
        for lines in burst:
            save_by_rename(repo.requirements, *lines)
        wait_for(serves(repo, {"bsf-alpha": "2.0", "bsf-beta": "2.0"}), "the last write to be synced")
    after_initial = outcomes[1:]
    assert 1 <= len(after_initial) < len(burst), after_initial
    assert not any(isinstance(o, BootstrapError) for o in outcomes)


def test_a_bad_edit_fails_keeps_serving_and_a_fix_recovers(repo: Repo, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bootstrap")
    repo.write("bsf-alpha==1.0")
    with running(repo) as (_, outcomes):
        good = repo.manifest()
        save_by_rename(repo.requirements, "bsf-alpha==1.0", "this is ! not a requirement")
        wait_for(lambda: (manifest_or_none(repo) or {}).get("status") == "failed", "the failure to be recorded")
        failed = repo.manifest()
        assert failed["generation"] == good["generation"] and failed["site_dir"] == good["site_dir"]
        assert Path(failed["site_dir"]).is_dir()  # the last good set keeps serving
        assert "requirements.txt:2" in failed["error"]["message"]
        wait_for(lambda: any(isinstance(o, BootstrapError) for o in outcomes), "the failure to be reported")
        errors = [r for r in caplog.records if r.name == "bootstrap" and r.levelno == logging.ERROR]
        assert errors and "requirements.txt:2" in errors[0].getMessage()
        assert all("\n" not in r.getMessage() for r in errors)  # one line each

        save_by_rename(repo.requirements, "bsf-gamma")  # the fix, no restart
        wait_for(serves(repo, {"bsf-gamma": "1.0"}), "the fix to be synced")
    assert repo.manifest()["error"] is None


def test_polling_observer_sees_an_edit(repo: Repo) -> None:
    repo.write("bsf-alpha==1.0")
    with running(repo, watch_polling=True) as (watcher, _):
        assert type(watcher._observer).__name__ == "PollingObserver"
        save_by_rename(repo.requirements, "bsf-gamma")
        wait_for(serves(repo, {"bsf-gamma": "1.0"}), "the polled edit to be synced")


def test_a_missing_folder_is_an_error_not_a_new_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from bootstrap.settings import load_settings

    caplog.set_level(logging.INFO, logger="bootstrap")
    missing = tmp_path / "no-such-repo"
    monkeypatch.setenv("BOOTSTRAP_REQUIREMENTS_FILE", str(missing / "requirements.txt"))
    monkeypatch.setenv("BOOTSTRAP_PACKAGES_DIR", str(tmp_path / "packages"))
    sigterm = signal.getsignal(signal.SIGTERM)
    with pytest.raises(StorageError, match=r"cannot watch .*no-such-repo: no such folder"):
        watch(load_settings())
    assert not missing.exists()
    assert signal.getsignal(signal.SIGTERM) is sigterm  # handlers put back


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_the_command_stops_cleanly_on_a_signal(repo: Repo, sig: signal.Signals) -> None:
    repo.write("bsf-alpha==1.0")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bootstrap", "watch"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(os.environ),
        cwd=str(Path(__file__).resolve().parent.parent),
    )
    try:
        wait_for(lambda: proc.poll() is not None or serves(repo, {"bsf-alpha": "1.0"})(), "the initial sync")
        assert proc.poll() is None, "watch exited on its own"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err.decode(errors="replace")
        assert b"watching" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    staging = repo.packages_dir / "staging"
    assert not staging.exists() or not any(staging.iterdir())
    assert json.loads(repo.manifest_path.read_text())["status"] == "ok"
