"""A real SMB share on this machine, seen by two host instances (#15; recipe: ../shared/smb-share.md).

Samba serves a scratch folder on 127.0.0.1; each instance ("A", "B") is a mount namespace of its
own (a ``unshare -m`` holder process) with its own smbnetfs FUSE mount of the share, bound at the
SAME path in both, as two instances of the platform see ``/home``. Commands run inside an instance
through ``nsenter -t HOLDER -m``. The test process itself sees neither mount: it inspects the
share's content on the server side (``Share.served``).

``serve(root)`` is plain code (bench/bench.py uses it too); the pytest fixtures at the end give
the share tests one server for the session and each test a fresh empty folder on it. Where FUSE
or mount namespaces are unavailable the tests skip and say why; where only the programs are
missing they skip too, except in CI (``CI`` set), where they fail: ``.ci/run`` installs them.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

INSTANCES = ("A", "B")
PASSWORD = "secret"
USER = "root"  # root needs no account to be created on the machine (samba's password file is ROOT's own)
PROGRAMS = ("smbd", "smbpasswd", "smbnetfs", "fusermount", "unshare", "nsenter", "mount", "umount")
INSTALL_HINT = "apt-get install samba smbclient smbnetfs fuse3 (.ci/run installs them)"

SERVER_CONF = """\
[global]
  workgroup = WORKGROUP
  server role = standalone server
  interfaces = 127.0.0.1
  bind interfaces only = yes
  smb ports = {port}
  disable netbios = yes
  server min protocol = SMB2_10
  lock directory = {samba}/lock
  state directory = {samba}/state
  cache directory = {samba}/cache
  pid directory = {samba}/pid
  private dir = {samba}/private
  ncalrpc dir = {samba}/ncalrpc
  log file = {samba}/log/%m.log
  passdb backend = tdbsam:{samba}/private/passdb.tdb
  map to guest = never
  load printers = no
  printing = bsd
  printcap name = /dev/null
  disable spoolss = yes
[packages]
  path = {served}
  read only = no
  valid users = {user}
  force user = {user}
  create mask = 0777
  directory mask = 0777
