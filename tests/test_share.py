"""Many instances, one real SMB share (#15): syncs race, die and leave leases from two mounts at once.

Samba on 127.0.0.1 and two smbnetfs mounts in two mount namespaces (tests/smbshare.py) stand for two
host instances that see the packages folder at the same path. Each instance has its own checkout of
the workflow repo (the same path in both, different folders behind it). Nothing here trusts a lock
taken through one mount to hold on the other: correctness must come from exclusive create, ``mkdir``
and leases that expire (BOOTSTRAP_LEASE_SECONDS, kept small here).
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import session_processes

if TYPE_CHECKING:  # imported by pytest as a plugin (below), so that its asserts are rewritten too
    from tests.smbshare import Share

pytest_plugins = ["tests.smbshare"]  # its fixtures: smb_server (the session's), share (each test's folder)
INSTANCES = ("A", "B")
pytestmark = pytest.mark.smb  # run with both backends (among the Makefile's UV_TESTS): uv copies differently

LEASE_SECONDS = 4
SYNC_TIMEOUT = 180
DEBRIS = (".filelock-probe-*", "*.tmp")
# A host reading the pointer while others switch it: it holds manifest.json open a moment (as a slow
# reader would: on SMB an open file makes a replace over it fail), then asks bootstrap.activate() for
# the active generation, which must never be missing; a raw read must never be torn (ENOENT around a
# replace is the share's, tolerated). Then a pause: the file is open about a quarter of the time per
# reader, not always (a reader that never lets go would rule out a writer that retries). It stops
# once told the final generation and has seen it.
READER = """
import json, os, sys, time
import bootstrap
manifest, stop = sys.argv[1], sys.argv[2]
reads, failures, seen, deadline = 0, [], [], None
while True:
    try:
        with open(manifest, encoding="utf-8") as held:
            text = held.read()
            time.sleep(0.05)
        json.loads(text)
    except FileNotFoundError:
        pass
    except ValueError as exc:
        failures.append(f"torn manifest: {exc}")
    try:
        site = bootstrap.activate(os.path.dirname(manifest))
    except Exception as exc:
        site, failures = None, failures + [f"activate raised {exc!r}"]
    if site is None:
        failures.append("activate() found no generation")
    else:
        generation = os.path.basename(os.path.dirname(site))
        if not seen or seen[-1] != generation:
            seen.append(generation)
    reads += 1
    time.sleep(0.15)
    if os.path.exists(stop):
        final = open(stop, encoding="utf-8").read()
        deadline = deadline or time.monotonic() + 20
        if seen[-1:] == [final] or time.monotonic() > deadline:
            break
