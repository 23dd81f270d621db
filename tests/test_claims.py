"""Correct without trusting the share's locks (#15), on a local folder: build claims (leases made by
exclusive create), builders that never remove each other's staging, content-derived generation ids,
and pointer writes and reads that ride out a share's refusals. The same on a real SMB share:
tests/test_share.py."""

from __future__ import annotations

import errno
import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from bootstrap.pipeline import publish
from bootstrap.pipeline.sync import sync
from bootstrap.store import leases, locks, manifest
from bootstrap.store.fs import atomic_write_text, copy_file, network_filesystem
from bootstrap.store.layout import Layout
from tests.conftest import Repo, python_in

# A sync whose fcntl lock holds nothing: as on an SMB client whose locks do not reach the server.
NO_LOCAL_LOCK = (
    "import sys\n"
    "import bootstrap.store.locks as locks\n"
    "class NoLock:\n"
    "    def __init__(self, path, **options): pass\n"
    "    def acquire(self, timeout=None): pass\n"
    "    def release(self): pass\n"
    "locks.FileLock = NoLock\n"
    "from bootstrap.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
FOREIGN_BOOT = "00000000-0000-0000-0000-000000000000"


def _unlocked_sync(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", NO_LOCAL_LOCK, *(args or ("sync",))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def _race(count: int = 4) -> list[tuple[int, str]]:
    procs = [_unlocked_sync() for _ in range(count)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        results.append((proc.returncode, out + err))
    return results


def _foreign_lease(path: Path, *, ttl: float, age: float = 0.0, **extra: object) -> None:
    """A lease as another instance (another kernel) leaves it; ``age`` seconds old by its mtime."""
    record = {"host": "other-instance", "boot_id": FOREIGN_BOOT, "pid": 999999, "ttl": ttl, "since": "x", **extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    if age:
        stamp = time.time() - age
        os.utime(path, (stamp, stamp))


@pytest.mark.parametrize("change", ["empty folder", "upgrade", "downgrade"])
def test_racing_syncs_whose_locks_hold_nothing_publish_one_generation(repo: Repo, change: str) -> None:
    if change != "empty folder":
        repo.write("bsf-alpha==2.0" if change == "downgrade" else "bsf-alpha==1.0", "bsf-gamma")
        sync(repo.settings())
    repo.write("bsf-alpha==1.0" if change == "downgrade" else "bsf-alpha==2.0", "bsf-gamma")
    before = set(os.listdir(repo.packages_dir / "generations")) if change != "empty folder" else set()

    results = _race()

    assert [code for code, _ in results] == [0, 0, 0, 0], [text for _, text in results]
    new = set(os.listdir(repo.packages_dir / "generations")) - before
    assert len(new) == 1, new  # one builder at a time, by the claim alone
    assert repo.manifest()["generation"] in new
    assert sum("installing" in text for _, text in results) == 1
    assert sorted(os.listdir(repo.packages_dir / "staging")) == []
    assert not (repo.packages_dir / ".bootstrap.lease").exists()
    site = repo.manifest()["site_dir"]
    expected = "1.0" if change == "downgrade" else "2.0"
    assert python_in(site, "import bsf_alpha; print(bsf_alpha.__version__)").stdout.strip() == expected


def test_the_claim_names_its_holder_and_is_renewed_while_held(repo: Repo) -> None:
    layout = Layout(repo.packages_dir, lease_seconds=1)
    repo.packages_dir.mkdir()
    with locks.build_lock(layout, 5):
        lease = json.loads(layout.build_lease.read_text())
        first = layout.build_lease.stat().st_mtime_ns
        time.sleep(1.2)  # four renewals a lease: at least one in this time
        assert layout.build_lease.stat().st_mtime_ns > first
        assert (lease["pid"], lease["ttl"]) == (os.getpid(), 1)
        assert lease["boot_id"] and lease["host"]
    assert not layout.build_lease.exists()


def test_a_live_claim_from_another_instance_is_waited_for_until_the_time_out(repo: Repo) -> None:
    layout = Layout(repo.packages_dir, lease_seconds=30)
    _foreign_lease(layout.build_lease, ttl=30)
    with pytest.raises(locks.LockTimeoutError, match="pid 999999 on other-instance"), locks.build_lock(layout, 0.5):
        pass
    assert layout.build_lease.exists()  # never taken from a live holder


def test_an_expired_claim_of_a_dead_instance_is_taken_over(repo: Repo, caplog: pytest.LogCaptureFixture) -> None:
    repo.write("bsf-alpha==1.0")
    layout = Layout(repo.packages_dir)
    _foreign_lease(layout.build_lease, ttl=2, age=60)  # last renewed a minute ago, by the share's clock
    caplog.set_level("INFO", logger="bootstrap")

    sync(repo.settings())

    assert repo.installed() == {"bsf-alpha": "1.0"}
    assert "taking over the expired build claim (pid 999999 on other-instance" in caplog.text
    assert not layout.build_lease.exists()


def test_a_claim_left_by_a_dead_process_of_this_machine_is_taken_over_at_once(repo: Repo) -> None:
    repo.packages_dir.mkdir()
    layout = Layout(repo.packages_dir, lease_seconds=3600)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    record = leases.holder_identity(3600)
    layout.build_lease.write_text(json.dumps({**record, "pid": int(dead.stdout), "pid_started": "1"}))
    started = time.monotonic()
    with locks.build_lock(layout, 30) as waited:
        assert waited
    assert time.monotonic() - started < 30  # not the hour of its ttl


def test_two_waiters_never_both_take_over_one_expired_claim(repo: Repo) -> None:
    """Each process takes the claim once; intervals of holding never overlap (fcntl locks off)."""
    repo.packages_dir.mkdir()
    _foreign_lease(repo.packages_dir / ".bootstrap.lease", ttl=1, age=60)
    log = repo.packages_dir.parent / "held.log"
    code = (
        "import time, bootstrap.store.locks as locks\n"
        "class NoLock:\n"
        "    def __init__(self, path, **options): pass\n"
        "    def acquire(self, timeout=None): pass\n"
        "    def release(self): pass\n"
        "locks.FileLock = NoLock\n"
        "from bootstrap.store.layout import Layout\n"
        f"with locks.build_lock(Layout({str(repo.packages_dir)!r}, lease_seconds=5), 60):\n"
        "    start = time.monotonic_ns()\n"
        "    time.sleep(0.3)\n"
        f"    open({str(log)!r}, 'a').write(f'{{start}} {{time.monotonic_ns()}}\\n')\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(4)]
    assert [proc.wait(timeout=120) for proc in procs] == [0, 0, 0, 0]
    spans = sorted(tuple(map(int, line.split())) for line in log.read_text().splitlines())
    assert len(spans) == 4
    assert all(end <= next_start for (_, end), (next_start, _) in itertools.pairwise(spans)), spans


def test_cleanup_leaves_a_live_builders_staging_and_removes_a_dead_ones(repo: Repo) -> None:
    layout = Layout(repo.packages_dir, lease_seconds=30)
    live, dead, stale, old_style = (layout.staging / name for name in ("live", "dead", "stale", "old-style"))
    for folder in (live, dead, stale, old_style):
        (folder / "site").mkdir(parents=True)
    _foreign_lease(layout.staging_lease(live), ttl=30)  # another instance, building now
    dead_pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True).stdout)
    layout.staging_lease(dead).write_text(json.dumps({**leases.holder_identity(30), "pid": dead_pid}))
    _foreign_lease(layout.staging_lease(stale), ttl=30, age=120)  # another instance, gone for two minutes

    publish.clean_staging(layout)

    assert sorted(os.listdir(layout.staging)) == ["live", "live.lease"]


def test_a_generation_a_live_lease_names_is_never_collected(repo: Repo) -> None:
    repo.write("bsf-alpha==1.0")
    sync(repo.settings())
    first = repo.manifest()["generation"]
    repo.write("bsf-alpha==2.0")
    sync(repo.settings())
    layout = repo.settings().layout
    _foreign_lease(layout.staging_lease(layout.staging / "elsewhere"), ttl=30, generation=first)

    removed = publish.collect_garbage(layout, active=repo.manifest()["generation"], keep=1)

    assert removed == []
    assert (layout.generations / first).is_dir()


def test_the_generation_id_is_its_contents_and_a_second_builder_uses_the_published_one(
    repo: Repo, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo.write("bsf-alpha==1.0", "bsf-gamma")
    sync(repo.settings())
    built = repo.manifest()["generation"]
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(repo.packages_dir / "generations", elsewhere / "generations", symlinks=True)
    shutil.rmtree(repo.packages_dir)
    shutil.move(elsewhere, repo.packages_dir)  # the generation is there, the manifest is not
    caplog.set_level("INFO", logger="bootstrap")

    sync(repo.settings())

    assert repo.manifest()["generation"] == built
    assert f"generation {built}, of these very pins, is already published: using it" in caplog.text
    assert "into a new generation" not in caplog.text  # (the install while resolving is discarded)
    assert os.listdir(repo.packages_dir / "generations") == [built]


def test_a_rename_that_loses_to_an_identical_generation_is_success(repo: Repo) -> None:
    repo.write("bsf-alpha==1.0")
    sync(repo.settings())
    layout = repo.settings().layout
    current = repo.manifest()
    record = publish.read_generation(layout.generation(current["generation"]))
    assert record is not None
    staging = layout.staging / "another-builder"
    shutil.copytree(layout.generation(current["generation"]), staging, symlinks=True)

    site = publish.publish(layout, staging, record)

    assert site == layout.site(current["generation"])
    assert not staging.exists()


def test_the_pointer_is_written_while_the_share_refuses_the_replace_for_a_moment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "manifest.json"
    target.write_text("old")
    refusals = [errno.EEXIST, errno.EBUSY, errno.EIO]  # what SMB answers while another client reads it
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        if refusals:
            raise OSError(refusals.pop(0), os.strerror(errno.EEXIST))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_a_reader_rides_out_the_moment_the_manifest_is_missing(repo: Repo) -> None:
    repo.write("bsf-alpha==1.0")
    sync(repo.settings())
    path = repo.manifest_path
    saved = path.read_bytes()
    path.unlink()  # as a reader on SMB may see it around a replace
    threading.Timer(0.15, path.write_bytes, args=(saved,)).start()

    found, why = manifest.load(path)

    assert why is None and found is not None and found["generation"] == repo.manifest()["generation"]


def test_a_folder_never_synced_reports_no_manifest_at_once(tmp_path: Path) -> None:
    started = time.monotonic()
    assert manifest.load(tmp_path / "manifest.json") == (None, None)
    assert time.monotonic() - started < 0.5  # no retrying where there is nothing to wait for


def test_carrying_over_on_a_filesystem_without_hard_links_or_xattrs_copies(
    repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo.write("bsf-alpha==1.0", "bsf-gamma")
    sync(repo.settings())
    old_site = Path(repo.manifest()["site_dir"])
    links: list[str] = []

    def no_link(source: str, target: str) -> None:
        links.append(source)
        raise OSError(errno.EPERM, "Operation not permitted")

    def no_xattrs(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EIO, "Input/output error")  # smbnetfs listing extended attributes

    monkeypatch.setattr(os, "link", no_link)
    monkeypatch.setattr(shutil, "copy2", no_xattrs)
    monkeypatch.setattr(shutil, "copystat", no_xattrs)
    repo.write("bsf-alpha==1.0", "bsf-gamma", "bsf-beta==1.0")

    sync(repo.settings())

    new_site = Path(repo.manifest()["site_dir"])
    assert new_site != old_site and repo.installed()["bsf-beta"] == "1.0"
    carried = new_site / "bsf_gamma.py"
    source = old_site / "bsf_gamma.py"
    assert carried.read_bytes() == source.read_bytes()
    assert carried.stat().st_ino != source.stat().st_ino  # a copy
    assert carried.stat().st_mtime_ns == source.stat().st_mtime_ns  # the bytecode's timestamp holds
    assert len(links) == 1  # one failed link, then copies: a round trip saved per file
    assert python_in(new_site, "import bsf_gamma, bsf_alpha").returncode == 0


def test_copy_file_keeps_mode_and_times_and_never_overwrites(tmp_path: Path) -> None:
    source = tmp_path / "a.py"
    source.write_text("x = 1\n")
    os.chmod(source, 0o444)
    os.utime(source, ns=(1_000_000_000, 2_000_000_000))
    copy_file(str(source), str(tmp_path / "b.py"))
    copied = (tmp_path / "b.py").stat()
    assert (copied.st_mode & 0o777, copied.st_mtime_ns) == (0o444, 2_000_000_000)
    with pytest.raises(FileExistsError):
        copy_file(str(source), str(tmp_path / "b.py"))


def test_status_names_a_sync_under_way_on_another_instance_and_its_staging_is_not_debris(
    repo: Repo, run_cli: Any
) -> None:
    repo.write("bsf-alpha==1.0")
    sync(repo.settings())
    layout = repo.settings().layout
    _foreign_lease(layout.build_lease, ttl=30)
    building = layout.staging / "20991231T000000000000Z-abcdef"
    (building / "site").mkdir(parents=True)
    _foreign_lease(layout.staging_lease(building), ttl=30)

    status = run_cli("status")
    check = run_cli("check", "--json")

    assert "syncing now      pid 999999 on other-instance, since x" in status.out
    assert "staging (debris" not in status.out
    assert building.name not in check.out  # not "left from an interrupted sync"
    report = json.loads(run_cli("status", "--json").out)
    assert report["syncing"] == "pid 999999 on other-instance, since x" and report["staging"] == []


def test_a_sync_with_nothing_to_build_removes_what_a_killed_sync_left_after_publishing(repo: Repo) -> None:
    """Killed during gc: its trash in staging and its claim stay; the next sync finds the set served."""
    repo.write("bsf-alpha==1.0")
    sync(repo.settings())
    layout = repo.settings().layout
    trash = layout.staging / "trash-cpython-311-dead-1234"
    (trash / "site").mkdir(parents=True)
    (trash / "site" / "f.py").write_text("x = 1\n")
    _foreign_lease(layout.build_lease, ttl=2, age=60)

    result = sync(repo.settings())

    assert not result.changed
    assert not trash.exists() and not layout.build_lease.exists()


def test_rollback_and_gc_follow_what_was_active_not_when_it_was_built(repo: Repo, run_cli: Any) -> None:
    """v1 builds A, v2 builds B, v1 again is served by A (the same contents): B served just before it."""
    built = {}
    for version in ("1.0", "2.0", "1.0"):
        repo.write(f"bsf-alpha=={version}")
        sync(repo.settings())
        built.setdefault(version, repo.manifest()["generation"])
    assert repo.manifest()["generation"] == built["1.0"]  # reused, not built again
    assert repo.manifest()["history"][:2] == [built["1.0"], built["2.0"]]

    assert run_cli("rollback").code == 0
    assert repo.manifest()["generation"] == built["2.0"]  # what served before, though built after

    repo.write("bsf-alpha==1.0", "bsf-gamma")
    sync(repo.settings(generations_kept=2))
    kept = set(os.listdir(repo.packages_dir / "generations"))
    # Kept: the new one and the one active just before it (v2, the rollback's), not v1's older build.
    assert kept == {repo.manifest()["generation"], built["2.0"]}


def test_a_lease_of_a_live_process_that_stopped_renewing_expires(repo: Repo) -> None:
    """Left behind by a long-lived host whose release failed: its pid lives on, its lease must not."""
    repo.packages_dir.mkdir()
    layout = Layout(repo.packages_dir, lease_seconds=1)
    record = leases.holder_identity(1)  # this very process: alive
    layout.build_lease.write_text(json.dumps(record))
    stamp = time.time() - 60
    os.utime(layout.build_lease, (stamp, stamp))
    assert leases.judge(layout.build_lease, 1).expired


def test_a_holder_in_another_pid_namespace_is_not_judged_by_its_pid(repo: Repo) -> None:
    """Containers on one kernel share the boot id, not their pids: a pid absent here may live there."""
    repo.packages_dir.mkdir()
    path = repo.packages_dir / ".bootstrap.lease"
    record = {**leases.holder_identity(30), "pid": 999999, "pid_namespace": "4026531836-elsewhere"}
    path.write_text(json.dumps(record))
    judged = leases.judge(path, 30)
    assert judged.exists and not judged.expired  # fresh: another container's live build


def test_a_manifest_that_cannot_be_read_for_good_is_reported_at_once(repo: Repo) -> None:
    repo.write("bsf-alpha==1.0")
    sync(repo.settings())
    repo.manifest_path.unlink()
    repo.manifest_path.mkdir()  # a folder in its place: EISDIR, no moment's glitch
    started = time.monotonic()
    found, why = manifest.load(repo.manifest_path)
    assert found is None and why is not None and "cannot be read" in why
    assert time.monotonic() - started < 0.3


MOUNTINFO = """\
22 1 0:21 / / rw,relatime - overlay overlay rw
30 22 0:40 / /home rw,relatime - cifs //files.example/share rw,vers=3.1.1
31 30 0:41 / /home/local\\040disk rw - ext4 /dev/sdb1 rw
32 22 0:42 / /mnt/smb rw,nosuid - fuse.smbnetfs smbnetfs rw
33 22 0:43 / /var/lib/docker rw - fuse.fuse-overlayfs fuse-overlayfs rw
"""


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/home/.packages", "cifs"),
        ("/home/local disk/.packages", None),  # a local disk mounted inside the share
        ("/mnt/smb/127.0.0.1/packages", "fuse.smbnetfs"),
        ("/var/lib/docker/x", None),  # a local FUSE filesystem
        ("/tmp/packages", None),
    ],
)
def test_the_network_share_a_folder_lies_on_is_told_from_the_mount_table(
    tmp_path: Path, path: str, kind: str | None
) -> None:
    table = tmp_path / "mountinfo"
    table.write_text(MOUNTINFO)
    assert network_filesystem(path, str(table)) == kind


def test_an_empty_lease_left_by_a_kill_between_create_and_write_expires_after_the_margin(repo: Repo) -> None:
    """A live maker writes its lease within milliseconds of creating it; an empty one seconds old is a dead
    maker's, whatever the ttl (the share kill test in CI killed a builder in that window)."""
    layout = Layout(repo.packages_dir, lease_seconds=3600)
    empty = layout.staging / "20991231T000000000000Z-abcdef.lease"
    empty.parent.mkdir(parents=True)
    empty.write_bytes(b"")
    stamp = time.time() - 10
    os.utime(empty, (stamp, stamp))

    publish.clean_staging(layout)

    assert os.listdir(layout.staging) == []
