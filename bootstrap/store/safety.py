"""The packages folder itself: refuse places that are unsafe to import from, create folders nobody else can write.

Workflows import whatever the active generation holds, so whoever can write
the packages folder can run code inside the host. Two mistakes hand that away:
a folder every local user can write, and a folder that is (or is inside) a
place of the system or of the interpreter, where bootstrap's files would mix
with the system's own, or where everything is importable by every program.

The functions cost a few ``stat`` calls and never walk a tree: the check runs
before every sync, and the folders are created on every sync too.
"""

from __future__ import annotations

import os
import site
import stat
import sys
import sysconfig

from bootstrap.errors import SettingsError
from bootstrap.store.paths import GENERATIONS_DIR

# Created folders get this mode, further narrowed by the umask: group write survives a umask
# of 002 (a deploy user and the host sharing a group), world write never exists, whatever the umask.
_FOLDER_MODE = 0o775

_ADVICE = "set BOOTSTRAP_PACKAGES_DIR to a folder of its own, such as /home/.packages"

# Folders of the operating system. Only the folder itself is refused: bootstrap would put
# manifest.json, generations/ and staging/ beside the system's own files. Ordinary folders
# below them (/var/lib/app/packages, /usr/src/app/.packages, /home/.packages) are fine.
_SYSTEM_FOLDERS = (
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/home",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/media",
    "/mnt",
    "/opt",
    "/proc",
    "/root",
    "/run",
    "/sbin",
    "/srv",
    "/sys",
    "/tmp",
    "/usr",
    "/usr/bin",
    "/usr/lib",
    "/usr/lib64",
    "/usr/local",
    "/usr/local/bin",
    "/usr/local/lib",
    "/usr/local/sbin",
    "/usr/local/share",
    "/usr/sbin",
    "/usr/share",
    "/var",
)

# The interpreter's folders where a packages folder must not be even below: a subfolder of
# site-packages or of the stdlib is importable junk for every program of that interpreter,
# and one in its scripts folder lands on PATH.
_INSIDE_REFUSED = {
    "stdlib": "standard library folder",
    "platstdlib": "standard library folder",
    "purelib": "site-packages folder",
    "platlib": "site-packages folder",
    "scripts": "scripts folder",
}


def check_packages_dir(path: str | os.PathLike[str], *, allow_world_writable: bool = False) -> None:
    """Raise ``SettingsError`` unless ``path`` is safe to use as the packages folder.

    Refused: the filesystem root; a folder of the system or of the running interpreter
    (its prefixes and ``sysconfig`` paths); anything inside the interpreter's stdlib,
    site-packages or scripts folders; an existing path that is not a folder; an existing
    folder that is world-writable. A symlink is judged by where it leads. A folder that
    does not exist yet is fine (``make_private_dir`` creates it): nothing is created here.

    ``allow_world_writable`` is for filesystems whose modes mean nothing (a CIFS share
    mounted with ``dir_mode=0777`` ignores chmod); it only skips the mode check.
    """
    given = os.path.abspath(path)
    real = os.path.realpath(given)
    shown = given if real == given else f"{given} (a link to {real})"
    if os.path.dirname(real) == real:
        raise SettingsError(f"the packages folder {shown} is the filesystem root; {_ADVICE}")
    key = os.path.normcase(real)
    exact, inside = _interpreter_folders()
    for location, what in sorted(inside.items(), key=lambda item: -len(item[0])):  # the closest one names it
        if key == location or key.startswith(location + os.sep):
            raise SettingsError(
                f"the packages folder {shown} is inside the interpreter's {what} {location}, which every program "
                f"of that interpreter imports from or runs; {_ADVICE}"
            )
    if key in exact:
        raise SettingsError(f"the packages folder {shown} is {exact[key]}; {_ADVICE}")
    try:
        st = os.stat(real)
    except (FileNotFoundError, NotADirectoryError):
        return  # not there yet: creating it (or failing to, with the OS's reason) is the caller's step
    if not stat.S_ISDIR(st.st_mode):
        raise SettingsError(
            f"the packages folder {shown} exists and is not a folder; remove it, or set BOOTSTRAP_PACKAGES_DIR "
            "to a folder"
        )
    # Only POSIX modes say who may write: Windows reports every folder as 0o777.
    if os.name == "posix" and st.st_mode & stat.S_IWOTH and not allow_world_writable:
        # The sticky bit does not help: it stops others deleting our files, not adding their own.
        raise SettingsError(
            f"the packages folder {shown} is world-writable (mode {stat.S_IMODE(st.st_mode):o}): any local user "
            f"could put code there that workflows import; run `chmod o-w {real}`, or set BOOTSTRAP_PACKAGES_DIR "
            "to a folder only its owner (and group) can write"
        )
    generations = os.path.join(real, GENERATIONS_DIR)
    try:
        mode = os.stat(generations).st_mode
    except OSError:
        return  # not there yet (or not a folder: creating inside it fails with the OS's reason)
    if os.name == "posix" and mode & stat.S_IWOTH and not allow_world_writable:  # bootstrap made it 0o775 at most
        raise SettingsError(
            f"{generations} is world-writable (mode {stat.S_IMODE(mode):o}): any local user could replace a "
            f"generation that workflows import; run `chmod o-w {generations}` and check what is in it, or set "
            "BOOTSTRAP_ALLOW_WORLD_WRITABLE=true where modes mean nothing (an SMB share)"
        )