"""
CLIENT_SMB_CONF = "[global]\n  client min protocol = SMB2_10\n  client max protocol = SMB3\n"
# No host in the auth line: with a port other than 445 the "host" smbnetfs sees is "127.0.0.1:PORT".
CLIENT_SMBNETFS_CONF = f'smb_query_browsers false\nuse_libsecret false\nauth "{USER}" "{PASSWORD}"\n'


def missing_programs() -> list[str]:
    return [name for name in PROGRAMS if shutil.which(name) is None]


def unavailable() -> str | None:
    """Why this machine cannot have the share at all (no FUSE, no mount namespaces), or None."""
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as exc:
        return f"FUSE is unavailable here (/dev/fuse: {exc.strerror})"
    if shutil.which("unshare") is None:
        return "mount namespaces are unavailable here (no unshare program)"
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"mount namespaces are unavailable here (unshare -m: {probe.stderr.strip() or probe.returncode})"
    return None


def _free_port() -> int:
    """445 when it is free on 127.0.0.1 (smbnetfs's plain host name), else any free port."""
    for port in (445, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError("no free TCP port on 127.0.0.1")


def _wait(what: str, ready: Callable[[], bool], timeout: float) -> None:
    """Poll ``ready()`` (bounded); raise naming ``what`` if it never becomes true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not happen within {timeout:.0f} s")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Server:
    """samba on 127.0.0.1 and the two instances that mount it; ``home`` is where both see the share."""

    root: Path
    served: Path  # the share's folder on the server's own disk
    home: Path  # the share as every instance sees it (the same path in each namespace)
    holders: dict[str, int]  # instance -> pid of the process that holds its mount namespace

    def bind(self, instance: str, source: Path, target: Path) -> None:
        """Make ``source`` (a local folder) appear at ``target`` inside ``instance`` only."""
        bound = self.run(instance, ["mount", "--bind", source, target], timeout=30)
        if bound.returncode != 0:
            raise RuntimeError(f"mount --bind {source} {target} in instance {instance}: {bound.stderr.strip()}")

    def unbind(self, instance: str, target: Path) -> None:
        self.run(instance, ["umount", "-l", target], timeout=30)

    def command(self, instance: str, argv: Sequence[str | os.PathLike[str]]) -> list[str]:
        return ["nsenter", "-t", str(self.holders[instance]), "-m", "--", *map(str, argv)]

    def run(
        self,
        instance: str,
        argv: Sequence[str | os.PathLike[str]],
        *,
        env: dict[str, str] | None = None,
        timeout: float = 300,
        cwd: str | os.PathLike[str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in ``instance`` ("A" or "B") to the end; its output captured as text."""
        return subprocess.run(
            self.command(instance, argv),
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def popen(
        self,
        instance: str,
        argv: Sequence[str | os.PathLike[str]],
        *,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> subprocess.Popen[str]:
        """Start ``argv`` in ``instance``, in a session of its own (``os.killpg(p.pid, ...)`` kills it all)."""
        return subprocess.Popen(
            self.command(instance, argv),
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )


def _namespace_of(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def _kill_namespace(holder: int) -> None:
    """Kill every process left in ``holder``'s mount namespace (smbnetfs, a test's stray child), then it."""
    namespace = _namespace_of(holder)
    if namespace is None:
        return
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != holder and _namespace_of(int(entry)) == namespace:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry), signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(holder, signal.SIGKILL)


def _write_server_files(root: Path, port: int) -> Path:
    samba, served = root / "samba", root / "share"
    for name in ("lock", "state", "cache", "pid", "private", "log", "ncalrpc"):
        (samba / name).mkdir(parents=True)
    served.mkdir()
    served.chmod(0o777)
    conf = samba / "smb.conf"
    conf.write_text(SERVER_CONF.format(port=port, samba=samba, served=served, user=USER))
    subprocess.run(
        ["smbpasswd", "-c", str(conf), "-s", "-a", USER],
        input=f"{PASSWORD}\n{PASSWORD}\n",
        capture_output=True,
        text=True,
        check=True,
    )
    return conf


def _mount(root: Path, instance: str, holder: int, host: str, home: Path) -> None:
    """smbnetfs at ROOT/mnt inside ``holder``'s namespace, the share bound at ``home``."""
    client = root / f"client{instance}"
    (client / ".smb").mkdir(parents=True)
    (client / ".smb" / "smb.conf").write_text(CLIENT_SMB_CONF)
    config = client / ".smb" / "smbnetfs.conf"
    config.write_text(CLIENT_SMBNETFS_CONF)
    config.chmod(0o600)
    mnt = root / "mnt"
    options = f"config={config},log_file={client / 'smbnetfs.log'}"
    env = {**os.environ, "HOME": str(client)}
    nsenter = ["nsenter", "-t", str(holder), "-m", "--"]
    subprocess.run([*nsenter, "smbnetfs", str(mnt), "-o", options], env=env, check=True, capture_output=True)
    share = mnt / host / "packages"

    def mounted() -> bool:  # smbnetfs connects lazily: the first looks may fail with EIO
        return subprocess.run([*nsenter, "test", "-d", str(share)], check=False).returncode == 0

    _wait(f"the smbnetfs mount of instance {instance} ({share})", mounted, 30)
    subprocess.run([*nsenter, "mount", "--bind", str(share), str(home)], check=True, capture_output=True)


def _unmount(root: Path, holder: int) -> None:
    nsenter = ["nsenter", "-t", str(holder), "-m", "--"]
    subprocess.run([*nsenter, "umount", str(root / "home")], check=False, capture_output=True, timeout=30)
    subprocess.run([*nsenter, "fusermount", "-u", str(root / "mnt")], check=False, capture_output=True, timeout=30)


@contextlib.contextmanager
def serve(root: Path) -> Iterator[Server]:
    """samba on 127.0.0.1 serving ``root``/share, mounted by instances A and B at ``root``/home.

    Everything the server keeps lives under ``root``; on the way out (a failure included) the
    mounts are undone, the namespaces' processes killed and smbd's process group stopped.
    """
    port = _free_port()
    conf = _write_server_files(root, port)
    host = "127.0.0.1" if port == 445 else f"127.0.0.1:{port}"
    home = root / "home"
    home.mkdir()
    (root / "mnt").mkdir()
    log = (root / "samba" / "smbd.out").open("w")
    smbd = subprocess.Popen(
        ["smbd", "-F", "--no-process-group", "-s", str(conf), "--debug-stdout"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    holders: dict[str, int] = {}
    holder_procs = []
    try:
        _wait(f"smbd listening on 127.0.0.1:{port} (log: {log.name})", lambda: _port_open(port), 30)
        for instance in INSTANCES:
            proc = subprocess.Popen(
                ["unshare", "-m", "--propagation", "private", "sleep", "infinity"], start_new_session=True
            )
            holder_procs.append(proc)
            holders[instance] = proc.pid
            # unshare execs sleep once the namespace is made: until then nsenter would enter ours
            _wait("a mount namespace", lambda p=proc.pid: _namespace_of(p) != _namespace_of(os.getpid()), 10)
            _mount(root, instance, proc.pid, host, home)
        yield Server(root=root, served=root / "share", home=home, holders=holders)
    finally:
        for holder in holders.values():
            _unmount(root, holder)
            _kill_namespace(holder)
        for proc in holder_procs:
            proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(smbd.pid, signal.SIGTERM)
        try:
            smbd.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(smbd.pid, signal.SIGKILL)
            smbd.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(smbd.pid, signal.SIGKILL)  # smbd's children, forked per client
        log.close()


# --------------------------------------------------------------------------- pytest fixtures


@dataclass
class Share:
    """A fresh empty folder on the share, and a checkout of the workflow repo for each instance.

    ``path``: the folder as both instances see it; ``served``: the same folder on the server's disk.
    ``repo``: where each instance has its own checkout (the same path in both, as ``/home/repo``
    on the platform), backed by a local folder per instance: ``checkout("A")``, ``checkout("B")``.
    """

    server: Server
    path: Path
    served: Path
    repo: Path
    checkouts: dict[str, Path]

    def checkout(self, instance: str) -> Path:
        return self.checkouts[instance]

    def run(
        self,
        instance: str,
        argv: Sequence[str | os.PathLike[str]],
        *,
        env: dict[str, str] | None = None,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        return self.server.run(instance, argv, env=env, timeout=timeout)

    def popen(
        self, instance: str, argv: Sequence[str | os.PathLike[str]], *, env: dict[str, str] | None = None
    ) -> subprocess.Popen[str]:
        return self.server.popen(instance, argv, env=env)

    def python(
        self, instance: str, code: str, *, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """``code`` in a fresh interpreter of the test environment, inside ``instance``."""
        return self.run(instance, [sys.executable, "-c", code], env=env, timeout=timeout)


@pytest.fixture(scope="session")
def smb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One samba server and its two instances for the whole session (setting it up takes seconds)."""
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    missing = missing_programs()
    if missing:
        message = f"the share tests need {', '.join(missing)}: {INSTALL_HINT}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with serve(tmp_path_factory.mktemp("smb")) as server:
        yield server


_folders = itertools.count()


@contextlib.contextmanager
def open_share(server: Server, name: str, local: Path) -> Iterator[Share]:
    """A fresh empty folder ``name`` on the share (made through instance A), and a checkout per instance
    under ``local`` (a local folder both instances see: checkout-A, checkout-B). Plain code: the share
    fixture below and bench/share_soak.py use it."""
    path = server.home / name
    made = server.run("A", ["mkdir", path], timeout=30)
    if made.returncode != 0:
        raise RuntimeError(f"mkdir {path} in instance A: {made.stderr.strip()}")
    repo = server.root / "repos" / name
    repo.mkdir(parents=True)
    checkouts = {instance: local / f"checkout-{instance}" for instance in INSTANCES}
    for instance, checkout in checkouts.items():
        checkout.mkdir()
        server.bind(instance, checkout, repo)
    try:
        yield Share(server=server, path=path, served=server.served / name, repo=repo, checkouts=checkouts)
    finally:
        for instance in INSTANCES:
            server.unbind(instance, repo)


@pytest.fixture
def share(smb_server: Server, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Share]:
    """A fresh empty folder on the share for this test (made through instance A), and the checkouts."""
    name = f"{next(_folders):02d}-{request.node.name}"[:80].replace("[", "-").replace("]", "")
    with open_share(smb_server, name, tmp_path) as opened:
        yield opened
