"""One small exception tree. Every message says what happened and what to do.

The CLI catches ``BootstrapError`` only and prints its message as one line;
anything else is a bug and keeps its traceback. ``redact`` lives here too:
every message, and every log line made of a tool's output, passes through it.

The bottom of the layers: the standard library only, importable from anywhere.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Sequence

# Userinfo is everything between "scheme://" and the LAST "@" before the host part ends (the first "/" or
# blank): pip takes an unencoded "@" in a password (https://bob:p@ss@host), so stopping at the first "@" would
# leak the rest. The greedy run backtracks to that last "@"; an "@" after the first "/" is path, not userinfo.
_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s]*@")
# Azure Storage's secrets: a connection string's ``AccountKey=...`` and ``SharedAccessSignature=...`` (up to the
# next ``;``, quote or blank), and a SAS token's signature in a URL's query (``sig=...``, up to ``&``).
_AZURE_SECRETS = re.compile(
    r"(?P<name>\b(?:AccountKey|SharedAccessSignature)=)(?:'[^']*'?|\"[^\"]*\"?|[^;\s'\"]*)", re.IGNORECASE
)
_SAS_SIGNATURE = re.compile(r"(?P<name>[?&]sig=)[^&\s'\"]*", re.IGNORECASE)


def redact(text: str) -> str:
    """Hide credentials: in URLs (``https://user:secret@host`` becomes ``https://****@host``), Azure Storage
    account keys and shared access signatures (``AccountKey=****``, ``SharedAccessSignature=****``, ``sig=****``)."""
    text = _CREDENTIALS.sub(lambda m: f"{m.group('scheme')}****@", text)
    text = _AZURE_SECRETS.sub(lambda m: f"{m.group('name')}****", text)
    return _SAS_SIGNATURE.sub(lambda m: f"{m.group('name')}****", text)


# The commands a message may advise, as they read in it: "`python -m bootstrap lock --hashes`".
_ADVISED_COMMAND = re.compile(
    r"(`python -m bootstrap (?:lock|sync|verify|rollback|add|remove|status|check)\b)(?![^`]*--org)"
)


def for_org(text: str, org: str | None) -> str:
    """A message about an organisation's set: each command it advises gains ``--org <org>`` (the workspace's
    own command would act on the workspace). Messages are written once, for both."""
    return _ADVISED_COMMAND.sub(lambda m: f"{m.group(1)} --org {org}", text) if org else text


class BootstrapError(Exception):
    """Base of every error a user can act on. ``stage`` names the step that failed."""

    stage = "sync"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class SettingsError(BootstrapError):
    stage = "settings"


class RequirementsError(BootstrapError):
    """A line of the committed file is malformed or not allowed: ``file:line: why``."""

    stage = "read"

    def __init__(self, path: object, line: int | None, why: str) -> None:
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {why}")
        self.path = path
        self.line = line
        self.why = why


class ResolutionError(BootstrapError):
    stage = "resolve"


class InstallError(BootstrapError):
    stage = "install"


class VerificationError(BootstrapError):
    stage = "verify"


class PublishError(BootstrapError):
    stage = "publish"


class StorageError(BootstrapError):
    """The packages folder could not be written or read (disk full, permissions, a vanished share)."""

    stage = "storage"

    @classmethod
    def from_os_error(cls, exc: OSError) -> StorageError:
        where = f"{exc.filename}" if exc.filename else "the packages folder"
        what = exc.strerror or str(exc)
        advice = "free space on its filesystem" if exc.errno == 28 else "check its permissions and mount"
        return cls(f"cannot use {where}: {what}; {advice} and sync again")


class RemoteCacheError(BootstrapError):
    """The remote cache (BOOTSTRAP_REMOTE_CACHE) could not be reached, or refused: the sync builds instead.

    ``repeated``: the same account did not answer a moment ago (said once already: a debug line now)."""

    stage = "remote-cache"

    def __init__(self, message: str, *, repeated: bool = False) -> None:
        super().__init__(message)
        self.repeated = repeated


class RecordedFailure(BootstrapError):
    """A failure another process recorded for the very same inputs while this one waited for the lock."""

    def __init__(self, message: str, stage: str) -> None:
        super().__init__(message)
        self.stage = stage


class LockTimeoutError(BootstrapError):
    stage = "lock"


class RollbackError(BootstrapError):
    stage = "rollback"


class CommandError(BootstrapError):
    """A child process failed; carries the command, exit code and output for the log."""

    def __init__(
        self, argv: Sequence[str], returncode: int | None, stdout: str, stderr: str, *, timed_out: bool = False
    ) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.timed_out = timed_out
        summary = "timed out" if timed_out else f"exited with code {returncode}"
        last = redact(last_line(stderr) or last_line(stdout))
        # Name the program, never the whole argv: a `-c` script or a URL with credentials may be in it.
        program = " ".join(part for part in self.argv[1:3] if not part.startswith("-") or part == "-m")
        super().__init__(f"{program or self.argv[0]} {summary}" + (f": {last}" if last else ""))

    @property
    def ending(self) -> str:
        """How the process ended, in a few words: ``exit code 3``, ``SIGSEGV``."""
        if self.returncode is not None and self.returncode < 0:
            try:
                return signal.Signals(-self.returncode).name
            except ValueError:
                return f"signal {-self.returncode}"
        return f"exit code {self.returncode}"


def rebuilt(
    kind: str, message: str, stage: str | None = None, details: dict[str, object] | None = None
) -> BootstrapError:
    """The error a ``python -m bootstrap`` child reported (``host.child``), as the same class in this process.

    The message is the child's (on one line); an unknown kind is a plain ``BootstrapError``. A
    ``RequirementsError`` gets its ``path``, ``line`` and ``why`` from ``details``; a ``CommandError``
    (the child's own child failed) has no output here: its message says what it said.
    """
    classes = {cls.__name__: cls for cls in _subclasses(BootstrapError)}
    cls = classes.get(kind, BootstrapError)
    error = cls.__new__(cls)
    BootstrapError.__init__(error, message)
    if stage is not None:
        error.stage = stage
    given = details or {}
    if isinstance(error, RequirementsError):
        line = given.get("line")
        error.path, error.line = given.get("path"), line if isinstance(line, int) else None
        error.why = str(given.get("why", message))
    if isinstance(error, CommandError):
        error.argv, error.returncode, error.stdout, error.stderr, error.timed_out = [], None, "", message, False
    return error


def _subclasses(cls: type[BootstrapError]) -> list[type[BootstrapError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found += _subclasses(sub)
    return found


def last_line(text: str) -> str:
    """The last non-blank line of a tool's output: for pip, the one that says why."""
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()
    return ""


class WorkflowError(BootstrapError):
    """A workflow could not be run, or failed: ``bootstrap.execute``. ``reason`` says which, for a caller that
    answers with a status: ``"missing"`` (no such workflow), ``"org"`` (an org with no synced set),
    ``"failed"`` (it raised, or returned what is not JSON), ``"crashed"`` (its worker process died)."""

    stage = "workflow"
    reason = "failed"

    def __init__(self, message: str, reason: str = "failed") -> None:
        super().__init__(message)
        self.reason = reason
