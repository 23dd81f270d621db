"""Children that run away (#13): a daemon forked at import, output without end.

The time-out bounds the whole import check, even when an escaped grandchild holds its
pipes; nothing the check started outlives it; and only the end of a child's output is
kept in memory, so a module printing 200 MB costs the sync no more than a normal one.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bootstrap.errors import CommandError
from bootstrap.tools import runner
from tests.conftest import Repo, kill_session
from tests.wheels import Dist, build_wheel, module

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")

ROOT = Path(__file__).resolve().parent.parent


def daemon_code(pid_file: Path, *, then: str) -> str:
    """Python that forks a daemon (``setsid``, stdout kept open, asleep for two minutes) whose pid is in
    ``pid_file`` once this returns, then runs ``then``."""
    return (
        "import os, sys, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        f"    with open({str(pid_file) + '.tmp'!r}, 'w') as f:\n"
        "        f.write(str(os.getpid()))\n"
        f"    os.replace({str(pid_file) + '.tmp'!r}, {str(pid_file)!r})\n"
        "    time.sleep(120)\n"
        "    os._exit(0)\n"
        f"while not os.path.exists({str(pid_file)!r}):\n"
        "    time.sleep(0.01)\n"
        f"{then}\n"
    )


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for a reaper that never comes does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@contextlib.contextmanager
def daemon_killed_after(pid_file: Path):  # type: ignore[no-untyped-def]
    """Whatever the test found, no daemon of it is left running for the next test."""
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def sync_in_child(repo: Repo, links: Path, wheelhouse: Path, code: str, *, bound: float = 60) -> tuple[int, str, float]:
    """Run ``code`` (with bootstrap importable) as a host would run a sync: ``(exit code, stderr, seconds)``.

    The child has its own session; on a hang past ``bound`` it is killed, and the test fails.
    """
    env = dict(os.environ, PIP_FIND_LINKS=f"{wheelhouse} {links}", BOOTSTRAP_IMPORT_CHECK_TIMEOUT="3")
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=bound)
    except subprocess.TimeoutExpired:
        kill_session(proc.pid)
        proc.communicate()
        pytest.fail(f"the sync still ran after {bound} s (the import check timed out after 3 s)")
    finally:
        kill_session(proc.pid)
    return proc.returncode, out + err, time.monotonic() - started


SYNC = "from bootstrap import cli; raise SystemExit(cli.main(['sync', '-q']))"


def test_a_daemon_forked_by_a_hanging_import_fails_the_sync_in_time_and_dies(
    repo: Repo, wheelhouse: Path, tmp_path: Path
) -> None:
    pid_file = tmp_path / "daemon.pid"
    links = tmp_path / "links"
    links.mkdir()
    body = daemon_code(pid_file, then="time.sleep(120)")  # the import itself hangs too
    build_wheel(Dist("bsf-daemon", "1.0", module("bsf_daemon", "1.0", body)), links)
    repo.write("bsf-daemon")
    with daemon_killed_after(pid_file):
        code, err, seconds = sync_in_child(repo, links, wheelhouse, SYNC)
        assert code == 1, err
        assert "the import check timed out while importing bsf_daemon from bsf-daemon 1.0" in err
        assert seconds < 30, f"the sync took {seconds:.0f} s with a time-out of 3 s"
        assert not alive(int(pid_file.read_text())), "the daemon the import check forked outlived the sync"
    assert repo.manifest()["site_dir"] is None


def test_a_daemon_left_by_an_import_that_returned_is_ended_and_the_sync_goes_on(
    repo: Repo, wheelhouse: Path, tmp_path: Path
) -> None:
    pid_file = tmp_path / "daemon.pid"
    links = tmp_path / "links"
    links.mkdir()
    body = daemon_code(pid_file, then="")
    build_wheel(Dist("bsf-leaves-daemon", "1.0", module("bsf_leaves_daemon", "1.0", body)), links)
    repo.write("bsf-leaves-daemon")
    with daemon_killed_after(pid_file):
        code, err, seconds = sync_in_child(repo, links, wheelhouse, SYNC)
        assert code == 0, err
        assert seconds < 30, f"the sync waited {seconds:.0f} s for the daemon's pipe"
        assert not alive(int(pid_file.read_text())), "the daemon the import check forked outlived the sync"
    assert repo.installed() == {"bsf-leaves-daemon": "1.0"}


def test_a_module_printing_200_mb_at_import_costs_the_sync_no_memory(
    repo: Repo, wheelhouse: Path, tmp_path: Path
) -> None:
    links = tmp_path / "links"
    links.mkdir()
    body = "import sys\nchunk = ('x' * 1023 + '\\n') * 1024\nfor _ in range(200):\n    sys.stdout.write(chunk)\n"
    build_wheel(Dist("bsf-chatty", "1.0", module("bsf_chatty", "1.0", body)), links)
    repo.write("bsf-chatty")
    measured = (
        "import re\nfrom bootstrap import cli\n"
        "def peak():\n"
        "    return int(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)) // 1024\n"
        "before = peak()\ncode = cli.main(['sync', '-q'])\n"
        "print('GREW-MB', peak() - before)\nraise SystemExit(code)\n"
    )
    code, out, _ = sync_in_child(repo, links, wheelhouse, measured, bound=300)
    assert code == 0, out
    grew = int(re.search(r"GREW-MB (\d+)", out).group(1))  # type: ignore[union-attr]
    assert grew < 150, f"the sync's peak memory grew by {grew} MB while a module printed 200 MB"
    assert repo.installed() == {"bsf-chatty": "1.0"}


# -- the runner itself -------------------------------------------------------------------------------


def test_a_time_out_bounds_a_run_whose_pipes_an_escaped_daemon_holds(tmp_path: Path) -> None:
    pid_file = tmp_path / "daemon.pid"
    with daemon_killed_after(pid_file):
        started = time.monotonic()
        with pytest.raises(CommandError) as info:
            runner.run([sys.executable, "-c", daemon_code(pid_file, then="time.sleep(120)")], timeout=2)
        assert info.value.timed_out
        assert time.monotonic() - started < 30
        assert not alive(int(pid_file.read_text()))


def test_without_proc_a_daemon_holding_the_pipes_is_let_go_after_a_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where no process can be found by its environment (no /proc, or one that cleared it), the run still
    ends: the process group is killed, and the pipes the daemon holds are let go of."""
    monkeypatch.setattr(runner, "_carrying", lambda tag: [])
    pid_file = tmp_path / "daemon.pid"
    with daemon_killed_after(pid_file):
        started = time.monotonic()
        result = runner.run([sys.executable, "-c", daemon_code(pid_file, then="print('returned')")], timeout=60)
        assert result.stdout.strip() == "returned"
        assert time.monotonic() - started < 30
        assert alive(int(pid_file.read_text())), "nothing found it: still there (killed by the test)"


