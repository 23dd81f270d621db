"""What the fast path reads is checked first: folders others can write, files that are not files, huge lines.

Each case was reproduced against the code before it was fixed: a ``.pth`` planted through a
world-writable folder ran in the host, a FIFO or ``/dev/zero`` hung or exhausted ``startup()``, a line of
blanks held the build lock for minutes, an edited cached resolution was published.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bootstrap.errors import RequirementsError, SettingsError
from bootstrap.inputs import requirements
from bootstrap.inputs.requirements import Policy, logical_lines, parse_requirement
from bootstrap.pipeline.sync import sync
from tests.conftest import Repo, python_with_bootstrap

EVIL = "import sys; sys.stderr.write('EVIL RAN\\n')\n"


def _startup(env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``bootstrap.startup()`` in a fresh host process, memory-capped (2 GiB) so a file read whole fails
    fast instead of exhausting the machine; prints what it activated."""
    code = (
        "import resource; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))\n"
        "import logging, bootstrap; logging.basicConfig(level=logging.WARNING)\n"
        "m = bootstrap.startup(); from bootstrap.host import state; print('ACTIVE', state.current().site_dir)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=str(Path(__file__).resolve().parent.parent),
        check=False,
    )


def _active(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stdout.splitlines() if line.startswith("ACTIVE ")]
    assert proc.returncode == 0 and lines, proc.stderr
    return lines[-1].removeprefix("ACTIVE ")


# Folders others can write ---------------------------------------------------------------------------------


def _folders(repo: Repo) -> dict[str, Path]:
    site = Path(repo.manifest()["site_dir"])
    return {
        "packages": repo.packages_dir,
        "generations": repo.packages_dir / "generations",
        "generation": site.parent,
        "site": site,
    }


@pytest.mark.parametrize("which", ["packages", "generations", "generation", "site"])
def test_a_folder_others_can_write_is_never_imported_from(repo: Repo, run_cli: Any, which: str) -> None:
    repo.write("bsf-alpha==1.0")
    sync(repo.settings())
    served = repo.manifest()
    folder = _folders(repo)[which]
    folder.chmod(0o1777 if which == "packages" else 0o777)
    # What another local user could now do: put a .pth where the host imports from.
    (Path(served["site_dir"]) / "zz_evil.pth").write_text(EVIL)

    checked = run_cli("check")
    assert checked.code == 1 and "writable by every local user" in checked.out and str(folder) in checked.out

    proc = _startup()
    assert "EVIL RAN" not in proc.stderr
    active = _active(proc)
    assert active != served["site_dir"]
    if which in ("generation", "site"):  # generations/ is still ours: a sync builds a clean generation there
        assert active == repo.manifest()["site_dir"] and repo.manifest()["generation"] != served["generation"]
    else:  # nothing the sync could build there would be safer: refused, nothing activated
        assert active == "None"
        assert "chmod o-w" in proc.stderr and "world-writable" in proc.stderr


def test_activate_refuses_a_world_writable_generation_unless_allowed(repo: Repo) -> None:
    repo.write("bsf-alpha==1.0")
    sync(repo.settings())
    site = Path(repo.manifest()["site_dir"])
    site.chmod(0o777)
    refused = python_with_bootstrap("import bootstrap; print(bootstrap.activate())")
    assert refused.stdout.strip() == "None" and "writable by every local user" in refused.stderr, refused.stderr
    env = {**os.environ, "BOOTSTRAP_ALLOW_WORLD_WRITABLE": "true"}
    allowed = python_with_bootstrap("import bootstrap; print(bootstrap.activate())", env=env)
    assert allowed.stdout.strip() == str(site), allowed.stderr


def test_a_sync_refuses_a_world_writable_generations_folder(repo: Repo) -> None:
    repo.write("bsf-alpha==1.0")
    sync(repo.settings())
    (repo.packages_dir / "generations").chmod(0o777)
    repo.write("bsf-alpha==1.0", "bsf-beta==1.0")
    with pytest.raises(SettingsError, match=r"generations is world-writable.*chmod o-w"):
        sync(repo.settings())
    assert sync(repo.settings(allow_world_writable=True)).changed


# Committed files that are not plain files -----------------------------------------------------------------


def _fifo(path: Path) -> None:
    path.unlink(missing_ok=True)
    os.mkfifo(path)


@pytest.mark.parametrize(
    "case", ["requirements FIFO", "requirements /dev/zero", "included FIFO", "lock FIFO", "lock /dev/zero"]
)
def test_startup_never_hangs_or_exhausts_memory_on_a_committed_file(repo: Repo, case: str) -> None:
    repo.write("bsf-alpha==1.0", "-r extra.txt")
    (repo.root / "extra.txt").write_text("")
    sync(repo.settings())
    served = repo.manifest()["site_dir"]
    which, kind = case.split(" ", 1)
    target = {
        "requirements": repo.requirements,
        "included": repo.root / "extra.txt",
        "lock": repo.root / "requirements.lock",
    }[which]
    if kind == "FIFO":
        _fifo(target)
    else:
        target.unlink(missing_ok=True)
        target.symlink_to("/dev/zero")

    proc = _startup(timeout=120)  # before: blocked forever on the FIFO, or read /dev/zero until memory ran out
    assert _active(proc) == served  # the last good generation keeps serving
    assert "Traceback" not in proc.stderr
    named = [line for line in proc.stderr.splitlines() if target.name in line]
    assert named and any(
        why in named[0] for why in ("not a regular file but a FIFO", "a character device", "outside its folder")
    ), proc.stderr


