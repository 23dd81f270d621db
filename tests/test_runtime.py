"""Runtime installs: ``bootstrap.ensure`` / ``add`` / ``remove`` and the overlay in the state folder."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bootstrap.errors import RequirementsError, ResolutionError
from bootstrap.host import runtime
from bootstrap.pipeline.sync import sync
from tests.conftest import Repo, python_with_bootstrap

OVERLAY = "runtime-requirements.txt"


def sources(repo: Repo) -> dict[str, tuple[str, str | None]]:
    return {p["name"]: (p["version"], p["source"]) for p in repo.manifest()["packages"]}


def overlay_lines(repo: Repo) -> list[str]:
    path = repo.state_dir / OVERLAY
    if not path.exists():
        return []
    return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]


def test_add_records_installs_and_names_the_source(repo: Repo, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo.write("bsf-beta==1.0")
    assert run_cli("sync").code == 0

    result = run_cli("add", "bsf-gamma")

    assert result.code == 0, result.err
    assert "added bsf-gamma 1.0 at run time" in result.out
    assert overlay_lines(repo) == ["bsf-gamma"]
    assert sources(repo) == {
        "bsf-alpha": ("2.0", None),  # a dependency of bsf-beta
        "bsf-beta": ("1.0", "repo"),
        "bsf-gamma": ("1.0", "runtime"),
    }
    inputs = repo.manifest()["inputs"]
    assert str(repo.state_dir / OVERLAY) in inputs
    status = run_cli("status").out
    assert re.search(r"bsf-gamma\s+1\.0\s+added at run time", status), status
    assert re.search(r"bsf-alpha\s+2\.0\s+dependency", status), status


def test_an_addition_survives_restarts_and_later_syncs(repo: Repo, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo.write("bsf-alpha==1.0")
    assert run_cli("add", "bsf-gamma").code == 0
    repo.write("bsf-alpha==2.0", "jaraco.context")  # the committed file moves on

    assert run_cli("sync").code == 0

    assert sources(repo) == {
        "bsf-alpha": ("2.0", "repo"),
        "bsf-gamma": ("1.0", "runtime"),
        "jaraco.context": ("1.0", "repo"),
    }
    # A restarted host (a new process, start-up fast path) imports it.
    proc = python_with_bootstrap("import bootstrap; bootstrap.startup(); import bsf_gamma; print(bsf_gamma.__file__)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith(str(repo.packages_dir / "generations"))


def test_ensure_in_a_host_process_imports_at_once_and_is_free_the_second_time(repo: Repo) -> None:
    repo.write("bsf-alpha==1.0")
    code = textwrap.dedent(
        """
        import json, bootstrap
        bootstrap.startup()
        first = bootstrap.ensure("bsf-gamma>=1")
        import bsf_gamma
        before = open(bootstrap.packages_dir() + "/manifest.json").read()
        second = bootstrap.ensure("bsf-gamma")
        after = open(bootstrap.packages_dir() + "/manifest.json").read()
        print(json.dumps({"first": first, "second": second, "file": bsf_gamma.__file__, "untouched": before == after}))
        """
    )
    proc = python_with_bootstrap(code)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["first"] == {
        "name": "bsf-gamma",
        "version": "1.0",
        "requested": True,
        "provided_by": "generation",
        "source": "runtime",
    }
    assert report["second"] == report["first"]
    assert report["untouched"], "an ensure of a package already served must not sync"
    assert report["file"].startswith(str(repo.packages_dir))


def test_a_conflict_with_the_committed_file_names_both_lines(repo: Repo, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo.write("bsf-gamma", "bsf-alpha==1.0")
    assert run_cli("sync").code == 0
    before = repo.manifest()

    result = run_cli("add", "bsf-alpha==2.0")

    assert result.code == 1
    assert result.err.count("\n") == 1, "refused before anything changed: only the error line"
    message = result.err.strip()
    assert OVERLAY not in message  # the request was never written to the overlay: no line of it is named
    assert f"{repo.requirements}:2: bsf-alpha==1.0" in message
    assert "bsf-alpha==2.0 conflicts with" in message
    assert overlay_lines(repo) == [], "a failed addition is taken back out"
    after = repo.manifest()
    assert after["generation"] == before["generation"]
    assert after["status"] == "ok"
    assert run_cli("check").code == 0


def test_a_later_committed_conflict_fails_naming_both(repo: Repo, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo.write("bsf-gamma")
    assert run_cli("add", "bsf-alpha==2.0").code == 0
    serving = repo.manifest()["generation"]
    repo.write("bsf-gamma", "bsf-alpha<2")

    with pytest.raises(RequirementsError) as caught:
        sync(repo.settings())

    assert f"{repo.requirements}:2: bsf-alpha<2" in str(caught.value)
    assert f"{repo.state_dir / OVERLAY}:" in str(caught.value)
    manifest = repo.manifest()
    assert manifest["status"] == "failed" and manifest["generation"] == serving
    assert "remove bsf-alpha" in manifest["error"]["message"]


def test_a_compatible_repeat_narrows_the_committed_requirement(repo: Repo, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo.write("bsf-alpha")
    assert run_cli("sync").code == 0
    assert sources(repo) == {"bsf-alpha": ("2.0", "repo")}

    assert run_cli("add", "bsf-alpha<2").code == 0

    assert sources(repo) == {"bsf-alpha": ("1.0", "repo")}


def test_an_addition_that_cannot_be_had_is_undone(repo: Repo, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo.write("bsf-gamma")
    assert run_cli("add", "bsf-alpha").code == 0
    before = (repo.state_dir / OVERLAY).read_text()

    result = run_cli("add", "bsf-nowhere-to-be-found")

    assert result.code == 1
    [error] = [line for line in result.err.splitlines() if line.startswith("bootstrap: error:")]
    assert error.startswith("bootstrap: error: cannot add 'bsf-nowhere-to-be-found' (nothing changed): ")
    assert "# Packages added" not in result.err
    assert (repo.state_dir / OVERLAY).read_text() == before
    assert repo.manifest()["status"] == "ok"
    assert run_cli("check").code == 0
    with pytest.raises(ResolutionError):
        runtime.add(repo.settings(), "bsf-alpha==9.9")
    assert (repo.state_dir / OVERLAY).read_text() == before


def test_remove_takes_out_only_what_was_added_at_run_time(repo: Repo, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo.write("bsf-gamma")
    assert run_cli("add", "bsf-alpha==1.0").code == 0

    refused = run_cli("remove", "bsf-gamma")
    assert refused.code == 1
    assert "it was not added at run time" in refused.err
    assert str(repo.requirements) in refused.err

    removed = run_cli("remove", "BSF_Alpha")
    assert removed.code == 0, removed.err
    assert overlay_lines(repo) == []
    assert sources(repo) == {"bsf-gamma": ("1.0", "repo")}


@pytest.mark.parametrize(
    "request_text, why",
    [
        ("", "give a package name"),
        ("   ", "give a package name"),
        ("-r /etc/passwd", "not an option"),
        ("--index-url http://evil.example/simple", "not an option"),
        ("bsf-alpha\nbsf-gamma", "one requirement on one line"),
        ("bsf-alpha # comment", "one requirement on one line"),
        ("bsf-alpha>=>1", "not a valid requirement"),
        ("https://evil.example/x.whl", "direct references"),
        ("bsf-alpha @ https://evil.example/x.whl", "direct references"),
        ("bsf-alpha --hash=sha256:" + "0" * 64, "--hash is for committed locks"),
    ],
)
def test_bad_requests_are_refused_and_change_nothing(repo: Repo, request_text: str, why: str) -> None:
    repo.write("bsf-gamma")
    sync(repo.settings())
    before = repo.manifest()

    with pytest.raises(RequirementsError) as caught:
        runtime.add(repo.settings(), request_text)

    assert why in str(caught.value)
    assert str(caught.value).startswith(f"cannot add {request_text!r}")
    assert not (repo.state_dir / OVERLAY).exists()
    assert repo.manifest() == before


def test_a_bad_request_on_the_command_line_is_one_line(repo: Repo, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo.write("bsf-gamma")
    result = run_cli("add", "bsf-alpha>=>1")
    assert result.code == 1
    assert result.err.startswith("bootstrap: error: cannot add 'bsf-alpha>=>1': not a valid requirement")
    assert result.err.count("\n") == 1 and "Traceback" not in result.err


def test_the_committed_lock_stays_in_force_beside_runtime_additions(
    repo: Repo, run_cli, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    repo.write("bsf-alpha")
    assert run_cli("lock").code == 0
    lock = repo.root / "requirements.lock"
    lock.write_text(lock.read_text().replace("bsf-alpha==2.0", "bsf-alpha==1.0"))  # an older pin, committed
    assert run_cli("sync").code == 0
    assert repo.manifest()["lock_source"] == "committed"

    caplog.clear()
    assert run_cli("add", "bsf-gamma").code == 0

    assert sources(repo) == {"bsf-alpha": ("1.0", "repo"), "bsf-gamma": ("1.0", "runtime")}
    assert "stale" not in caplog.text
    assert "bsf-gamma" not in lock.read_text(), "the committed lock is the repo's, never the runtime's"
    assert run_cli("remove", "bsf-gamma").code == 0
    assert repo.manifest()["lock_source"] == "committed"


def test_an_overlay_edited_by_hand_is_read_like_the_committed_file(repo: Repo, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo.write("bsf-gamma")
    assert run_cli("sync").code == 0
    overlay = repo.state_dir / OVERLAY
    overlay.write_text("bsf-alpha\n--extra-index-url http://evil.example/simple\n")

    result = run_cli("sync")

    assert result.code == 1
    assert f"{overlay}:2: only requirements belong here" in result.err
    assert repo.manifest()["status"] == "failed"
    overlay.unlink()
    assert run_cli("sync").code == 0
    assert repo.manifest()["status"] == "ok"


def test_two_hosts_adding_at_once_both_get_their_package(repo: Repo) -> None:
    repo.write("bsf-gamma")
    code = "import bootstrap, sys; print(bootstrap.ensure(sys.argv[1])['version'])"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ),
            cwd=str(Path(__file__).resolve().parent.parent),
        )
        for name in ("bsf-alpha==1.0", "jaraco.context")
    ]
    outputs = [proc.communicate(timeout=300) for proc in procs]

    assert [proc.returncode for proc in procs] == [0, 0], [err for _, err in outputs]
    assert sorted(overlay_lines(repo)) == ["bsf-alpha==1.0", "jaraco.context"]
    assert sources(repo) == {
        "bsf-alpha": ("1.0", "runtime"),
        "bsf-gamma": ("1.0", "repo"),
        "jaraco.context": ("1.0", "runtime"),
    }


def test_the_committed_pins_hold_for_runtime_additions_even_on_a_fresh_instance(
    repo: Repo,
    run_cli,  # type: ignore[no-untyped-def]
) -> None:
    repo.write("bsf-alpha")
    assert run_cli("lock").code == 0
    lock = repo.root / "requirements.lock"
    lock.write_text(lock.read_text().replace("bsf-alpha==2.0", "bsf-alpha==1.0"))
    assert run_cli("add", "bsf-gamma").code == 0  # a fresh packages folder: no active pins to seed with
    assert sources(repo) == {"bsf-alpha": ("1.0", "repo"), "bsf-gamma": ("1.0", "runtime")}

    lock.write_text(lock.read_text().replace("bsf-alpha==1.0", "bsf-alpha==2.0"))  # a new committed pin
    assert run_cli("sync").code == 0
    assert sources(repo) == {"bsf-alpha": ("2.0", "repo"), "bsf-gamma": ("1.0", "runtime")}


def test_a_runtime_addition_against_a_committed_pin_is_refused(repo: Repo, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo.write("bsf-beta")
    assert run_cli("lock").code == 0
    lock = repo.root / "requirements.lock"
    lock.write_text(
        lock.read_text().replace("bsf-beta==2.0", "bsf-beta==1.0").replace("bsf-alpha==2.0", "bsf-alpha==1.0")
    )
    assert run_cli("sync").code == 0

    result = run_cli("add", "bsf-alpha>=2")

    assert result.code == 1
    assert "cannot add 'bsf-alpha>=2' (nothing changed)" in result.err
    assert sources(repo)["bsf-alpha"] == ("1.0", None)


def test_a_killed_add_changes_nothing_and_others_stay_healthy_meanwhile(
    repo: Repo,
    run_cli,  # type: ignore[no-untyped-def]
    slow_index: str,
) -> None:
    from tests.conftest import children_running, kill_session

    repo.write("bsf-gamma")
    assert run_cli("sync").code == 0
    env = {**os.environ, "PIP_FIND_LINKS": slow_index}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bootstrap", "add", "bsf-alpha"],
        env=env,
        cwd=str(Path(__file__).resolve().parent.parent),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not children_running(proc.pid, "pip"):
            assert time.monotonic() < deadline and proc.poll() is None, "the add never reached pip"
            time.sleep(0.05)
        checked = run_cli("check")
        assert checked.code == 0, f"an add in progress is nobody's health problem: {checked.out}"
    finally:
        kill_session(proc.pid)
        proc.wait(timeout=60)

    assert overlay_lines(repo) == [], "a killed add left its request behind"
    assert run_cli("check").code == 0
    assert run_cli("add", "jaraco.context").code == 0
    assert overlay_lines(repo) == ["jaraco.context"]


def test_ensure_after_a_rollback_installs_what_the_rolled_back_generation_lacks(repo: Repo, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo.write("bsf-alpha==1.0")
    assert run_cli("sync").code == 0
    assert run_cli("add", "bsf-gamma").code == 0
    assert run_cli("rollback").code == 0
    assert "bsf-gamma" not in repo.installed()

    result = run_cli("add", "bsf-gamma")

    assert result.code == 0, result.err
    assert sources(repo)["bsf-gamma"] == ("1.0", "runtime")


def test_a_request_whose_marker_excludes_this_interpreter_is_refused(repo: Repo, run_cli) -> None:  # type: ignore[no-untyped-def]
    repo.write("bsf-gamma")
    result = run_cli("add", "bsf-alpha; python_version < '3'")
    assert result.code == 1
    assert "excludes this interpreter" in result.err
    assert overlay_lines(repo) == []


def test_runtime_requests_never_take_urls_even_when_the_committed_file_may(
    repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOOTSTRAP_ALLOW_DIRECT_REFERENCES", "true")
    repo.write("bsf-gamma")
    with pytest.raises(RequirementsError, match="direct references"):
        runtime.add(repo.settings(), "bsf-alpha @ https://evil.example/bsf_alpha-9.0-py3-none-any.whl")