def test_only_the_end_of_the_output_is_kept_and_the_marks_asked_for(tmp_path: Path) -> None:
    seen: list[str] = []
    code = (
        "import sys\nprint('MARK: first')\nprint('MARK: second')\nsys.stderr.write('e' * 5000)\n"
        "for n in range(1000):\n    print(f'line {n}')\n"
    )
    result = runner.run([sys.executable, "-c", code], limit=1000, keep=("MARK:",), on_line=seen.append)
    lines = result.stdout.splitlines()
    assert lines[0] == "MARK: second", "the last marked line, though the text around it was dropped"
    assert re.fullmatch(r"\[\d+ earlier characters of output not kept\]", lines[1])
    assert lines[2].startswith("line ") and lines[-1] == "line 999"
    assert len(result.stdout) < 1100
    assert result.stderr.endswith("e" * 1000) and len(result.stderr) < 1100  # one endless line: its end
    assert seen[:2] == ["MARK: first", "MARK: second"] and seen.count("line 500") == 1, "every line, as it came"


def test_a_hang_after_printing_more_than_is_kept_still_names_the_module(tmp_path: Path) -> None:
    """The marks the message is made from survive the bound: the module's 1 MB pushed its mark out of the tail."""
    from bootstrap.errors import VerificationError
    from bootstrap.pipeline import verify
    from tests.test_verify import pip_install

    body = "import sys, time\nsys.stdout.write(('y' * 400 + '\\n') * 3000)\nsys.stdout.flush()\ntime.sleep(120)\n"
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    site = pip_install(tmp_path / "site", build_wheel(Dist("bsf-loud", "1.0", module("bsf_loud", "1.0", body)), wheels))
    with pytest.raises(VerificationError) as info:
        verify.check_imports(site, verify.installed(site), skip=frozenset(), timeout=3)
    assert "the import check timed out while importing bsf_loud from bsf-loud 1.0" in str(info.value)
    assert len(info.value.__cause__.stdout) < 300_000  # type: ignore[union-attr]
