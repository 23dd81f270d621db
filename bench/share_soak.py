"""Soak bootstrap on a real SMB share seen by two instances (#15's goals), and count what goes wrong.

Samba on 127.0.0.1 and two smbnetfs mounts in two mount namespaces at one path (tests/smbshare.py),
each instance with its own checkout of the workflow repo; packages from the tests' tiny wheels
(tests/wheels.py), pip isolated as the tests do it (an empty PIP_CONFIG_FILE, PIP_NO_INDEX,
PIP_FIND_LINKS the wheelhouse, no other PIP_*), BOOTSTRAP_LEASE_SECONDS=4.

rounds  each round a requirements set of its own (written to both checkouts), 4 syncs at once (2 per
        instance) while a reader on each instance holds the manifest open and asks activate() for the
        generation (tests/test_share.py's READER; from the second round on: the first is on an empty
        folder). Counted: failed syncs (exit != 0), duplicate publishes (more than one new folder in
        generations/, or the syncs of a round naming different generations), torn reads (failures the
        readers report, and readers that die), builds destroyed (syncs whose output says "incomplete" or
        "No such file or directory" naming staging/), debris (staging entries, *.tmp, .filelock-probe-*)
        and failed `check` / `verify` from both instances after the round.
kills   each a new set: a sync on A, its process group SIGKILLed at a random point (alternately 0.2-4 s
        after it started, or 0-0.7 s after staging/ first has an entry), then a sync on B, which must
        exit 0 and publish the set; then `check` and `verify` from both, and no debris. Counted: how
        many converged, and where the kill landed (mid-build: staging had a build's entry; during gc: only
        an old generation in staging's trash).

Usage: ``.venv/bin/python bench/share_soak.py [--rounds 20] [--kills 10] [--seed N]``. Prints a
summary table; the figures and every failure's output go to bench/share-soak-results.json.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "share-soak-results.json"
sys.path.insert(0, str(ROOT))

from tests import smbshare  # noqa: E402  (the repo's root first on sys.path: tests/ is no package installed)
from tests import test_share as share_tests  # noqa: E402
from tests.conftest import session_processes  # noqa: E402
from tests.wheels import build_wheelhouse  # noqa: E402

INSTANCES = share_tests.INSTANCES
DESTROYED = re.compile(r"incomplete|No such file or directory[^\n]*staging/", re.IGNORECASE)
REPORTED = re.compile(r"generation (cpython-[0-9a-z-]+)")
Pins = dict[str, str]


def requirement_sets() -> Iterator[tuple[list[str], Pins]]:
    """Distinct sets of the tiny wheels, each with what it resolves to, no two resolving alike.

    bsf-beta 1.0 needs bsf-alpha>=1, 2.0 needs >=2 (so beta 2.0 with alpha 1.0 cannot be); a set
    with beta 1.0 and no alpha pin may keep either alpha (the resolver keeps a pin it already has):
    "*". Deterministic order, shuffled once, so neighbours differ in several packages and most
    rounds need a generation of their own.
    """
    seen: set[tuple[tuple[str, str], ...]] = set()
    found: list[tuple[list[str], Pins]] = []
    for alpha, beta, gamma, yaml, jaraco in itertools.product(
        (None, "1.0", "2.0"), (None, "1.0", "2.0"), (False, True), (False, True), (None, "1.0", "2.0")
    ):
        if beta == "2.0" and alpha == "1.0":
            continue
        lines = [f"bsf-alpha=={alpha}"] if alpha else []
        lines += [f"bsf-beta=={beta}"] if beta else []
        lines += ["bsf-gamma==1.0"] if gamma else []
        lines += ["PyYAML==6.0.2"] if yaml else []
        lines += [f"jaraco.functools=={jaraco}"] if jaraco else []
        pins = {"bsf-alpha": alpha or ("2.0" if beta == "2.0" else "*")} if alpha or beta else {}
        pins |= {"bsf-beta": beta} if beta else {}
        pins |= {"bsf-gamma": "1.0"} if gamma else {}
        pins |= {"pyyaml": "6.0.2"} if yaml else {}
        pins |= {"jaraco-functools": jaraco} if jaraco else {}
        key = tuple(sorted(pins.items()))
        if pins and key not in seen:
            seen.add(key)
            found.append((lines, pins))
    random.Random(15).shuffle(found)
    yield from itertools.cycle(found)


def hermetic_environment(work: Path, backend: str) -> None:
    """os.environ as tests/conftest.py makes it for the tests (the share helpers start from it)."""
    for key in list(os.environ):
        if key.startswith(("PIP_", "BOOTSTRAP_")) or key in ("PYTHONPATH", "VIRTUAL_ENV_PROMPT"):
            del os.environ[key]
    pip_conf = work / "pip.conf"
    pip_conf.write_text("")
    os.environ["PIP_CONFIG_FILE"] = str(pip_conf)
    os.environ["PIP_NO_INDEX"] = "1"
    os.environ["PIP_FIND_LINKS"] = str(build_wheelhouse(work / "wheelhouse"))
    os.environ["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    os.environ["BOOTSTRAP_BACKEND"] = backend


# --------------------------------------------------------------------------- what the share holds


def packages_of(share: smbshare.Share) -> Path:
    return share.served / "packages"


def staging_entries(share: smbshare.Share) -> list[str]:
    staging = packages_of(share) / "staging"
    try:
        return sorted(entry.name for entry in staging.iterdir())
    except FileNotFoundError:
        return []


def debris(share: smbshare.Share) -> list[str]:
    """Staging entries and stray files (tests/test_share.py's DEBRIS), as the server holds them."""
    stray = [str(p.relative_to(share.served)) for pattern in share_tests.DEBRIS for p in share.served.rglob(pattern)]
    return [f"staging/{name}" for name in staging_entries(share)] + sorted(stray)


def published(share: smbshare.Share) -> Pins:
    """The pins the manifest names, by normalised name ({} when there is no manifest)."""
    packages = share_tests.served_manifest(share).get("packages", [])
    return {re.sub(r"[-_.]+", "-", p["name"]).lower(): p["version"] for p in packages}


def wrong_set(share: smbshare.Share, pins: Pins) -> str | None:
    """What is wrong with the set the manifest names, against ``pins`` ("*": any version), or None."""
    have = published(share)
    if have.keys() == pins.keys() and all(want in ("*", have[name]) for name, want in pins.items()):
        return None
    return f"published {have}, wanted {pins}"


def health_failures(share: smbshare.Share) -> list[str]:
    """`check` and `verify` from both instances: one line per command that did not exit 0."""
    failures = []
    for instance in INSTANCES:
        for command in ("check", "verify"):
            result = share_tests.bootstrap(share, instance, command)
            if result.returncode != 0:
                failures.append(
                    f"{command} on {instance} exit {result.returncode}: {tail(result.stdout + result.stderr)}"
                )
    return failures


def tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


# --------------------------------------------------------------------------- racing rounds


def racing_round(share: smbshare.Share, number: int, lines: list[str], pins: Pins) -> dict[str, Any]:
    """Four syncs at once (A, B, A, B) and a reader per instance once a generation exists. Long because
    it runs the round, then reads every count off the syncs, the readers and the share."""
    share_tests.write_requirements(share, *lines)
    before = share_tests.generations(share)
    previous = share_tests.served_manifest(share).get("generation") if before else None
    stop = share.checkout("A").parent / f"stop-{number}"
    manifest = share.path / "packages" / "manifest.json"
    reading = INSTANCES if previous else ()
    readers = [share_tests.start_reader(share, instance, manifest, stop) for instance in reading]
    started = time.monotonic()
    syncs = [share_tests.start_sync(share, instance) for instance in ("A", "B", "A", "B")]
    results = [share_tests.finish(proc) for proc in syncs]
    wall = time.monotonic() - started
    new = share_tests.generations(share) - before
    final = str(share_tests.served_manifest(share).get("generation") or "")
    stop.write_text(final)
    reads = [share_tests.finish(reader) for reader in readers]
    reported = {match[-1] for _, out in results if (match := REPORTED.findall(out))}
    failed = [f"sync {i} ({'ABAB'[i]}) exit {code}: {tail(out)}" for i, (code, out) in enumerate(results) if code]
    destroyed = [f"sync {i}: {m.group(0)}" for i, (_, out) in enumerate(results) if (m := DESTROYED.search(out))]
    torn, anomalies, read_count = 0, [], 0
    for instance, (code, out) in zip(reading, reads, strict=True):
        try:
            report = json.loads(out.strip().splitlines()[-1])
        except (IndexError, ValueError):
            torn += 1
            anomalies.append(f"reader on {instance} died (exit {code}): {tail(out)}")
            continue
        torn += report["failed"]
        read_count += report["reads"]
        if report["failed"]:
            anomalies.append(f"reader on {instance}: {report}")
        elif report["seen"][:1] != [previous] or report["seen"][-1:] != [final] or len(report["seen"]) > 2:
            anomalies.append(f"reader on {instance} saw {report['seen']} (old {previous}, new {final})")
    return {
        "round": number,
        "requirements": lines,
        "wall_s": round(wall, 2),
        "failed_syncs": failed,
        "new_generations": sorted(new),
        "reported_generations": sorted(reported),
        "duplicate_publish": len(new) > 1 or len(reported) > 1,
        "reported_is_final": reported == {final},
        "final": final,
        "wrong_set": wrong_set(share, pins),
        "builds_destroyed": destroyed,
        "torn_reads": torn,
        "reads": read_count,
        "reader_anomalies": anomalies,
        "debris": debris(share),
        "lease_left": (packages_of(share) / ".bootstrap.lease").exists(),
        "health_failures": health_failures(share),
        "generations_kept": len(share_tests.generations(share)),
    }


# --------------------------------------------------------------------------- kills


def wait_and_kill(
    share: smbshare.Share, proc: subprocess.Popen[str], pins: Pins, mode: str, rng: random.Random
) -> dict[str, Any]:
    """SIGKILL ``proc``'s process group at a random point; say where it landed."""
    started = time.monotonic()
    if mode == "after staging":
        deadline = started + 120
        while proc.poll() is None and not staging_entries(share) and time.monotonic() < deadline:
            time.sleep(0.02)
        delay = rng.uniform(0.0, 0.7)
    else:
        delay = rng.uniform(0.2, 4.0)
    until = time.monotonic() + delay
    while proc.poll() is None and time.monotonic() < until:
        time.sleep(0.01)
    exited_first = proc.poll() is not None
    staging = staging_entries(share)
    switched = wrong_set(share, pins) is None
    with_delay = round(time.monotonic() - started, 2)
    if not exited_first:
        os.killpg(proc.pid, signal.SIGKILL)
    out, err = proc.communicate()
    deadline = time.monotonic() + 10
    while session_processes(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if exited_first:
        landed = "after (the sync had ended)"
    elif any(not name.startswith("trash-") for name in staging):
        landed = "mid-build"
    elif staging:
        landed = "during gc"  # only an old generation in the trash: the new one was published
    elif switched:
        landed = "after publishing"
    else:
        landed = "before building"
    return {
        "mode": mode,
        "killed_at_s": with_delay,
        "landed": landed,
        "staging_at_kill": staging,
        "exit": proc.returncode,
        "output": tail(out + err, 6),
    }


def kill_and_recover(
    share: smbshare.Share, number: int, lines: list[str], pins: Pins, rng: random.Random
) -> dict[str, Any]:
    """A sync on A killed at a random point, then a sync on B: it must publish the set, healthy from both."""
    share_tests.write_requirements(share, *lines)
    started = time.monotonic()
    killed = share_tests.start_sync(share, "A")
    kill = wait_and_kill(share, killed, pins, ("after staging", "timer")[number % 2], rng)
    recovery = share_tests.bootstrap(share, "B", "sync")
    wall = time.monotonic() - started
    manifest = share_tests.served_manifest(share)
    problems = []
    if recovery.returncode != 0:
        problems.append(f"sync on B exit {recovery.returncode}: {tail(recovery.stdout + recovery.stderr)}")
    if manifest.get("generation") not in share_tests.generations(share):
        problems.append(f"the manifest names {manifest.get('generation')!r}, not a generation on the share")
    wrong = wrong_set(share, pins)
    problems += [wrong] if wrong else []
    problems += health_failures(share)
    left = debris(share)
    problems += [f"debris: {left}"] if left else []
    return {
        "kill": number,
        "requirements": lines,
        **kill,
        "wall_s": round(wall, 2),
        "converged": not problems,
        "problems": problems,
        "lease_left": (packages_of(share) / ".bootstrap.lease").exists(),
        "recovery_output": tail(recovery.stdout + recovery.stderr, 8),
    }


# --------------------------------------------------------------------------- summary, main


def summary(rounds: list[dict[str, Any]], kills: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "rounds": len(rounds),
        "syncs": 4 * len(rounds),
        "failed syncs": sum(len(r["failed_syncs"]) for r in rounds),
        "duplicate publishes": sum(r["duplicate_publish"] for r in rounds),
        "rounds whose syncs named another generation than the manifest": sum(
            not r["reported_is_final"] for r in rounds
        ),
        "rounds publishing another set than written": sum(bool(r["wrong_set"]) for r in rounds),
        "rounds publishing no new generation": sum(not r["new_generations"] for r in rounds),
        "torn reads": sum(r["torn_reads"] for r in rounds),
        "reads": sum(r["reads"] for r in rounds),
        "reader anomalies": sum(len(r["reader_anomalies"]) for r in rounds),
        "builds destroyed": sum(len(r["builds_destroyed"]) for r in rounds),
        "rounds with debris": sum(bool(r["debris"]) for r in rounds),
        "rounds leaving a build claim": sum(r["lease_left"] for r in rounds),
        "check/verify failures": sum(len(r["health_failures"]) for r in rounds),
        "most generations kept": max((r["generations_kept"] for r in rounds), default=0),
        "median round (4 syncs) s": round(statistics.median(r["wall_s"] for r in rounds), 1) if rounds else None,
        "kills": len(kills),
        "converged": sum(k["converged"] for k in kills),
        "mid-build kills": sum(k["landed"] == "mid-build" for k in kills),
        "kills during gc (after publishing)": sum(k["landed"] == "during gc" for k in kills),
        "kills before building": sum(k["landed"] == "before building" for k in kills),
        "kills leaving a build claim after the recovery": sum(k["lease_left"] for k in kills),
        "kills after publishing (or after the sync ended)": sum(k["landed"].startswith("after") for k in kills),
        "median kill + recovery s": round(statistics.median(k["wall_s"] for k in kills), 1) if kills else None,
    }


def main() -> int:
    """Long because it parses the arguments, sets the share up, runs both parts and writes the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=None, help="for the kills' random points (default: random)")
    parser.add_argument("--backend", default="pip", choices=("pip", "uv"))
    args = parser.parse_args()
    why = smbshare.unavailable() or (
        f"missing {', '.join(smbshare.missing_programs())}: {smbshare.INSTALL_HINT}"
        if smbshare.missing_programs()
        else None
    )
    if why:
        print(f"the share cannot be set up here: {why}")
        return 2
    seed = args.seed if args.seed is not None else random.randrange(10**6)
    rng, sets = random.Random(seed), requirement_sets()
    print(f"share soak: {args.rounds} racing rounds, {args.kills} kills, seed {seed}, backend {args.backend}")
    rounds: list[dict[str, Any]] = []
    kills: list[dict[str, Any]] = []
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bootstrap-soak-") as folder:
        work = Path(folder)
        hermetic_environment(work, args.backend)
        (work / "local").mkdir()
        with smbshare.serve(work / "smb") as server, smbshare.open_share(server, "soak", work / "local") as share:
            for number in range(1, args.rounds + 1):
                lines, pins = next(sets)
                rounds.append(racing_round(share, number, lines, pins))
                print(round_line(rounds[-1]), flush=True)
            for number in range(1, args.kills + 1):
                lines, pins = next(sets)
                kills.append(kill_and_recover(share, number, lines, pins, rng))
                print(kill_line(kills[-1]), flush=True)
    figures = summary(rounds, kills)
    print("\n" + "\n".join(f"  {key:<64} {value}" for key, value in figures.items()))
    print(f"took {(time.monotonic() - began) / 60:.1f} min")
    RESULTS.write_text(
        json.dumps(
            {
                "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "head": subprocess.run(
                    ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
                ).stdout.strip(),
                "seed": seed,
                "backend": args.backend,
                "lease_seconds": share_tests.LEASE_SECONDS,
                "summary": figures,
                "rounds": rounds,
                "kills": kills,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written: {RESULTS.relative_to(ROOT)}")
    clean = figures["converged"] == len(kills) and not any(
        figures[k]
        for k in (
            "failed syncs",
            "duplicate publishes",
            "torn reads",
            "builds destroyed",
            "rounds with debris",
            "check/verify failures",
            "rounds publishing another set than written",
        )
    )
    return 0 if clean else 1


def round_line(r: dict[str, Any]) -> str:
    bad = [*r["failed_syncs"], *r["builds_destroyed"], *r["reader_anomalies"], *r["health_failures"]]
    bad += [f"debris: {r['debris']}"] if r["debris"] else []
    bad += [r["wrong_set"]] if r["wrong_set"] else []
    if not r["reported_is_final"]:
        bad.append(f"the syncs reported {r['reported_generations']}, the manifest names {r['final']}")
    if r["duplicate_publish"]:
        bad.append(f"duplicate publish: new {r['new_generations']}, reported {r['reported_generations']}")
    head = f"round {r['round']:2d}: {r['wall_s']:5.1f} s, new {len(r['new_generations'])}, {r['reads']} reads"
    head += f", {r['generations_kept']} generations kept"
    return head + "".join("\n    " + line.replace("\n", "\n      ") for line in bad)


def kill_line(k: dict[str, Any]) -> str:
    head = f"kill {k['kill']:2d}: {k['mode']}, at {k['killed_at_s']} s, {k['landed']}; recovery "
    head += f"{'converged' if k['converged'] else 'FAILED'} ({k['wall_s']} s)"
    return head + "".join("\n    " + line.replace("\n", "\n      ") for line in k["problems"])


if __name__ == "__main__":
    sys.exit(main())