print(json.dumps({"reads": reads, "failures": failures[:5], "failed": len(failures), "seen": seen}))
"""


def environment(share: Share, instance: str, **extra: str) -> dict[str, str]:
    """The hermetic test environment (conftest's pip isolation), pointed at the share and the checkout."""
    return {
        **os.environ,
        "BOOTSTRAP_PACKAGES_DIR": str(share.path / "packages"),
        "BOOTSTRAP_REQUIREMENTS_FILE": str(share.repo / "requirements.txt"),
        "BOOTSTRAP_LEASE_SECONDS": str(LEASE_SECONDS),
        "XDG_CACHE_HOME": str(share.checkout(instance).parent / f"cache-{instance}"),  # each instance's own disk
        **extra,
    }


def write_requirements(share: Share, *lines: str) -> None:
    """The same requirements file in both instances' checkouts (a commit pulled by both)."""
    for instance in INSTANCES:
        (share.checkout(instance) / "requirements.txt").write_text("".join(line + "\n" for line in lines))


def bootstrap(share: Share, instance: str, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return share.run(
        instance,
        [sys.executable, "-m", "bootstrap", *args],
        env=environment(share, instance, **extra),
        timeout=SYNC_TIMEOUT,
    )


def start_sync(share: Share, instance: str, **extra: str) -> subprocess.Popen[str]:
    return share.popen(instance, [sys.executable, "-m", "bootstrap", "sync"], env=environment(share, instance, **extra))


def start_reader(share: Share, instance: str, manifest: Path, stop: Path) -> subprocess.Popen[str]:
    return share.popen(instance, [sys.executable, "-c", READER, manifest, stop], env=environment(share, instance))


def finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        out, err = proc.communicate(timeout=SYNC_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
    return proc.returncode, out + err


def generations(share: Share) -> set[str]:
    """The generation folders, as the server holds them."""
    folder = share.served / "packages" / "generations"
    return {entry.name for entry in folder.iterdir()} if folder.is_dir() else set()


def served_manifest(share: Share) -> dict:  # type: ignore[type-arg]
    """The manifest as the server holds it ({} when there is none)."""
    path = share.served / "packages" / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {}


def assert_healthy_from_both(share: Share, generation: str) -> None:
    """check and verify pass from both instances, and both read the manifest naming ``generation``."""
    manifest = share.path / "packages" / "manifest.json"
    for instance in INSTANCES:
        for command in ("check", "verify"):
            result = bootstrap(share, instance, command)
            assert result.returncode == 0, f"{command} on {instance}: {result.stdout}{result.stderr}"
        read = share.python(instance, f"import json; print(json.load(open({str(manifest)!r}))['generation'])")
        assert read.returncode == 0 and read.stdout.strip() == generation, (instance, read.stdout, read.stderr)


def assert_no_debris(share: Share) -> None:
    staging = share.served / "packages" / "staging"
    left = sorted(entry.name for entry in staging.iterdir()) if staging.is_dir() else []
    assert not left, f"staging debris: {left}"
    stray = sorted(str(p.relative_to(share.served)) for pattern in DEBRIS for p in share.served.rglob(pattern))
    assert not stray, f"files left behind: {stray}"


def write_foreign_lease(share: Share, instance: str) -> None:
    """A build claim left by a dead instance on another machine: a host and boot id this machine never had."""
    lease = {
        "host": "other-instance",
        "boot_id": "00000000-0000-0000-0000-000000000000",
        "pid": 999999,
        "ttl": LEASE_SECONDS,
        "since": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "generation": None,
    }
    packages = share.path / "packages"
    code = (
        f"import json, os; os.makedirs({str(packages)!r}, exist_ok=True); "
        f"open(os.path.join({str(packages)!r}, '.bootstrap.lease'), 'w').write(json.dumps({lease!r}))"
    )
    written = share.python(instance, code)
    assert written.returncode == 0, written.stderr


@pytest.mark.slow
def test_rounds_of_four_syncs_from_two_instances_publish_one_generation_each(share: Share) -> None:
    """On an empty folder, after an upgrade, after a downgrade; from the second round on, a host on each
    instance reads the pointer throughout (it must see the old generation, then the new, never none)."""
    rounds = {
        "empty folder": ("bsf-beta==1.0", "jaraco.functools==1.0"),
        "upgrade": ("bsf-beta==2.0", "jaraco.functools==2.0"),
        "downgrade": ("bsf-beta==2.0", "jaraco.functools==1.0"),
    }
    manifest_path = share.path / "packages" / "manifest.json"
    for number, (label, lines) in enumerate(rounds.items()):
        write_requirements(share, *lines)
        before = generations(share)
        previous = served_manifest(share)["generation"] if before else None
        stop = share.checkout("A").parent / f"stop-{number}"  # local: seen by the test and both instances
        reading = INSTANCES if before else ()  # from the second round on: hosts reading while the pointer moves
        readers = [start_reader(share, instance, manifest_path, stop) for instance in reading]
        procs = [start_sync(share, instance) for instance in ("A", "B", "A", "B")]
        results = [finish(proc) for proc in procs]
        failed = [(i, out[-2000:]) for i, (code, out) in enumerate(results) if code != 0]
        new = generations(share) - before
        final = str(served_manifest(share).get("generation") or "")
        stop.write_text(final)
        read = [finish(reader) for reader in readers]
        assert not failed, f"{label}: failed syncs (index, output): {failed}"
        assert len(new) == 1, f"{label}: {len(new)} generations published: {sorted(new)}"
        assert final == new.pop(), label
        for instance, (code, out) in zip(reading, read, strict=True):
            assert code == 0, f"{label}: the reader on {instance} died: {out[-2000:]}"
            report = json.loads(out.strip().splitlines()[-1])
            assert report["failed"] == 0 and report["reads"] > 0, f"{label}, reader on {instance}: {report}"
            assert report["seen"][0] == previous and report["seen"][-1] == final, f"{label}, {instance}: {report}"
        assert_healthy_from_both(share, final)
        assert_no_debris(share)


@pytest.mark.slow
def test_a_sync_killed_on_one_instance_mid_build_is_finished_by_the_other(share: Share, slow_index: str) -> None:
    write_requirements(share, "bsf-beta==1.0", "bsf-gamma==1.0")
    killed = start_sync(share, "A", PIP_FIND_LINKS=slow_index)  # each wheel takes 1.5 s to download
    staging = share.served / "packages" / "staging"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and killed.poll() is None and not (staging.is_dir() and any(staging.iterdir())):
        time.sleep(0.02)
    if killed.poll() is not None:
        pytest.fail(f"the sync on A ended ({killed.returncode}) before it built anything: {finish(killed)[1][-2000:]}")
    assert staging.is_dir() and any(staging.iterdir()), "the sync on A never started building"
    os.killpg(killed.pid, signal.SIGKILL)
    killed.communicate()
    deadline = time.monotonic() + 10
    while session_processes(killed.pid) and time.monotonic() < deadline:
        time.sleep(0.05)

    result = bootstrap(share, "B", "sync")
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = served_manifest(share)
    assert manifest["generation"] in generations(share)
    assert_healthy_from_both(share, manifest["generation"])
    assert_no_debris(share)


def test_an_expired_lease_of_a_dead_instance_is_taken_over(share: Share) -> None:
    write_requirements(share, "bsf-alpha==1.0")
    write_foreign_lease(share, "A")
    result = bootstrap(share, "B", "sync")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    said = output.replace(str(share.path), "<share>")  # the folder's name is the test's: it says "expired"
    assert "expired" in said.lower(), f"B did not say it took over the expired claim: {output}"
    manifest = served_manifest(share)
    assert manifest["generation"] in generations(share)
    assert_healthy_from_both(share, manifest["generation"])


def test_a_no_op_startup_on_the_share_activates_the_generation_in_both_instances(share: Share) -> None:
    write_requirements(share, "bsf-alpha==2.0")
    synced = bootstrap(share, "A", "sync")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    generation = served_manifest(share)["generation"]
    manifest_bytes = (share.served / "packages" / "manifest.json").read_bytes()
    probe = (
        "import bootstrap, sys; m = bootstrap.startup(); print(m and m['generation']); "
        "print([p for p in sys.path if '/generations/' in p]); import bsf_alpha; print(bsf_alpha.__file__)"
    )
    for instance in INSTANCES:
        ran = share.python(instance, probe, env=environment(share, instance))
        assert ran.returncode == 0, (instance, ran.stderr)
        active, on_path, imported = ran.stdout.strip().splitlines()[-3:]
        site = str(share.path / "packages" / "generations" / generation / "site")
        assert active == generation and site in on_path, (instance, ran.stdout, ran.stderr)
        assert imported.startswith(site), (instance, imported)
    # The fast path from both: nothing was synced again (the manifest is byte for byte what A wrote).
    assert (share.served / "packages" / "manifest.json").read_bytes() == manifest_bytes
    assert generations(share) == {generation}


def test_an_org_synced_on_one_instance_is_healthy_and_imports_on_the_other(share: Share) -> None:
    """An organisation's generation on the share: its folder links (or, where the share refuses links, its
    files) resolve alike from both instances, and both find it healthy."""
    write_requirements(share, "bsf-beta==1.0")
    for instance in INSTANCES:
        org = share.checkout(instance) / "orgs" / "acme"
        org.mkdir(parents=True)
        (org / "requirements.txt").write_text("jaraco.context\n")
    synced = bootstrap(share, "A", "sync")
    assert synced.returncode == 0, synced.stdout + synced.stderr
    packages = share.path / "packages"
    org_manifest = json.loads((share.served / "packages" / "orgs" / "acme" / "manifest.json").read_text())
    site = packages / "orgs" / "acme" / org_manifest["site"]
    for instance in INSTANCES:
        for command in ("check", "verify"):
            result = bootstrap(share, instance, command, "--org", "acme")
            assert result.returncode == 0, f"{command} on {instance}: {result.stdout}{result.stderr}"
        code = (
            f"import sys; sys.path.insert(0, {str(site)!r}); import bsf_beta, jaraco.context; print(bsf_beta.__file__)"
        )
        imported = share.python(instance, code)
        assert imported.returncode == 0, imported.stderr
        assert imported.stdout.strip() == str(site / "bsf_beta" / "__init__.py")
    assert_no_debris(share)
