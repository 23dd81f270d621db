"""The only place that starts a process.

An argv list, never a shell; output captured; a non-zero exit raised as a
``CommandError`` carrying command, exit code and output. The child's
environment is cleaned on purpose: settings that would send pip somewhere
else (``PIP_TARGET``, ``PIP_PREFIX``, ``PIP_USER``, ``PYTHONPATH``) are
dropped, while the user's index settings (``PIP_INDEX_URL``, pip.conf, ...)
are kept: that is how operators point pip at their mirror.

Nothing a child does outlives it or holds the caller up: the time-out bounds the
whole run, including pipes an escaped grandchild holds open; only the last part
of each stream is kept in memory; and when the child ends, whatever it started
is ended too (its process group, and on Linux every process carrying the run's
tag in its environment: a ``setsid()`` daemon leaves the group, not its environment).
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import contextvars
import functools
import importlib.util
import io
import logging
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from bootstrap.errors import CommandError, SettingsError, redact
from bootstrap.store.safety import child_umask

log = logging.getLogger("bootstrap")

_DROPPED = ("PIP_TARGET", "PIP_PREFIX", "PIP_USER", "PIP_ROOT", "PIP_REQUIRE_VIRTUALENV", "PYTHONPATH", "PYTHONHOME")


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _DROPPED}
    tools = tool_path() if extra is None or "PYTHONPATH" not in extra else ""  # (a bootstrap child: its own)
    if tools:  # bootstrap's own tools came through PYTHONPATH (Azure Functions' .python_packages): keep those
        env["PYTHONPATH"] = tools
    env["PIP_NO_INPUT"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    if extra:
        env.update(extra)
    return env


# The tools children run as ``python -m MODULE``.
_TOOL_MODULES = ("piptools", "pip", "bootstrap")  # bootstrap: its pip-compile shim (tools.piptools_compile)


@functools.cache
def tool_path() -> str:
    """The ``PYTHONPATH`` entries bootstrap's tools are found in, joined; empty when none.

    A platform may install bootstrap and its tools into a folder it names in ``PYTHONPATH``
    (Azure Functions: ``.python_packages/lib/site-packages``). Children must find the tools there
    too, yet nothing else of the host's ``PYTHONPATH`` (a generation, a folder a user can write)
    reaches them: only the folders that ``pip``, ``piptools`` and ``bootstrap`` are imported from.
    """
    given = [os.path.abspath(entry) for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
    holding = set()
    for module in _TOOL_MODULES:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            continue
        if spec is not None and spec.origin:
            holding.add(os.path.realpath(os.path.dirname(os.path.dirname(spec.origin))))
    return os.pathsep.join(entry for entry in given if os.path.realpath(entry) in holding)


@dataclass(frozen=True)
class Completed:
    argv: list[str]
    stdout: str
    stderr: str


OUTPUT_LIMIT = 1 << 20  # characters of each stream kept: the end of pip's output is where it explains
_KEPT_LINE_LIMIT = 4 << 20  # a line that starts with a ``keep`` prefix may be this long before it is cut
_GRACE = 2.0  # seconds the pipes may stay open after the child ended (a grandchild we could not end holds them)
_POLL = 0.05  # seconds between looks at the child, where the system cannot say when it ends (no pidfd)
_TAG_VARIABLE = "_BOOTSTRAP_RUN_TAGS"  # the run's tag (after its parent run's, when nested), in every descendant;
# not a setting: no BOOTSTRAP_ prefix (a child that reads its settings would warn of it)


def run(
    argv: Sequence[str],
    *,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    on_line: Callable[[str], None] | None = None,
    on_start: Callable[[subprocess.Popen[str]], None] | None = None,
    limit: int = OUTPUT_LIMIT,
    keep: Sequence[str] = (),
) -> Completed:
    """Run ``argv`` to completion; raise ``CommandError`` on a non-zero exit or time-out.

    ``on_line`` sees each line of output (stdout and stderr) as it arrives: progress for long work.
    ``on_start`` gets the process, so another thread can ``kill`` it. The child
    leads its own process group, so a time-out also ends what it started
    (pip's build backends, say). Of each stream the last ``limit`` characters are
    kept, and the last line that starts with each of ``keep`` (marks a caller reads).
    """
    argv = [str(part) for part in argv]
    shown = " ".join("<script>" if "\n" in part else part for part in argv)
    log.debug("running %s", redact(shown))  # an allowed --extra-index-url may carry a password
    tag = os.urandom(16).hex()
    environment = child_env(env)
    environment[_TAG_VARIABLE] = " ".join(filter(None, (os.environ.get(_TAG_VARIABLE), tag)))
    try:
        proc = _start(argv, environment, cwd)
    except FileNotFoundError as exc:
        if exc.filename != argv[0]:  # a folder (cwd): the caller's to report
            raise
        # The program, not the packages folder (an OSError would be reported as the folder's).
        uv = os.path.basename(argv[0]).startswith("uv")
        hint = " (`pip install --force-reinstall uv`), or unset BOOTSTRAP_BACKEND to use pip" if uv else ""
        raise SettingsError(
            f"the program {argv[0]} is not there (removed since bootstrap found it?): reinstall it{hint}"
        ) from None
    if on_start is not None:
        on_start(proc)
    streams = (_Tail(limit, keep, on_line), _Tail(limit, keep, on_line))
    returncode, timed_out = _collect(proc, timeout, streams, tag.encode())
    stdout, stderr = streams[0].text(), streams[1].text()
    if timed_out or returncode != 0:
        log.debug("%s failed (%s); stderr:\n%s", redact(" ".join(argv[:4])), returncode, redact(stderr))
        raise CommandError(argv, returncode, stdout, stderr, timed_out=timed_out)
    return Completed(argv, stdout, stderr)


def _start(argv: list[str], environment: dict[str, str], cwd: str | os.PathLike[str] | None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment,
        cwd=cwd,
        text=True,  # for the type callers see; the output itself is read from the pipes' descriptors
        encoding="utf-8",
        errors="replace",
        process_group=0,
        umask=child_umask(),  # whatever the host's umask, pip writes nothing world-writable
    )


def _collect(
    proc: subprocess.Popen[str], timeout: float | None, streams: tuple[_Tail, _Tail], tag: bytes
) -> tuple[int, bool]:
    """Read both pipes into ``streams`` until the child has ended and they close (or a grace after it ended),
    killing it at ``timeout``, then end what it left behind: ``(exit code, timed out)``. An interruption
    kills the process before it goes on."""
    assert proc.stdout is not None and proc.stderr is not None
    pipes = {proc.stdout.fileno(): streams[0], proc.stderr.fileno(): streams[1]}
    deadline = None if not timeout else time.monotonic() + timeout
    timed_out = ended = False
    try:
        with selectors.DefaultSelector() as selector, _exit_watch(proc) as exit_fd:
            for fd in pipes:
                os.set_blocking(fd, False)
                selector.register(fd, selectors.EVENT_READ)
            if exit_fd is not None:
                selector.register(exit_fd, selectors.EVENT_READ)
            while not ended:
                if deadline is not None and not timed_out and time.monotonic() >= deadline:
                    timed_out = True
                    kill(proc)
                wait = None if deadline is None or timed_out else max(0.0, deadline - time.monotonic())
                _read_ready(selector, pipes, wait if exit_fd is not None else min(wait or _POLL, _POLL))
                ended = _has_exited(proc)
            if exit_fd is not None:
                selector.unregister(exit_fd)
            _end_leftovers(proc, tag)  # what still holds the pipes: they close, the reading ends
            grace = time.monotonic() + _GRACE
            while selector.get_map() and time.monotonic() < grace:
                _read_ready(selector, pipes, max(0.0, grace - time.monotonic()))
    except BaseException:
        kill(proc)
        proc.wait()
        _end_leftovers(proc, tag)
        raise
    finally:
        proc.stdout.close()
        proc.stderr.close()
    for stream in streams:
        stream.finish()
    return proc.wait(), timed_out


def _read_ready(selector: selectors.BaseSelector, pipes: dict[int, _Tail], wait: float | None) -> None:
    """Read what the pipes have (waiting at most ``wait`` seconds for anything); forget a pipe that closed."""
    if not selector.get_map():  # nothing left to wait on (the pipes closed; no pidfd): sleep instead
        if wait:
            time.sleep(wait)
        return
    for key, _ in selector.select(wait):
        if key.fd not in pipes:  # the child ended: the caller looks
            continue
        try:
            data = os.read(key.fd, 1 << 16)
        except BlockingIOError:
            continue
        if data:
            pipes[key.fd].feed(data)
        else:
            selector.unregister(key.fd)


@contextlib.contextmanager
def _exit_watch(proc: subprocess.Popen[str]) -> Iterator[int | None]:
    """A descriptor that becomes readable when ``proc`` ends (a pidfd, Linux 5.3), or None: then poll."""
    try:
        fd: int | None = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux, an old kernel, or a seccomp filter that refuses it
        fd = None
    try:
        yield fd
    finally:
        if fd is not None:
            os.close(fd)


def _has_exited(proc: subprocess.Popen[str]) -> bool:
    """Whether the child ended, without reaping it: while it is unreaped, its pid (and so its process
    group id) cannot be another's, so ``kill`` is safe to the end."""
    if proc.returncode is not None:
        return True
    try:
        ended = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:  # reaped by someone else
        return True
    return ended is not None and ended.si_pid != 0  # macOS answers a zeroed record for "still running"


def _end_leftovers(proc: subprocess.Popen[str], tag: bytes) -> None:
    """End what the child left running: its process group, then (Linux) every process carrying ``tag``.

    Why the tag and not ``PR_SET_CHILD_SUBREAPER`` or a cgroup: a subreaper is a whole-process
    setting (this runner also runs inside host processes, which would then inherit every orphan
    of theirs), and cgroups are rarely writable in a container. The environment is inherited
    across ``fork``, ``setsid`` and ``exec``; a process that clears its own is not found, and the
    pipes it holds are let go of after ``_GRACE``.
    """
    kill(proc)
    for _ in range(10):  # a stray may fork between the look and the kill: look again
        strays = _carrying(tag)
        if not strays:
            return
        for pid in strays:
            _kill_tagged(pid, tag)


def _carrying(tag: bytes) -> list[int]:
    """The processes (of those this one may inspect) whose environment holds ``tag``; none without /proc."""
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    own = os.getpid()
    return [int(entry) for entry in entries if entry.isdigit() and int(entry) != own and _carries(entry, tag)]


def _carries(pid: int | str, tag: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            return tag in environ.read()
    except OSError:  # gone, or another user's
        return False


def _kill_tagged(pid: int, tag: bytes) -> None:
    """SIGKILL ``pid``, through a pidfd where there is one, so a pid reused since the look is never hit."""
    try:
        handle = os.pidfd_open(pid)
    except (AttributeError, OSError):
        handle = None
    try:
        if handle is None:
            os.kill(pid, signal.SIGKILL)
        elif _carries(pid, tag):  # still the process we found: the pidfd pins it
            signal.pidfd_send_signal(handle, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    finally:
        if handle is not None:
            os.close(handle)


class _Tail:
    """One stream of a child's output: its last ``limit`` characters, and the last line starting with each
    of ``keep`` (kept even when the text around it is not). ``on_line`` sees every line as it comes."""

    def __init__(self, limit: int, keep: Sequence[str], on_line: Callable[[str], None] | None) -> None:
        self._limit = limit
        self._keep = tuple(keep)
        self._on_line = on_line
        # As text mode reads: UTF-8 (undecodable bytes replaced), \r\n and \r read as \n.
        self._decoder = io.IncrementalNewlineDecoder(codecs.getincrementaldecoder("utf-8")("replace"), True)
        self._chunks: collections.deque[str] = collections.deque()
        self._size = 0  # characters in _chunks
        self._seen = 0  # characters ever added to _chunks: the offset of the next one
        self._pending = ""  # the line under way (no newline yet)
        self._pending_cut = False  # whether its start was dropped
        self._kept: dict[str, tuple[int, str]] = {}  # prefix -> (offset, line)
        self._dropped = 0

    def feed(self, data: bytes, final: bool = False) -> None:
        text = self._pending + self._decoder.decode(data, final)
        end = text.rfind("\n") + 1
        if end:
            self._lines(text[:end], whole=not self._pending_cut)
            self._pending, self._pending_cut = text[end:], False
        else:
            self._pending = text
        cap = _KEPT_LINE_LIMIT if not self._pending_cut and self._pending.startswith(self._keep) else self._limit
        if len(self._pending) > cap:  # one endless line: only its end is kept
            self._dropped += len(self._pending) - cap
            self._pending, self._pending_cut = self._pending[-cap:], True

    def finish(self) -> None:
        """The stream ended: its last line, even without a newline."""
        self.feed(b"", final=True)
        if self._pending:
            self._lines(self._pending, whole=not self._pending_cut, ended=False)
            self._pending = ""

    def _lines(self, text: str, *, whole: bool, ended: bool = True) -> None:
        lines = text.split("\n")[:-1] if ended else [text]
        if self._on_line is not None:
            for line in lines:
                self._on_line(line)
        for prefix in self._keep:
            at = text.rfind("\n" + prefix, 0, len(text) - 1) + 1
            if at or (whole and text.startswith(prefix)):
                self._kept[prefix] = (self._seen + at, text[at:].split("\n", 1)[0])
        self._chunks.append(text)
        self._size += len(text)
        self._seen += len(text)
        while self._size - len(self._chunks[0]) >= self._limit:
            dropped = self._chunks.popleft()
            self._size -= len(dropped)
            self._dropped += len(dropped)

    def text(self) -> str:
        """What was kept: the kept marks no longer in the tail, a note of what was dropped, and the tail."""
        text = "".join(self._chunks)
        dropped = self._dropped
        if len(text) > self._limit:  # from a line start, when there is one near
            start = len(text) - self._limit
            newline = text.find("\n", start)
            start = newline + 1 if newline != -1 else start
            dropped += start
            text = text[start:]
        if not dropped:
            return text
        begins = self._seen - len(text)
        marks = [line + "\n" for offset, line in sorted(self._kept.values()) if offset < begins]
        return "".join(marks) + f"[{dropped} earlier characters of output not kept]\n" + text


def kill(proc: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    """End a process started by ``run`` and everything in its process group (unless it was reaped already)."""
    if proc.returncode is not None:  # its process group id may belong to someone else by now
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):  # already gone
        os.killpg(proc.pid, signal.SIGKILL)


def cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def oom_kills() -> int:
    """Processes the kernel's out-of-memory killer has ended so far, as this process's memory cgroup counts
    them (v2 ``memory.events``, v1 ``memory.oom_control``) and the kernel does (``/proc/vmstat``): compared
    before and after a run, whether the kernel took one of its children for memory. 0 where none says."""
    files = ["/proc/vmstat"]
    with contextlib.suppress(OSError), open("/proc/self/cgroup", encoding="utf-8") as handle:
        for line in handle:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if not controllers:
                files.append(f"/sys/fs/cgroup{path}/memory.events")
            elif "memory" in controllers.split(","):
                files.append(f"/sys/fs/cgroup/memory{path}/memory.oom_control")
    total = 0
    for file in files:
        with contextlib.suppress(OSError, ValueError), open(file, encoding="utf-8") as handle:
            total += sum(int(line.split()[1]) for line in handle if line.startswith("oom_kill "))
    return total


@dataclass(frozen=True)
class Outcomes:
    completed: list[Completed]  # of the commands that succeeded
    failures: list[BaseException]  # in the order they happened: with ``stop_on_failure``, the first is the cause


def _thread_in_this_context(target: Callable[..., object], *args: object) -> threading.Thread:
    """A daemon thread that runs in a copy of this context: its log lines are the caller's (an organisation's
    sync marks its own)."""
    return threading.Thread(target=contextvars.copy_context().run, args=(target, *args), daemon=True)


def run_all(
    commands: Sequence[Sequence[str]],
    *,
    timeout: float | None = None,
    cwd: str | os.PathLike[str] | None = None,
    stop_on_failure: bool = False,
    on_start: Callable[[subprocess.Popen[str]], None] | None = None,
    limit: int = OUTPUT_LIMIT,
    keep: Sequence[str] = (),
) -> Outcomes:
    """Run ``commands`` at once, each as ``run`` would; never raise for one of them, report.

    ``stop_on_failure``: the first command that fails (or cannot start) ends the others.
    An interruption of the caller (Ctrl-C) ends them all before it goes on.
    """
    lock = threading.Lock()
    started: list[subprocess.Popen[str]] = []
    completed: list[Completed] = []
    failures: list[BaseException] = []
    stopping = threading.Event()

    def stop_all() -> None:  # with the lock held
        stopping.set()
        for proc in started:
            kill(proc)

    def register(proc: subprocess.Popen[str]) -> None:
        with lock:
            started.append(proc)
            if stopping.is_set():  # started while the others were being stopped
                kill(proc)
        if on_start is not None:
            on_start(proc)

    def one(argv: Sequence[str]) -> None:
        try:
            result = run(argv, timeout=timeout, cwd=cwd, on_start=register, limit=limit, keep=keep)
        except BaseException as exc:  # a failure, or a process that could not start (OSError)
            with lock:
                failures.append(exc)  # before stopping the others: their failures come after it
                if stop_on_failure:
                    stop_all()
            return
        with lock:
            completed.append(result)

    threads = [_thread_in_this_context(one, argv) for argv in commands]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    except BaseException:
        with lock:
            stop_all()
        for thread in threads:
            if thread.ident is not None:
                thread.join()
        raise
    return Outcomes(completed, failures)


def start(argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start a long-lived child that speaks on its stdin and stdout (a pool's worker process), and return it.

    The same clean environment as ``run``; stderr is the caller's (what the child's code prints goes to the
    host's log stream, as in-process). The child leads its own process group (an interrupt of the host ends
    it through its stdin's end-of-file, not a signal); ``kill`` ends it. The caller reads and waits.
    """
    argv = [str(part) for part in argv]
    log.debug("starting %s", redact(" ".join(argv[:3])))
    return subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=None,
        env=child_env(env),
        process_group=0,
        umask=child_umask(),
    )


def start_detached(
    argv: Sequence[str], *, log_file: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> int:
    """Start a child that outlives its parent (a background upload), its output appended to ``log_file``;
    return its pid. The same clean environment as ``run``, but no run's tag: the end of the run this process
    may be part of (a host's sync child) does not end it. Its own session; nobody waits for it."""
    argv = [str(part) for part in argv]
    environment = child_env(env)
    environment.pop(_TAG_VARIABLE, None)
    log.debug("starting in the background %s", redact(" ".join(argv[:4])))
    with open(log_file, "ab") as output:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
            umask=child_umask(),
        )
    # Reaped by a thread of its own, so a long-lived host collects no zombies; it never holds the process up.
    threading.Thread(target=proc.wait, name="bootstrap-detached-wait", daemon=True).start()
    return proc.pid
