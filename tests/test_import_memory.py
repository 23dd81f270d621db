"""The import check and memory (#18): ``BOOTSTRAP_IMPORT_CHECK_PROCESSES`` bounds its children, and a child the
kernel kills for memory is reported as out of memory, with what to do, in one line.

The out-of-memory test runs a real sync in a memory cgroup of its own (root, cgroup v1 or v2 with the memory
controller: this machine's kind has v1), where the kernel's OOM killer takes the child importing ``bsf-hog``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootstrap.pipeline.sync import sync
from tests.conftest import Repo

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LIMIT = 400 << 20  # a sync and its pip children fit; bsf-hog's 1 GiB does not


def _own_memory_cgroup() -> Path | None:
    """This process's memory cgroup folder, if it has one we may make a child in."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(","):
                return Path(f"/sys/fs/cgroup/memory{path}")
            if not controllers and (Path(f"/sys/fs/cgroup{path}") / "memory.max").exists():
                return Path(f"/sys/fs/cgroup{path}")
    return None


@pytest.fixture
def small_cgroup() -> Iterator[Path]:
    """A memory cgroup of LIMIT bytes: its ``tasks`` (v1) or ``cgroup.procs`` (v2) file takes a pid."""
    parent = _own_memory_cgroup()
    folder = parent / f"bootstrap-test-{uuid.uuid4().hex[:8]}" if parent is not None else None
    try:
        assert folder is not None
        folder.mkdir()
        limit = folder / ("memory.limit_in_bytes" if (folder / "memory.limit_in_bytes").exists() else "memory.max")
        limit.write_text(str(LIMIT))
    except (OSError, AssertionError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"no memory cgroup to make here ({exc}): this machine's kind has one")
        pytest.skip(f"no memory cgroup to make here: {exc}")
    try:
        yield folder
    finally:
        with contextlib.suppress(OSError):
            folder.rmdir()


def test_a_child_the_kernel_kills_for_memory_is_out_of_memory_in_one_line(repo: Repo, small_cgroup: Path) -> None:
    repo.write("bsf-gamma")
    sync(repo.settings())
    before = repo.manifest()["generation"]
    repo.write("bsf-gamma", "bsf-hog")
    procs = small_cgroup / ("tasks" if (small_cgroup / "tasks").exists() else "cgroup.procs")

    def join_the_cgroup() -> None:
        procs.write_text(str(os.getpid()))

    proc = subprocess.run(
        [sys.executable, "-m", "bootstrap", "sync"],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ),
        cwd=str(PROJECT_ROOT),
        preexec_fn=join_the_cgroup,  # the test's own child: joins the cgroup before it runs Python
        timeout=300,
    )
    errors = [line for line in proc.stderr.splitlines() if line.startswith("bootstrap: error:")]
    assert proc.returncode == 1 and len(errors) == 1, proc.stderr
    assert "was killed by the kernel: out of memory while importing bsf_hog from bsf-hog 1.0" in errors[0]
    assert "set BOOTSTRAP_IMPORT_CHECK_PROCESSES=1" in errors[0]
    assert "Traceback" not in proc.stderr
    assert repo.manifest()["generation"] == before  # the last good set keeps serving


def test_the_import_check_runs_one_process_with_bytecode_one_per_core_without_or_what_the_setting_says(
    repo: Repo, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("bootstrap.tools.runner.cores", lambda: 2)
    steps = [
        ({}, ("bsf-gamma", "bsf-alpha"), "import-checking 2 modules (1 process)"),
        ({"BOOTSTRAP_COMPILE_BYTECODE": "false"}, ("jaraco.functools", "bsf-extra-user"), "2 modules (2 processes)"),
        (
            {"BOOTSTRAP_COMPILE_BYTECODE": "false", "BOOTSTRAP_IMPORT_CHECK_PROCESSES": "1"},
            ("jaraco.context", "bsf-beta==1.0", "bsf-alpha==1.0"),  # three new ones
            "import-checking 3 modules (1 process)",
        ),
    ]
    for environment, lines, expected in steps:
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        repo.write(*lines)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="bootstrap"):
            sync(repo.settings())
        assert expected in caplog.text, (environment, caplog.text)


def test_the_setting_takes_one_or_more(repo: Repo, monkeypatch: pytest.MonkeyPatch, run_cli) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("BOOTSTRAP_IMPORT_CHECK_PROCESSES", "0")
    result = run_cli("sync")
    assert result.code != 0 and "BOOTSTRAP_IMPORT_CHECK_PROCESSES" in result.err and "Traceback" not in result.err
