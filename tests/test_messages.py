"""Messages that used to mislead: each says what happened and what to do, once, where it belongs."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from bootstrap import cli
from tests.conftest import Repo

OVERLAY = "runtime-requirements.txt"


@pytest.mark.parametrize("allowed", [False, True])
@pytest.mark.parametrize(
    "request_text", ["bsf-alpha @ https://files.example/bsf_alpha-2.0-py3-none-any.whl", "https://files.example/x.whl"]
)
def test_a_url_added_at_run_time_is_not_told_to_set_allow_direct_references(
    repo: Repo, run_cli: Any, monkeypatch: pytest.MonkeyPatch, request_text: str, allowed: bool
) -> None:
    if allowed:  # the committed file may use `name @ URL`: a runtime request still may not
        monkeypatch.setenv("BOOTSTRAP_ALLOW_DIRECT_REFERENCES", "true")
    repo.write("bsf-gamma")
    result = run_cli("add", request_text)
    assert result.code == 1 and result.err.count("\n") == 1, result.err
    assert result.err.startswith(f"bootstrap: error: cannot add {request_text!r}: direct references")
    assert "BOOTSTRAP_ALLOW_DIRECT_REFERENCES" not in result.err
    assert "add the package by name" in result.err


def test_a_refused_add_names_the_committed_line_not_an_overlay_line_that_does_not_exist(
    repo: Repo, run_cli: Any
) -> None:
    repo.write("bsf-gamma", "bsf-alpha==1.0")
    assert run_cli("sync").code == 0
    result = run_cli("add", "bsf-alpha==2.0")
    assert result.code == 1
    assert not (repo.packages_dir / OVERLAY).exists()
    assert OVERLAY not in result.err, "the overlay has no such line: it does not even exist"
    assert result.err.startswith(
        f"bootstrap: error: cannot add 'bsf-alpha==2.0' (nothing changed): bsf-alpha==2.0 conflicts with "
        f"{repo.requirements}:2: bsf-alpha==1.0"
    ), result.err
    assert "python -m bootstrap remove" not in result.err  # it was never added: nothing to remove


def test_remove_says_where_a_package_comes_from(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-beta==1.0")
    assert run_cli("sync").code == 0

    unknown = run_cli("remove", "notthere")
    assert unknown.code == 1 and "does not hold it: nothing to remove" in unknown.err
    assert "committed" not in unknown.err, unknown.err

    committed = run_cli("remove", "bsf-beta")
    assert committed.code == 1 and "the committed file asks for it" in committed.err
    assert str(repo.requirements) in committed.err

    dependency = run_cli("remove", "bsf-alpha")
    assert dependency.code == 1 and "a dependency of another package" in dependency.err
    assert "committed file asks" not in dependency.err


def test_a_uv_package_without_its_program_is_not_blamed_on_the_packages_folder(
    repo: Repo, run_cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    uv = pytest.importorskip("uv")
    repo.write("bsf-alpha==1.0")
    monkeypatch.setenv("BOOTSTRAP_BACKEND", "uv")

    def no_program() -> str:
        raise FileNotFoundError("uv")

    monkeypatch.setattr(uv, "find_uv_bin", no_program)
    result = run_cli("sync")
    assert result.code == 1
    assert "needs the uv program" in result.err and "packages folder" not in result.err
    assert "permissions" not in result.err

    monkeypatch.setattr(uv, "find_uv_bin", lambda: str(repo.root / "gone" / "uv"))  # found, then removed
    result = run_cli("sync")
    assert result.code == 1
    assert f"the program {repo.root / 'gone' / 'uv'} is not there" in result.err, result.err
    assert "cannot use" not in result.err and "permissions" not in result.err


def test_counts_of_one_are_singular(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-alpha==1.0")
    synced = run_cli("sync")
    assert synced.code == 0 and "(1 package)" in synced.out, synced.out
    assert re.search(r"compiling bytecode of \d+ modules? \((on \d+ cores?|in this process)\)", synced.err), synced.err
    text = synced.out + synced.err + run_cli("sync").out + run_cli("status").out
    assert not re.search(r"\b1 (packages|cores|modules|distributions|pins|files|requirements)\b", text), text


def test_a_result_is_printed_once_on_stdout_not_logged_on_stderr_too(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-alpha==1.0")
    first = run_cli("sync")
    assert first.out.startswith("synced: ") and "published generation" not in first.err, first.err
    again = run_cli("sync")
    assert again.out.startswith("up to date: ") and "up to date" not in again.err, again.err
    repo.write("bsf-alpha==2.0")
    assert run_cli("sync").code == 0
    rolled = run_cli("rollback")
    assert rolled.out.startswith("rolled back: ") and "rolled back" not in rolled.err, rolled.err
    added = run_cli("add", "bsf-gamma")
    assert added.out.startswith("added ") and "published generation" not in added.err, added.err


def test_watch_lines_carry_a_timestamp(capsys: pytest.CaptureFixture[str]) -> None:
    log = logging.getLogger("bootstrap")
    saved = (log.level, log.propagate)
    handler = cli._configure_logging(verbose=False, quiet=False, command="watch")
    try:
        log.info("synced: generation G is active")
    finally:
        log.removeHandler(handler)
        log.setLevel(saved[0])
        log.propagate = saved[1]
    line = capsys.readouterr().err.strip()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ bootstrap: synced: generation G is active", line), line