def test_a_requirements_file_over_the_size_limit_is_one_line(repo: Repo, run_cli: Any) -> None:
    repo.requirements.write_text("# " + "x" * (1 << 20) + "\n")
    result = run_cli("sync")
    assert result.code == 1 and "Traceback" not in result.err
    assert f"{repo.requirements}: is larger than 1 MiB" in result.err


def test_a_folder_included_is_named_for_what_it_is(repo: Repo) -> None:
    (repo.root / "more").mkdir()
    repo.write("-r more")
    with pytest.raises(RequirementsError, match="more: is not a regular file but a folder"):
        requirements.read(repo.requirements)


# Lines that are long, parsed in linear time ---------------------------------------------------------------


def test_parsing_is_linear_in_the_line_length() -> None:
    # Before: the comment regex `(^|\s+)#.*$` (and `name\s*(...)?\s*@`) backtracked quadratically on a long
    # run of blanks: 100,000 of them took minutes, holding the build lock.
    started = time.process_time()
    lines = logical_lines("a" + " " * 4_000_000 + "b # comment\n")
    assert time.process_time() - started < 1.0
    assert lines == [(1, "a" + " " * 4_000_000 + "b")]
    for line in (
        "a" + " " * 99_000 + "x",
        "a" + " " * 49_000 + "[x]" + " " * 49_000,
        "a==1 --hash=sha256:" + "0" * 99_000,
    ):
        started = time.process_time()
        with contextlib.suppress(RequirementsError):  # refused or not: only the time it takes matters here
            parse_requirement(Path("requirements.txt"), 1, line, Policy())
        assert time.process_time() - started < 1.0, line[:40]


def test_a_line_longer_than_the_limit_is_refused_at_its_line(repo: Repo) -> None:
    repo.requirements.write_text("bsf-alpha==1.0\nbsf-beta" + " " * 200_000 + "==1.0\n")
    with pytest.raises(RequirementsError, match=r"requirements.txt:2: is 200,013 characters long"):
        requirements.read(repo.requirements)


def test_a_bad_file_is_refused_without_waiting_for_the_build_lock(repo: Repo) -> None:
    repo.write("bsf-alpha==1.0")
    sync(repo.settings())
    repo.write("bsf-alpha==1.0", "not a requirement !!")
    settings = repo.settings(lock_timeout=20)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from bootstrap.settings import load_settings; from bootstrap.store import locks\n"
            "with locks.build_lock(load_settings().layout, 5):\n    print('held', flush=True); time.sleep(300)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=str(Path(__file__).resolve().parent.parent),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RequirementsError, match=r"requirements\.txt:2"):  # before: LockTimeoutError
            sync(settings)
    finally:
        holder.kill()
        holder.wait()


def test_a_bad_file_is_recorded_in_the_manifest_when_the_lock_is_free(repo: Repo) -> None:
    repo.write("bsf-alpha==1.0")
    sync(repo.settings())
    repo.write("bsf-alpha==1.0", "not a requirement !!")
    with pytest.raises(RequirementsError):
        sync(repo.settings())
    m = repo.manifest()
    assert m["status"] == "failed" and "requirements.txt:2" in m["error"]["message"]


@pytest.mark.parametrize("name", ["x.tbz", "x.txz", "x.tlz", "x.tar.lz", "x.tar.lzma", "X.TBZ"])
def test_names_that_end_like_archives_are_refused_as_pip_takes_them_for_files(name: str) -> None:
    with pytest.raises(RequirementsError, match="direct references"):
        parse_requirement(Path("requirements.txt"), 1, name, Policy())


# A cached resolution is trusted no more than a committed lock ---------------------------------------------


def test_an_edited_cached_resolution_is_resolved_afresh(repo: Repo) -> None:
    repo.write("bsf-alpha==1.0")
    sync(repo.settings())
    (cached,) = (repo.packages_dir / "cache" / "locks").glob("*.txt")
    cached.write_text(cached.read_text().replace("bsf-alpha==1.0", "bsf-beta==1.0"))
    # A change that makes the sync look again (a comment), with the same requirements: the same cache key.
    repo.write("bsf-alpha==1.0  # the one we want")
    sync(repo.settings())
    assert repo.installed() == {"bsf-alpha": "1.0"}  # before: bsf-beta, never asked for, was published
    assert "bsf-alpha==1.0" in cached.read_text() and "bsf-beta" not in cached.read_text()