def prepare_packages_dir(root: str | os.PathLike[str], *, allow_world_writable: bool = False) -> None:
    """Check the packages folder (``check_packages_dir``), create it if need be, and make sure it is writable."""
    check_packages_dir(root, allow_world_writable=allow_world_writable)
    try:
        make_private_dir(root)
    except OSError as exc:
        raise SettingsError(
            f"cannot create the packages folder {root} ({exc.strerror}); set BOOTSTRAP_PACKAGES_DIR "
            "to a writable folder"
        ) from None
    if not os.access(root, os.W_OK):
        raise SettingsError(f"the packages folder {root} is not writable; set BOOTSTRAP_PACKAGES_DIR")


def make_private_dir(path: str | os.PathLike[str], *, exist_ok: bool = True) -> None:
    """Create ``path`` and its missing parents, none of them world-writable whatever the umask.

    Like ``Path.mkdir(parents=True, exist_ok=exist_ok)``. A folder that already exists is
    the operator's (or another process's): its mode is left as it is, only checked by
    ``check_packages_dir``. Raises ``OSError`` as ``mkdir`` does.
    """
    folder = os.path.abspath(path)
    try:
        os.mkdir(folder, _FOLDER_MODE)
    except FileNotFoundError:
        parent = os.path.dirname(folder)
        if parent == folder:
            raise
        make_private_dir(parent)
        make_private_dir(folder, exist_ok=exist_ok)
        return
    except OSError:
        # Already there (possibly made by a concurrent sync a moment ago): not ours to chmod.
        # Any OSError, as in pathlib: an existing folder on a read-only mount says EROFS, not EEXIST.
        if not exist_ok or not os.path.isdir(folder):
            raise
        return
    _clear_world_write(folder)


def child_umask() -> int:
    """The umask for a child that writes into the packages folder (pip): ours, plus no world write.

    For ``subprocess.Popen(..., umask=child_umask())``. pip creates the generation's files and
    folders with the umask it inherits: under a umask of 000 they would all be world-writable,
    i.e. anyone could edit code the host imports. -1 (Popen's "leave it") where modes mean nothing.
    """
    if os.name != "posix":
        return -1
    return _current_umask() | stat.S_IWOTH


def _current_umask() -> int:
    # Linux reports it without changing it; elsewhere os.umask must set it to read it, which
    # another thread creating a file in that instant would see (with the usual 022, harmless).
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current


def _clear_world_write(folder: str) -> None:
    """Belt and braces for a folder we just created: the mode given to mkdir already lacks
    world write, but a default ACL or an odd filesystem may have added it."""
    if os.name != "posix":
        return
    mode = stat.S_IMODE(os.stat(folder).st_mode)
    if mode & stat.S_IWOTH:
        os.chmod(folder, mode & ~stat.S_IWOTH)


def _interpreter_folders() -> tuple[dict[str, str], dict[str, str]]:
    """(folders refused exactly, folders refused with everything below them), normcased realpaths -> what they are.

    Computed on each call, not cached: the interpreter's prefixes can be changed (tests do),
    and this is a few dozen ``lstat`` calls once per sync.
    """
    exact: dict[str, str] = {}
    inside: dict[str, str] = {}

    def add(table: dict[str, str], location: str | None, what: str) -> None:
        if location:
            table.setdefault(os.path.normcase(os.path.realpath(location)), what)

    if os.name == "posix":
        for folder in _SYSTEM_FOLDERS:
            add(exact, folder, "a system folder")
    for prefix in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix):
        add(exact, prefix, "the Python installation's prefix")
    # The running scheme (a venv's own folders), and the base interpreter's beneath a venv.
    base = {
        "base": sys.base_prefix,
        "platbase": sys.base_exec_prefix,
        "installed_base": sys.base_prefix,
        "installed_platbase": sys.base_exec_prefix,
    }
    for paths in (sysconfig.get_paths(), sysconfig.get_paths(vars=base)):
        for name, location in paths.items():
            if name in _INSIDE_REFUSED:
                add(inside, location, _INSIDE_REFUSED[name])
            else:
                add(exact, location, f"the interpreter's {name} folder")
    for location in (*site.getsitepackages(), *site.getsitepackages([sys.base_prefix, sys.base_exec_prefix])):
        add(inside, location, "site-packages folder")
    add(inside, site.getusersitepackages(), "user site-packages folder")
    return exact, inside
