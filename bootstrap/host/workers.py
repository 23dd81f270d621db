"""Worker processes for orgs whose set cannot share this process (``host.isolation`` says why), pooled per org
generation.

A worker is ``python -I`` started through ``tools.runner.start`` (the one place that starts processes), with
``sys.path`` = the org generation's site + this host's own entries (none inside the packages folder); it runs
``host.worker_main``, one execution at a time, speaking JSON lines on its stdin and stdout. Workers are
reused: at most ``MAX_WORKERS_PER_ORG`` per org and ``MAX_WORKERS`` in all (an idle worker of another org
makes room), each ended after ``IDLE_SECONDS`` unused. A worker that dies mid-execution (killed, out of
memory) fails that execution with a ``WorkflowError`` naming how it ended; the next execution starts a new
one. A worker on an org's old generation is retired once the org's manifest names a new one (a busy one
after its execution). Each worker writes its own registry record in the org's packages folder (gc keeps its
generation), and ends at its input's end: when this process ends.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any

from bootstrap.errors import WorkflowError
from bootstrap.host import worker_main
from bootstrap.store.fs import resolves_inside
from bootstrap.tools import runner

if TYPE_CHECKING:
    import subprocess

MAX_WORKERS_PER_ORG = 2  # concurrent executions of one org beyond this wait for one of its workers
MAX_WORKERS = 8  # in all: each is a Python process with the org's imports loaded
IDLE_SECONDS = 300.0  # an unused worker ends after this
START_SECONDS = 60.0  # a worker that has not said it is ready by then is killed


class Worker:
    """One worker process, for one org generation."""

    def __init__(self, org: str, generation: str) -> None:
        self.org = org
        self.generation = generation
        self.proc: subprocess.Popen[bytes] | None = None  # None while it starts
        self.busy = True
        self.retiring = False
        self.last_used = time.monotonic()
        self._next_id = 0

    def start(self, site: str, org_root: str) -> None:
        """Start the process and wait for its ready line; raise WorkflowError if it does not come."""
        config = {"path": worker_path(site, org_root), "packages": org_root, "generation": self.generation}
        self.proc = runner.start([sys.executable, "-I", "-c", worker_main.BOOT, json.dumps(config)])
        ready = self._answer(START_SECONDS)
        if ready is None or not ready.get("ready"):
            self.stop()
            raise WorkflowError(f"the worker process for org {self.org} did not start: {self.ending()}", "crashed")

    def call(self, request: dict[str, Any]) -> dict[str, Any] | None:
        """Send one request and wait for its answer; None when the process died first."""
        assert self.proc is not None and self.proc.stdin is not None
        self._next_id += 1
        try:
            self.proc.stdin.write(json.dumps({"id": self._next_id, **request}).encode() + b"\n")
            self.proc.stdin.flush()
        except OSError:  # BrokenPipeError: it died while idle
            return None
        return self._answer(None)

    def _answer(self, timeout: float | None) -> dict[str, Any] | None:
        assert self.proc is not None and self.proc.stdout is not None
        stdout: IO[bytes] = self.proc.stdout
        if timeout is not None and not select.select([stdout], [], [], timeout)[0]:
            return None
        line = stdout.readline()  # end of file at once when the process dies: never a hang
        if not line:
            return None
        answer: dict[str, Any] = json.loads(line)
        return answer

    def dead(self) -> bool:
        """Whether the process ended while idle (killed between executions): never handed a request."""
        return self.proc is not None and self.proc.poll() is not None

    def ending(self) -> str:
        """How the process ended: ``SIGKILL``, ``exit code 1``, or ``still running``."""
        if self.proc is None:
            return "not started"
        try:
            code = self.proc.wait(timeout=5)
        except Exception:  # TimeoutExpired: it hangs without answering
            runner.kill(self.proc)
            return "no answer"
        if code < 0:
            try:
                return signal.Signals(-code).name
            except ValueError:
                return f"signal {-code}"
        return f"exit code {code}"

    def stop(self) -> None:
        """End it: its input closes (it exits), then a kill if it does not."""
        if self.proc is None:
            return
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=2)
        except Exception:  # a broken pipe, a worker busy in run(): not waited for
            runner.kill(self.proc)
            self.proc.wait()
        finally:
            if self.proc.stdout is not None:
                self.proc.stdout.close()


def worker_path(site: str, org_root: str) -> list[str]:
    """The org generation's site, then this process's own ``sys.path`` entries outside the packages folder
    (the workspace's and other generations never)."""
    packages_dir = os.path.dirname(os.path.dirname(org_root))  # <packages>/orgs/<org>
    own = [entry for entry in sys.path if entry and not resolves_inside(entry, packages_dir)]
    return [site, *(entry for entry in own if entry != site)]


class Pool:
    """The workers of this process, by org generation."""

    def __init__(self) -> None:
        self._workers: list[Worker] = []
        self._changed = threading.Condition()
        self._reaper: threading.Thread | None = None

    def execute(self, org: str, generation: str, site: str, org_root: str, request: dict[str, Any]) -> Any:
        """Run ``request`` (``workflow``, ``path``, ``input``) in a worker of this org generation: the result,
        or WorkflowError (the workflow failed; its worker crashed)."""
        worker = self._acquire(org, generation)
        answer = None
        try:
            if worker.proc is None:
                worker.start(site, org_root)
            answer = worker.call(request)
        finally:
            self._release(worker, crashed=answer is None)
        if answer is None:
            name = request.get("workflow")
            raise WorkflowError(
                f"workflow {name} for org {org} crashed: its worker process ended ({worker.ending()}); "
                "the next execution starts a new one",
                "crashed",
            )
        if not answer.get("ok"):
            raise WorkflowError(str(answer.get("error")))
        return answer.get("result")

    def _acquire(self, org: str, generation: str) -> Worker:
        """An idle worker of this generation, else a new one (room made, or waited for)."""
        with self._changed:
            while True:
                stale = [w for w in self._workers if w.org == org and w.generation != generation]
                for worker in stale:
                    worker.retiring = True
                self._end([w for w in self._workers if not w.busy and (w.retiring or self._expired(w) or w.dead())])
                idle = [w for w in self._workers if w.org == org and w.generation == generation and not w.busy]
                if idle:
                    idle[-1].busy = True
                    return idle[-1]
                if sum(w.org == org for w in self._workers) < MAX_WORKERS_PER_ORG:
                    others = sorted((w for w in self._workers if not w.busy), key=lambda w: w.last_used)
                    if len(self._workers) >= MAX_WORKERS and others:
                        self._end(others[:1])  # the longest unused makes room
                    if len(self._workers) < MAX_WORKERS:
                        worker = Worker(org, generation)  # busy: started by its caller, outside the lock
                        self._workers.append(worker)
                        self._start_reaper()
                        return worker
                self._changed.wait()

    def _release(self, worker: Worker, *, crashed: bool) -> None:
        with self._changed:
            worker.busy = False
            worker.last_used = time.monotonic()
            if crashed or worker.retiring or worker.proc is None:
                self._end([worker])
            self._changed.notify_all()

    def _end(self, workers: list[Worker]) -> None:
        """Stop ``workers`` (idle, or dead) and forget them; with the lock held."""
        for worker in workers:
            if worker in self._workers:
                self._workers.remove(worker)
            worker.stop()

    @staticmethod
    def _expired(worker: Worker) -> bool:
        return time.monotonic() - worker.last_used > IDLE_SECONDS

    def _start_reaper(self) -> None:
        if self._reaper is None:
            self._reaper = threading.Thread(target=self._reap, name="bootstrap-workers-idle", daemon=True)
            self._reaper.start()

    def _reap(self) -> None:
        """Ends workers unused for IDLE_SECONDS (a daemon thread: it ends with the process)."""
        while True:
            time.sleep(max(1.0, IDLE_SECONDS / 4))
            with self._changed:
                self._end([w for w in self._workers if not w.busy and self._expired(w)])

    def pids(self, org: str | None = None) -> list[int]:
        """The worker processes' ids (of one org's, when given): for tests and ``check``."""
        with self._changed:
            return [w.proc.pid for w in self._workers if w.proc is not None and org in (None, w.org)]

    def shutdown(self) -> None:
        """End every idle worker now (a busy one after its execution)."""
        with self._changed:
            for worker in self._workers:
                worker.retiring = True
            self._end([w for w in self._workers if not w.busy])


POOL = Pool()
