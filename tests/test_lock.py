"""The committed lock: ``lock`` writes it, ``sync`` honours it while it matches, and it is an input."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from bootstrap.errors import BootstrapError
from bootstrap.inputs import requirements
from bootstrap.pipeline.sync import sync
from tests.conftest import BACKEND, Repo, python_in

_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", re.MULTILINE)


def lock_path(repo: Repo) -> Path:
    return repo.root / "requirements.lock"


def pins(text: str) -> dict[str, str]:
    return dict(_PIN.findall(text))


def lock(run_cli: Any, *args: str) -> str:
    result = run_cli("lock", *args)
    assert result.code == 0, result.err
    assert "requirements.lock" in result.out
    return result.out


def test_lock_writes_a_header_and_exact_pins(repo: Repo, run_cli: Any) -> None:
    repo.write("# reports", "bsf-beta==1.0")
    out = lock(run_cli)
    path = lock_path(repo)
    assert path.is_file()
    assert "2 pins" in out
    text = path.read_text()
    expected_sha = requirements.read(repo.requirements).input_sha256
    header = [line for line in text.splitlines()[:10] if "input-sha256=" in line]
    assert len(header) == 1 and header[0].startswith("#")
    assert header[0].endswith(f"input-sha256={expected_sha}")
    assert pins(text) == {"bsf-alpha": "2.0", "bsf-beta": "1.0"}
    for line in text.splitlines():  # nothing but comments and exact pins
        assert not line.strip() or line.lstrip().startswith("#") or _PIN.match(line), line
    assert not repo.packages_dir.exists()  # locking does not touch the packages folder

    result = sync(repo.settings())
    assert result.changed
    m = repo.manifest()
    assert m["lock_source"] == "committed"
    assert m["lock_file"] == str(path)
    assert str(path) in m["inputs"]
    assert repo.installed() == {"bsf-alpha": "2.0", "bsf-beta": "1.0"}


def test_lock_respects_the_ranges_of_the_file(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-alpha<2")
    lock(run_cli)
    assert pins(lock_path(repo).read_text()) == {"bsf-alpha": "1.0"}


def test_relocking_keeps_pins_that_still_fit(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-alpha<2")
    lock(run_cli)
    repo.write("bsf-alpha", "bsf-gamma")  # alpha 2.0 would now be allowed, but 1.0 still fits
    lock(run_cli)
    assert pins(lock_path(repo).read_text()) == {"bsf-alpha": "1.0", "bsf-gamma": "1.0"}


def test_a_stale_lock_is_not_used_and_says_so(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-alpha<2")
    lock(run_cli)
    assert run_cli("sync").code == 0
    assert repo.manifest()["lock_source"] == "committed"
    lock_text = lock_path(repo).read_text()

    repo.write("bsf-alpha<2", "bsf-gamma")
    result = run_cli("sync")
    assert result.code == 0, result.err
    warnings = [line for line in result.err.splitlines() if "stale" in line]
    assert len(warnings) == 1 and "requirements.lock" in warnings[0]
    m = repo.manifest()
    assert m["status"] == "ok"
    assert m["lock_source"] in ("resolved", "cache")
    assert m["lock_file"] is None
    assert repo.installed() == {"bsf-alpha": "1.0", "bsf-gamma": "1.0"}
    assert lock_path(repo).read_text() == lock_text  # sync never rewrites the committed lock
    assert run_cli("check").code == 0


def test_stale_lock_warning_is_logged(
    repo: Repo, run_cli: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo.write("bsf-gamma")
    lock(run_cli)
    repo.write("bsf-gamma", "bsf-alpha==1.0")
    monkeypatch.setattr(logging.getLogger("bootstrap"), "propagate", True)  # however an earlier CLI run left it
    with caplog.at_level(logging.INFO, logger="bootstrap"):
        sync(repo.settings())
    stale = [r for r in caplog.records if r.levelno == logging.WARNING and "stale" in r.getMessage()]
    assert len(stale) == 1
    assert "changed since" in stale[0].getMessage()
    assert repo.installed() == {"bsf-alpha": "1.0", "bsf-gamma": "1.0"}


def test_a_lock_not_written_by_bootstrap_is_stale(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-alpha")
    lock_path(repo).write_text("bsf-alpha==1.0\n")  # no header: cannot tell what it was made from
    result = run_cli("sync")
    assert result.code == 0, result.err
    assert "stale" in result.err and "not written by" in result.err
    assert repo.installed() == {"bsf-alpha": "2.0"}


def test_the_committed_lock_is_honoured_and_is_an_input(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-alpha")
    lock(run_cli)
    path = lock_path(repo)
    text = path.read_text()
    assert pins(text) == {"bsf-alpha": "2.0"}  # what `bsf-alpha` resolves to on its own
    assert run_cli("sync").code == 0
    first = repo.manifest()
    assert repo.installed() == {"bsf-alpha": "2.0"}
    assert run_cli("check").code == 0

    # hand-edit the pin, keep the header (it covers requirements.txt only)
    path.write_text(text.replace("bsf-alpha==2.0", "bsf-alpha==1.0"))
    check = run_cli("check")
    assert check.code == 0 and check.out.startswith("degraded: sync pending:")  # not a failed health probe
    assert "changed since" in check.out and "requirements.lock" in check.out

    result = run_cli("sync")
    assert result.code == 0, result.err
    m = repo.manifest()
    assert m["generation"] != first["generation"]
    assert m["lock_source"] == "committed"
    assert repo.installed() == {"bsf-alpha": "1.0"}
    proc = python_in(m["site_dir"], "import bsf_alpha; print(bsf_alpha.__version__)")
    assert proc.stdout.strip() == "1.0", proc.stderr
    assert run_cli("check").code == 0


def test_committing_a_lock_for_the_active_pins_does_not_rebuild(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-alpha<2")
    assert run_cli("sync").code == 0
    before = repo.manifest()
    assert before["lock_source"] == "resolved" and before["lock_file"] is None

    lock(run_cli)
    check = run_cli("check")  # a new input appeared: `make lock` committing a lock is a pending sync
    assert check.code == 0 and "sync pending" in check.out and "requirements.lock" in check.out
    result = run_cli("sync")
    assert result.code == 0, result.err
    after = repo.manifest()
    assert after["generation"] == before["generation"]
    assert after["lock_sha256"] == before["lock_sha256"]
    assert after["lock_source"] == "committed" and after["lock_file"] == str(lock_path(repo))
    assert run_cli("check").code == 0


def test_lock_with_hashes(repo: Repo, run_cli: Any, wheelhouse: Path) -> None:
    repo.write("bsf-beta==1.0")
    lock(run_cli, "--hashes")
    text = lock_path(repo).read_text()
    assert pins(text) == {"bsf-alpha": "2.0", "bsf-beta": "1.0"}
    for wheel in ("bsf_alpha-2.0-py3-none-any.whl", "bsf_beta-1.0-py3-none-any.whl"):
        digest = hashlib.sha256((wheelhouse / wheel).read_bytes()).hexdigest()
        assert f"--hash=sha256:{digest}" in text

    result = run_cli("sync")
    assert result.code == 0, result.err
    m = repo.manifest()
    assert m["status"] == "ok" and m["lock_source"] == "committed"
    assert repo.installed() == {"bsf-alpha": "2.0", "bsf-beta": "1.0"}


def test_a_wrong_hash_in_the_lock_is_refused_at_install(repo: Repo, run_cli: Any, wheelhouse: Path) -> None:
    repo.write("bsf-gamma")
    lock(run_cli, "--hashes")
    assert run_cli("sync").code == 0
    previous = repo.manifest()

    path = lock_path(repo)
    digest = hashlib.sha256((wheelhouse / "bsf_gamma-1.0-py3-none-any.whl").read_bytes()).hexdigest()
    path.write_text(path.read_text().replace(digest, "0" * 64))
    with pytest.raises(BootstrapError) as info:
        sync(repo.settings())
    assert info.value.stage == "install"
    assert "Traceback" not in str(info.value)
    assert "hash" in str(info.value).lower()
    m = repo.manifest()
    assert m["status"] == "failed" and m["error"]["stage"] == "install"
    assert m["generation"] == previous["generation"] and Path(m["site_dir"]).is_dir()
    staging = repo.packages_dir / "staging"
    assert not staging.exists() or list(staging.iterdir()) == []


def test_lock_refuses_a_bad_file_in_one_line(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-alpha", "--index-url https://pypi.example/simple")
    result = run_cli("lock")
    assert result.code == 1
    assert "Traceback" not in result.err
    lines = result.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bootstrap: error:")
    assert "requirements.txt:2:" in lines[0]
    assert not lock_path(repo).exists()


def test_lock_of_an_unresolvable_file_writes_nothing(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-alpha<2")
    lock(run_cli)
    before = lock_path(repo).read_text()
    repo.write("bsf-alpha==9.9")
    result = run_cli("lock")
    assert result.code == 1
    assert result.err.splitlines()[-1].startswith("bootstrap: error:") and "bsf-alpha" in result.err
    assert lock_path(repo).read_text() == before  # the committed lock is not clobbered


def test_an_arbitrary_equality_pin_locks_and_syncs(repo: Repo, run_cli) -> None:  # type: ignore[no-untyped-def]
    """``===`` is an exact pin too: pip-compile keeps it in the lock, and bootstrap installs from that lock."""
    repo.write("bsf-alpha===1.0")
    result = sync(repo.settings())
    assert result.changed and repo.installed() == {"bsf-alpha": "1.0"}
    assert run_cli("lock").code == 0
    assert "bsf-alpha===1.0" in (repo.root / "requirements.lock").read_text() or BACKEND == "uv"  # uv writes ==
    assert sync(repo.settings()).manifest["lock_source"] == "committed"
    assert run_cli("verify").code == 0


def test_a_file_that_does_not_match_its_pinned_hash_is_named(repo: Repo, run_cli) -> None:  # type: ignore[no-untyped-def]
    """A tampered wheel (here: a tampered hash) is one line naming the pin, not 'pip-compile failed on index'."""
    import re

    repo.write("bsf-alpha==1.0")
    assert run_cli("lock", "--hashes").code == 0
    lock = repo.root / "requirements.lock"
    lock.write_text(re.sub(r"sha256:[0-9a-f]{64}", "sha256:" + "0" * 64, lock.read_text()))
    result = run_cli("sync", "-q")
    assert result.code == 1 and len(result.err.splitlines()) == 1, result.err
    assert "the file served for bsf-alpha==1.0" in result.err and "does not have the hash its pin gives" in result.err
    assert "lock --hashes" in result.err and "failed on" not in result.err


@pytest.mark.pip_only  # pip-compile's hashing; uv takes the listed hashes itself (and asks HEAD, unserved here)
def test_a_lock_with_hashes_takes_them_from_the_index_and_downloads_no_other_platforms_files(
    repo: Repo, run_cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hashed lock lists every file of each pin (every platform's wheel). The index's listing gives their
    sha256 (PEP 503's #sha256= fragment): pip-compile alone downloads each file to hash it (87 s for a
    50-package set from PyPI); bootstrap takes the listed hash, as pip and uv do."""
    import http.server

    from tests.conftest import local_server
    from tests.wheels import Dist, build_wheel, module

    served = build_wheel(Dist("bsf-hashed", "1.0", module("bsf_hashed", "1.0")), tmp_path)
    served_sha = hashlib.sha256(served.read_bytes()).hexdigest()
    other = "bsf_hashed-1.0-cp39-cp39-win_amd64.whl"  # listed, never served: this machine cannot use it
    other_sha = "ab" * 32
    asked: list[str] = []

    class Index(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            if self.path.rstrip("/") == "/simple/bsf-hashed":
                body = (
                    f'<a href="/files/{served.name}#sha256={served_sha}">{served.name}</a>\n'
                    f'<a href="/files/{other}#sha256={other_sha}">{other}</a>\n'
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
            elif self.path == f"/files/{served.name}":
                body = served.read_bytes()
                self.send_response(200)
            else:
                body = b"not here"
                self.send_response(404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with local_server(Index) as url:
        monkeypatch.delenv("PIP_NO_INDEX")
        monkeypatch.delenv("PIP_FIND_LINKS")
        monkeypatch.setenv("PIP_INDEX_URL", f"{url}/simple")
        repo.write("bsf-hashed")
        lock(run_cli, "--hashes")
    text = lock_path(repo).read_text()
    assert f"--hash=sha256:{served_sha}" in text and f"--hash=sha256:{other_sha}" in text
    assert f"/files/{other}" not in asked, "the other platform's wheel was downloaded to hash it"
    assert asked.count(f"/files/{served.name}") <= 1, "downloaded again to hash it"  # once: its metadata


def test_a_committed_lock_pinning_a_name_twice_is_one_line_naming_both(repo: Repo, run_cli: Any) -> None:
    repo.write("bsf-alpha")
    assert run_cli("lock").code == 0
    path = lock_path(repo)
    text = path.read_text()
    number = len(text.splitlines()) + 1
    path.write_text(text + "BSF_Alpha==1.0\n")  # a merge that kept both sides
    result = run_cli("sync", "-q")
    assert result.code == 1 and len(result.err.splitlines()) == 1, result.err
    assert f"{path}:{number}: pins bsf-alpha twice (line " in result.err
    assert "bsf-alpha==2.0; line" in result.err and f"line {number}: bsf-alpha==1.0)" in result.err
    assert "ResolutionImpossible" not in result.err and not repo.manifest()["site_dir"]
