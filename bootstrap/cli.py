"""``python -m bootstrap``: parse, call, print. ``main(argv) -> int``."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Sequence

from bootstrap.errors import BootstrapError, SettingsError, StorageError, for_org, redact
from bootstrap.host.child import relay_line
from bootstrap.settings import Settings, load_settings
from bootstrap.store.fs import counted

TYPE_CHECKING = False
if TYPE_CHECKING:  # the manifest's types exist for the type checker only
    from bootstrap.store.manifest import Manifest

# Each command imports what it runs (marked `# slow path`): `check`, a health probe run every few
# seconds on some platforms, should not pay for watchdog, pip-tools' parsing and the pipeline.

log = logging.getLogger("bootstrap")


def _cmd_sync(settings: Settings, args: argparse.Namespace) -> int:
    from bootstrap.pipeline import sync_all  # slow path
    from bootstrap.pipeline.sync import sync  # slow path

    if settings.org is not None:  # `--org ID`: that organisation alone, on the workspace's active set
        _an_org_that_exists(settings)
        result = sync(settings)
        print(f"org {settings.org}: {_synced(result.changed, result.manifest)}")
        return 0
    everything = sync_all.sync_everything(settings)
    if everything.workspace is not None:
        print(_synced(everything.workspace.changed, everything.workspace.manifest))
    if everything.orgs or everything.removed:
        published = sum(1 for outcome in everything.orgs if outcome.result is not None and outcome.result.changed)
        current = sum(1 for outcome in everything.orgs if outcome.result is not None and not outcome.result.changed)
        failed = sum(1 for outcome in everything.orgs if outcome.error is not None)
        parts = [f"{published} synced", f"{current} up to date"] + ([f"{failed} failed"] if failed else [])
        parts += [f"{len(everything.removed)} removed (their folders left the repo)"] if everything.removed else []
        print(f"organisations: {', '.join(parts)}")
    org_failures = everything.failed[1:] if everything.workspace_error is not None else everything.failed
    if not args.relay:  # a host's child logged them already: the host serves the workspace whatever they are
        for line in org_failures:
            print(f"bootstrap: error: {' '.join(line.split())}", file=sys.stderr)
    if everything.workspace_error is not None:
        raise everything.workspace_error  # one line, as ever (for a host's child: its class and parts too)
    return 1 if org_failures and not args.relay else 0


def _an_org_that_exists(settings: Settings) -> None:
    """``sync``, ``add`` and ``lock --org ID`` of an organisation the repo does not have: one line, and no folder
    made for it (``status``, ``check`` and ``rollback`` still work on one that left, while its packages stay)."""
    if settings.org is not None and not settings.requirements_file.is_file():
        raise SettingsError(
            f"there is no organisation {settings.org!r}: {settings.requirements_file} does not exist "
            f"(an organisation is a folder of {settings.orgs_folder} with a requirements.txt)"
        )


def _an_org_known(settings: Settings) -> None:
    """``status``, ``verify``, ``rollback`` and ``remove --org ID``: an organisation the repo has, or one that left
    whose packages stay; else one line, and no folder made for a mistyped id."""
    if settings.org is not None and not settings.packages_dir.is_dir():
        _an_org_that_exists(settings)


def _synced(changed: bool, manifest: Manifest) -> str:
    summary = f"generation {manifest.get('generation')} ({counted(len(manifest.get('packages', [])), 'package')})"
    return f"synced: {summary} at {manifest['site_dir']}" if changed else f"up to date: {summary}"


def _cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from bootstrap.ops import health  # slow path

    _an_org_known(settings)
    report = health.status(settings)
    print(json.dumps(report, indent=2) if args.json else health.format_status(report))
    return 0


def _cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    from bootstrap.ops import health  # slow path

    report = health.check(settings)
    if settings.org is None:  # and every organisation's, one line each (the workspace's state decides the exit)
        report["orgs"] = health.check_orgs(settings)
    if args.relay:  # the health route of a host (host.azure_functions): the report is the answer
        _emit(args, {"event": "report", "report": report})
        return 0
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(health.one_line(report))
    if not args.json and report["notes"]:
        print("note: " + "; ".join(report["notes"]))
    if not args.json:
        for org, org_report in report.get("orgs", {}).items():
            print(f"org {org}: {health.one_line(org_report)}")
    return 1 if report["state"] == "unhealthy" else 0


def _cmd_lock(settings: Settings, args: argparse.Namespace) -> int:
    from bootstrap.inputs.desired import read_desired  # slow path
    from bootstrap.pipeline import resolve  # slow path
    from bootstrap.tools.backends import lazy_backend  # slow path

    _an_org_that_exists(settings)
    desired, _ = read_desired(settings, runtime=False)  # the lock is for committing: the repo file's alone
    lock = resolve.write_committed_lock(settings, desired, lazy_backend(settings), hashes=args.hashes)
    print(
        f"wrote {lock.committed_file} ({counted(len(lock.pins), 'pin')}); "
        f"commit it beside {settings.requirements_file.name}"
    )
    return 0


def _cmd_add(settings: Settings, args: argparse.Namespace) -> int:
    from bootstrap.host import runtime  # slow path
    from bootstrap.inputs.overlay import parse_request  # slow path

    _an_org_that_exists(settings)
    name = parse_request(args.requirement).name
    if args.if_needed:  # `bootstrap.ensure()` in a host: nothing to do when the active set already serves it
        served = runtime.served(settings, args.requirement)
        if served is not None:
            _emit(args, {"event": "added", "entry": served})
            print(f"{served['name']} {served['version']} is already served: nothing to do")
            return 0
    result = runtime.add(settings, args.requirement)
    entry = runtime.package_entry(result.manifest, name)
    _emit(args, {"event": "added", "entry": entry})
    print(
        f"added {entry['name'] if entry else args.requirement} {entry['version'] if entry else ''} at run time: "
        f"generation "
        f"{result.manifest.get('generation')} is active (kept across restarts; `remove` takes it out)"
    )
    return 0


def _cmd_remove(settings: Settings, args: argparse.Namespace) -> int:
    from bootstrap.host import runtime  # slow path

    _an_org_known(settings)
    result = runtime.remove(settings, args.name)
    print(f"removed {args.name}: generation {result.manifest.get('generation')} is active")
    return 0


def _cmd_verify(settings: Settings, args: argparse.Namespace) -> int:
    from bootstrap.ops import health  # slow path

    _an_org_known(settings)
    report = health.verify_active(settings)
    if args.json:
        print(json.dumps(report, indent=2))
    elif report["ok"]:
        print(
            f"verified: generation {report['generation']}: {counted(report['files'], 'file')} "
            "match their RECORD hashes; "
            "no package or file is missing, none is unlisted"
        )
    else:
        print(f"generation {report['generation']} differs from what was installed:")
        print("\n".join(f"  {problem}" for problem in report["problems"]))
    return 0 if report["ok"] else 1


def _cmd_watch(settings: Settings, args: argparse.Namespace) -> int:
    from bootstrap.host import watch  # slow path

    seen = json.loads(args.seen) if args.seen else None
    return watch.watch(
        settings,
        initial_sync=not args.no_initial_sync,
        seen=seen,
        parent=args.parent,
        on_event=(lambda event: _emit(args, event)) if args.relay else None,
    )


def _emit(args: argparse.Namespace, event: dict[str, object]) -> None:
    """An event for the host that started this process (``host.child``); nothing without ``--relay``."""
    if args.relay:
        _relay(event)


_relay_handler: logging.Handler | None = None  # the log handler of --relay: it writes to the same stream


def _relay(payload: dict[str, object]) -> None:
    """One line of the protocol, written whole: log records from other threads (a watcher's sync) take the
    same handler lock, so no line is ever cut by another."""
    handler = _relay_handler
    if handler is not None:
        handler.acquire()
    try:
        sys.stderr.write(relay_line(payload) + "\n")
        sys.stderr.flush()
    finally:
        if handler is not None:
            handler.release()


def _cmd_rollback(settings: Settings, args: argparse.Namespace) -> int:
    from bootstrap.ops import rollback  # slow path

    _an_org_known(settings)
    manifest = rollback.rollback(settings, to=args.to)
    print(
        f"rolled back: generation {manifest['generation']} ({counted(len(manifest['packages']), 'package')}) is active"
    )
    return 0


def _cmd_upload(settings: Settings, args: argparse.Namespace) -> int:
    from bootstrap.remote import cache  # slow path

    if settings.remote_cache is None:
        raise SettingsError("upload: BOOTSTRAP_REMOTE_CACHE is not set")
    if settings.org is not None:
        raise SettingsError("upload: an organisation's generations are not uploaded (they link into the workspace's)")
    if args.generation:
        print(cache.upload_generation(settings, args.generation))
    if args.state or not args.generation:  # a runtime change's: without one, this state may be older
        cache.upload_state(settings)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bootstrap",
        description="Make the packages folder hold exactly what the committed requirements file asks for.",
        epilog="Settings come from BOOTSTRAP_* environment variables (see the README); pip's from pip's own.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show pip's output and debug details")
    parser.add_argument("-q", "--quiet", action="store_true", help="show only warnings and errors")
    # A host's child (bootstrap.host.child): log records, events and the error as JSON lines on stderr.
    parser.add_argument("--relay", action="store_true", help=argparse.SUPPRESS)
    # The same options after the command (`sync -q`); SUPPRESS keeps them from resetting the ones before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    # Every command but `watch` works on one organisation's set with `--org ID` (the workspace's without it).
    common.add_argument(
        "--org",
        metavar="ID",
        default=argparse.SUPPRESS,
        help="an organisation's set (<orgs>/ID/requirements.txt on top of the workspace's); default: the workspace",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sync = commands.add_parser("sync", parents=[common], help="make the packages folder match the file")
    sync.set_defaults(func=_cmd_sync)
    status = commands.add_parser("status", parents=[common], help="what is active, what is in the folder, what failed")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=_cmd_status)
    check = commands.add_parser(
        "check",
        parents=[common],
        help="health probe: exit 1 when unhealthy, 0 when healthy or degraded (a sync pending, a rollback)",
    )
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(func=_cmd_check)
    lock = commands.add_parser("lock", parents=[common], help="resolve and write the lock beside the requirements file")
    lock.add_argument("--hashes", action="store_true", help="pin every distribution's hashes too")
    lock.set_defaults(func=_cmd_lock)
    verify = commands.add_parser("verify", parents=[common], help="check every file against its RECORD hash")
    verify.add_argument("--json", action="store_true", help="machine-readable output")
    verify.set_defaults(func=_cmd_verify)
    watch = commands.add_parser("watch", parents=[common], help="sync now, then again whenever the file changes")
    # A host's watcher (bootstrap.host.live): no first sync (start-up just did it) unless the files changed
    # since `--seen` (their hashes then, as JSON); end when the host process, `--parent`, has gone.
    watch.add_argument("--no-initial-sync", action="store_true", help=argparse.SUPPRESS)
    watch.add_argument("--seen", help=argparse.SUPPRESS)
    watch.add_argument("--parent", type=int, help=argparse.SUPPRESS)
    watch.set_defaults(func=_cmd_watch)
    add = commands.add_parser("add", parents=[common], help="add a package at run time (kept across restarts)")
    add.add_argument("requirement", metavar="NAME[SPEC]", help="e.g. tabulate or 'tabulate>=0.9'")
    add.add_argument(
        "--if-needed", action="store_true", help="do nothing when the active set already serves it (asked for)"
    )
    add.set_defaults(func=_cmd_add)
    remove = commands.add_parser("remove", parents=[common], help="take out a package added at run time")
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(func=_cmd_remove)
    rollback = commands.add_parser("rollback", parents=[common], help="make the previous generation active again")
    rollback.add_argument("--to", metavar="GENERATION", help="a generation id from `status` (default: the previous)")
    rollback.set_defaults(func=_cmd_rollback)
    return _add_upload(parser, commands, common)


def _add_upload(
    parser: argparse.ArgumentParser,
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    common: argparse.ArgumentParser,
) -> argparse.ArgumentParser:
    """What a sync starts in the background after publishing, with BOOTSTRAP_REMOTE_CACHE set (README: Remote cache)."""
    upload = commands.add_parser(
        "upload", parents=[common], help="internal: upload a published generation and the state to the remote cache"
    )
    upload.add_argument("--generation", metavar="ID", help="a published generation's id (default: the state alone)")
    upload.add_argument("--state", action="store_true", help="with --generation: the state too")
    upload.set_defaults(func=_cmd_upload)
    return parser


class _RelayFormatter(logging.Formatter):
    """A log record as one line of the host's protocol (``host.child``)."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        return relay_line({"level": record.levelno, "message": message})


# The commands that print their result on stdout: the log record saying the same is not shown on stderr too.
_PRINTS_OUTCOME = frozenset({"sync", "add", "remove", "rollback"})


def _configure_logging(verbose: bool, quiet: bool, relay: bool = False, command: str | None = None) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    if relay:
        handler.setFormatter(_RelayFormatter())
    elif command == "watch":  # a long-running log: each line says when (UTC)
        stamped = logging.Formatter("%(asctime)s bootstrap: %(message)s", "%Y-%m-%dT%H:%M:%SZ")
        stamped.converter = time.gmtime
        handler.setFormatter(stamped)
    else:
        handler.setFormatter(logging.Formatter("bootstrap: %(message)s"))
    if not relay and not verbose and command in _PRINTS_OUTCOME:  # -v shows every record
        handler.addFilter(lambda record: not getattr(record, "outcome", False))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    log.propagate = False
    return handler


def _fail(args: argparse.Namespace, exc: BootstrapError) -> int:
    """The error in one line: for a person, or for the host that started this process (``--relay``)."""
    message = for_org(redact(" ".join(str(exc).split())), getattr(args, "org", None))
    if args.relay:
        # A RequirementsError's parts, so that the host's copy of it has them too (errors.rebuilt).
        details: dict[str, object] = {"line": getattr(exc, "line", None)}
        details.update({name: redact(str(getattr(exc, name))) for name in ("path", "why") if hasattr(exc, name)})
        _relay({"error": message, "kind": type(exc).__name__, "stage": exc.stage, "details": details})
    else:
        print(f"bootstrap: error: {message}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    saved = (log.level, log.propagate)  # main() may be called in-process: leave the logger as found
    global _relay_handler
    handler = _configure_logging(args.verbose, args.quiet, args.relay, args.command)
    _relay_handler = handler if args.relay else None
    try:
        settings = load_settings()
        org = getattr(args, "org", None)
        return int(args.func(settings.for_org(org) if org is not None else settings, args))
    except BootstrapError as exc:
        log.debug("details:", exc_info=True)
        return _fail(args, exc)
    except BrokenPipeError:  # `status | head`: the reader left; not the packages folder's fault
        with contextlib.suppress(OSError):  # no "Exception ignored" when Python flushes stdout at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports it
    except OSError as exc:  # the machine, not a bug: one line, the traceback under -v
        log.debug("details:", exc_info=True)
        return _fail(args, StorageError.from_os_error(exc))
    except KeyboardInterrupt:
        print("bootstrap: interrupted", file=sys.stderr)
        return 130
    finally:
        log.removeHandler(handler)
        _relay_handler = None
        log.setLevel(saved[0])
        log.propagate = saved[1]
