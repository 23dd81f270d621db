"""Is the active generation still what the files ask for, and can this interpreter use it?

The one freshness check: the start-up fast path, ``sync``, ``check``, the
live host and ``ensure`` all ask ``stale_reason``. On the fast path: os and
hashlib only (no pathlib, typing or logging unless something is wrong).
"""

from __future__ import annotations

import os

from bootstrap.store import manifest as manifest_mod
from bootstrap.store.fs import file_sha256, resolves_inside
from bootstrap.store.paths import GENERATIONS_DIR, MANIFEST_NAME, relative_site, site_path
from bootstrap.store.paths import allow_world_writable as env_allow_world_writable
from bootstrap.store.paths import packages_dir as env_packages_dir

# A generation id as publish writes it (20261201T122738065068Z-58dd31), or any plain folder name
# (no `re`: it is not loaded on the fast path).
_ID_CHARACTERS = frozenset("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ._-")


def _well_formed(generation: object) -> bool:
    return (
        isinstance(generation, str)
        and 0 < len(generation) <= 128
        and generation[0].isascii()
        and generation[0].isalnum()
        and set(generation) <= _ID_CHARACTERS
        and ".." not in generation
    )


# How ``relative_inputs`` names a file, so that every instance judges it alike wherever it sees it (a share
# mounted elsewhere, a checkout of its own): the committed lock by its role (and its name, so that a changed
# BOOTSTRAP_LOCK_FILE is noticed), a file in the state folder or in the requirements file's folder by its path
# relative to that folder (with ``/``), anything else by its absolute path.
LOCK_ANCHOR = "@lock/"
STATE_ANCHOR = "@state/"
REQUIREMENTS_ANCHOR = "@requirements/"
WORKSPACE_ANCHOR = "@workspace/"  # an organisation's inputs: a file in the workspace's packages folder

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays off the fast path
    from collections.abc import Callable, Iterable, Mapping

    from bootstrap.store.manifest import Inputs, Manifest
    from bootstrap.store.paths import Sources


def inputs_of(sources: Sources, read: Inputs | None = None, also: Iterable[str] = ()) -> Inputs:
    """Every file a result depends on, ``{path: sha256 or None}``: what a manifest's ``inputs`` records.

    The one way inputs are hashed. ``read``: files already hashed as they were read (the requirements
    file and its includes, the overlay as it is to be); the key files (``sources``) and ``also``
    that are not among them are hashed now.
    """
    inputs = dict(read or {})
    files = key_files(sources)
    if sources.workspace_packages_dir is not None and any(_workspace_pins_file(path, sources) for path in inputs):
        files = sources.key_files()  # the workspace pins the set was read from, not the ones published since
    for path in (*files, *also):
        if path not in inputs:
            inputs[path] = file_sha256(path)
    return inputs


def key_files(sources: Sources) -> tuple[str, ...]:
    """The files every manifest of ``sources`` must record: the requirements file, the lock, the overlay; for an
    organisation also the workspace's active pins (``workspace_lock``), which its set is built on."""
    if sources.workspace_packages_dir is None:
        return sources.key_files()
    return (*sources.key_files(), workspace_lock(sources.workspace_packages_dir))


def workspace_lock(workspace_packages_dir: str) -> str:
    """The pins of the workspace's active generation (its ``lock.txt``), or, when it has none, its manifest:
    an organisation built on other pins than these is stale."""
    current = manifest_mod.read(os.path.join(workspace_packages_dir, MANIFEST_NAME))
    generation = current.get("generation") if current is not None else None
    if not _well_formed(generation):
        return os.path.join(os.path.abspath(workspace_packages_dir), MANIFEST_NAME)
    return os.path.join(os.path.dirname(site_path(workspace_packages_dir, str(generation))), "lock.txt")


def _workspace_pins_file(path: str, sources: Sources) -> bool:
    """Whether ``path`` is a workspace generation's lock or the workspace's manifest (``workspace_lock``)."""
    assert sources.workspace_packages_dir is not None
    root = os.path.abspath(sources.workspace_packages_dir)
    if path == os.path.join(root, MANIFEST_NAME):
        return True
    generations = os.path.join(root, GENERATIONS_DIR) + os.sep
    return path.startswith(generations) and path.endswith(os.sep + "lock.txt")


def relative_inputs(inputs: Inputs, sources: Sources) -> Inputs:
    """``inputs`` (absolute paths, as ``sources`` sees them) as the manifest's ``relative_inputs`` records them:
    ``@lock/<name>``, ``@state/<path>``, ``@requirements/<path>``, or the absolute path of a file outside them.

    A path is matched as given and with links resolved (an included file is recorded by its real path).
    """
    anchors = [
        (anchor, variant.rstrip(os.sep) + os.sep)
        for anchor, folder in _anchors(sources)
        for variant in dict.fromkeys((folder, os.path.realpath(folder)))
    ]
    return {_relative(path, sources.lock_file, anchors): sha256 for path, sha256 in inputs.items()}


def _relative(path: str, lock_file: str, anchors: list[tuple[str, str]]) -> str:
    if path == lock_file:
        return LOCK_ANCHOR + os.path.basename(path)
    for anchor, prefix in anchors:
        if path.startswith(prefix):
            return anchor + path[len(prefix) :].replace(os.sep, "/")
    return path


def _anchors(sources: Sources) -> tuple[tuple[str, str], ...]:
    """The folders ``relative_inputs`` names files relative to, the state folder first (it is never in the repo);
    for an organisation the workspace's packages folder (its active pins) before them."""
    anchors = ((STATE_ANCHOR, sources.state_dir), (REQUIREMENTS_ANCHOR, os.path.dirname(sources.requirements_file)))
    if sources.workspace_packages_dir is None:
        return anchors
    return ((WORKSPACE_ANCHOR, os.path.abspath(sources.workspace_packages_dir)), *anchors)


def recorded_inputs(record: Mapping[str, object], sources: Sources) -> Inputs | None:
    """The files a manifest (or its ``error``) records, ``{path for sources: sha256}``: its ``relative_inputs``
    placed where ``sources`` has them, so another instance's record reads as this one's would; the ``inputs``
    as written for a record from before ``relative_inputs``. None: it records none."""
    relative = record.get("relative_inputs")
    if isinstance(relative, dict) and relative:
        here = _placer(sources)
        return {here(str(key)): sha256 for key, sha256 in relative.items()}
    inputs = record.get("inputs")
    return inputs if isinstance(inputs, dict) else None


def _placer(sources: Sources) -> Callable[[str], str]:
    """Where a file ``relative_inputs`` names lies for ``sources`` (this instance's lock, state folder, repo),
    as a function of its key: the folders are looked up once (this runs on every start-up)."""
    lock = (LOCK_ANCHOR, os.path.dirname(sources.lock_file))  # the name recorded, in this instance's lock folder
    anchors = [(anchor, folder.rstrip(os.sep) + os.sep) for anchor, folder in (lock, *_anchors(sources))]

    def here(key: str) -> str:
        for anchor, folder in anchors:
            if key.startswith(anchor):
                return folder + key[len(anchor) :].replace("/", os.sep)
        return key

    return here


def same_inputs(record: Mapping[str, object], sources: Sources) -> bool:
    """The key files ``record`` records (an ``error``: as they were when it failed) are as they are now."""
    return recorded_inputs(record, sources) == inputs_of(sources)


def stale_reason(manifest: Manifest | None, sources: Sources, *, inputs_too: bool = True) -> str | None:
    """Why the active generation does not serve ``sources`` as they are now; None when it does.

    Every file the manifest records (the requirements file, its included files, the lock,
    the runtime overlay) must still have the recorded hash, and the three key files must be
    among them; the generation must be built for this interpreter and be there, one of the packages
    folder's own (``misplaced_site``), where only its owner (and group) can write (``open_to_others``).
    Files are judged where ``sources`` has them (``recorded_inputs``): an instance that sees the share, its
    checkout or its state folder at other paths than the one that synced judges the same files alike.
    ``inputs_too=False``: all that but the recorded files' hashes (``changed_inputs`` says which changed).
    """
    if manifest is None or not manifest.get("generation"):
        return "never synced"
    requirements_file = sources.requirements_file
    if not _same_requirements_file(manifest, requirements_file):
        return f"the requirements file is now {requirements_file} (built from {manifest.get('requirements_file')})"
    misplaced = _misplaced_or_open(manifest, sources)  # first: it matters more than an edited file
    if misplaced is not None:
        return misplaced
    inputs = recorded_inputs(manifest, sources)
    if not inputs:
        return "the manifest does not record what it was built from"
    if sources.lock_file not in inputs:
        return f"the lock file is now {sources.lock_file}"
    if sources.runtime_file not in inputs:
        return "the manifest does not record the packages added at run time"
    if sources.workspace_packages_dir is not None and workspace_lock(sources.workspace_packages_dir) not in inputs:
        return "the workspace's set changed since (it is built on the workspace's pins)"
    changed = _changed(inputs) if inputs_too else []
    if changed:
        return f"{changed[0]} changed since the last sync"
    if not manifest_mod.built_for_this_interpreter(manifest.get("python")):
        python = manifest.get("python") or {}
        return (
            f"the active generation was built for Python {python.get('version')} ({python.get('tag')}, "
            f"{python.get('platform')}), not this interpreter"
        )
    return None


def _same_requirements_file(manifest: Manifest, requirements_file: str) -> bool:
    """The manifest was built from ``requirements_file``: that very path, or (when it records ``relative_inputs``)
    the same name in its folder, as another instance's checkout has it."""
    built_from = manifest.get("requirements_file")
    if built_from == requirements_file:
        return True
    relative = manifest.get("relative_inputs")
    return (
        isinstance(built_from, str)
        and bool(relative)
        and os.path.basename(built_from) == os.path.basename(requirements_file)
    )


def changed_inputs(manifest: Manifest, sources: Sources) -> list[str]:
    """The files the manifest records whose bytes are not what they were, where ``sources`` has them (first:
    the first one found)."""
    return _changed(recorded_inputs(manifest, sources) or {})


def _changed(inputs: Inputs) -> list[str]:
    return [path for path, sha256 in inputs.items() if file_sha256(path) != sha256]


def not_served(manifest: Manifest, sources: Sources) -> str | None:
    """Why nothing may be imported from the manifest's generation (``bootstrap.execute`` of an organisation's
    workflow): misplaced, missing, open to every local user, or built for another interpreter; None if it may."""
    if not manifest_mod.built_for_this_interpreter(manifest.get("python")):
        return "it was built for another Python interpreter: sync it on this host"
    return _misplaced_or_open(manifest, sources)


def _misplaced_or_open(manifest: Manifest, sources: Sources) -> str | None:
    """Why the host must not import from the manifest's generation folder in the packages folder; None if it may."""
    misplaced = misplaced_site(manifest, sources.packages_dir)
    if misplaced is not None:
        return misplaced
    site_dir = site_path(sources.packages_dir, str(manifest["generation"]))
    if not os.path.isdir(site_dir):
        return f"the active generation's folder {site_dir} is missing"
    if sources.allow_world_writable:
        return None
    if sources.workspace_packages_dir is not None:  # an organisation's: whoever can write `orgs/` can swap it
        workspace_open = writable_by_all(os.path.dirname(os.path.abspath(sources.packages_dir)))
        if workspace_open is not None:
            return workspace_open
        base = _builds_on(site_dir)  # its folder links lead into that workspace generation
        if base is not None and _well_formed(base):
            base_open = open_to_others(site_path(sources.workspace_packages_dir, base), sources.workspace_packages_dir)
            if base_open is not None:
                return base_open
    return open_to_others(site_dir, sources.packages_dir)


# By an organisation generation's ``builds-on`` file and its stat: ``execute`` asks on every call.
_BUILDS_ON: dict[tuple[str, int, int], str | None] = {}


def _builds_on(site_dir: str) -> str | None:
    """``layers.builds_on`` of a generation: one stat, and a read when the file is new (or none)."""
    from bootstrap.store.layout import BUILDS_ON_FILE  # slow path: an organisation's execution only

    path = os.path.join(os.path.dirname(site_dir), BUILDS_ON_FILE)
    try:
        st = os.stat(path)
    except OSError:
        return None
    key = (path, st.st_ino, st.st_mtime_ns)
    if key not in _BUILDS_ON:
        from pathlib import Path

        from bootstrap.store import layers  # slow path: once per organisation generation

        _BUILDS_ON[key] = layers.builds_on(Path(site_dir).parent)
    return _BUILDS_ON[key]


def misplaced_site(manifest: Manifest, packages_dir: str) -> str | None:
    """Why the manifest names no generation folder of ``packages_dir`` to serve from; None when it does.

    The manifest is a file anyone who can write the folder can edit, and instances that mount the share at other
    paths share it: the folder served is always ``<packages_dir>/generations/<id>/site``, computed from the folder
    in use and a well-formed ``generation`` id (no separator, no ``..``), and it must stay inside the packages
    folder with links followed. Its absolute ``site_dir`` is what the instance that wrote it saw, never used;
    its ``site`` (relative), when there, must name that same folder. Else a ``.pth`` wherever it points would
    run in every host.
    """
    generation, site = manifest.get("generation"), manifest.get("site")
    if not isinstance(generation, str) or not _well_formed(generation):
        return f"the manifest names no well-formed generation ({str(generation)[:80]!r}): not activated"
    if site is not None and site != relative_site(generation):
        return (
            f"the manifest's site {str(site)[:200]} is not generation {generation}'s folder {relative_site(generation)}"
        )
    expected = site_path(packages_dir, generation)
    if not resolves_inside(expected, os.path.abspath(packages_dir)):
        return f"generation {generation}'s folder {expected} leads out of the packages folder (a link): not activated"
    return None


def active_site(manifest: Manifest | None, packages_dir: str) -> str | None:
    """The manifest's generation folder in ``packages_dir`` (the folder in use: wherever the instance that wrote
    the manifest saw it); None when it names none, or none of that folder's own (``misplaced_site``)."""
    if manifest is None or not manifest.get("generation") or misplaced_site(manifest, packages_dir) is not None:
        return None
    return site_path(packages_dir, str(manifest["generation"]))


def open_to_others(site_dir: str, packages_dir: str) -> str | None:
    """Why a folder the host would import from is writable by every local user; None when none is.

    The packages folder, ``generations/``, the generation and its site: whoever can write one of them can
    replace what the host imports (a ``.pth`` runs at start-up). Four ``stat`` calls, no walk, on every
    start. The sticky bit does not help: it stops others removing our files, not adding their own. Only
    POSIX modes say who may write (Windows reports every folder as 0o777).
    """
    if os.name != "posix":
        return None
    generation = os.path.dirname(site_dir)
    for folder in (packages_dir, os.path.dirname(generation), generation, site_dir):
        found = writable_by_all(folder)
        if found is not None:
            return found
    return None


def writable_by_all(folder: str) -> str | None:
    """Why ``folder`` must not be imported from (every local user can write it); None when it may."""
    if os.name != "posix":
        return None
    try:
        mode = os.stat(folder).st_mode
    except OSError:
        return None  # gone: the callers say so
    if not mode & 0o002:
        return None
    return (
        f"{folder} is writable by every local user (mode {mode & 0o7777:o}), so anyone could change what "
        f"hosts import: not activated; run `chmod o-w {folder}` and check what is in it, or set "
        "BOOTSTRAP_ALLOW_WORLD_WRITABLE=true where modes mean nothing (an SMB share)"
    )


def is_fresh(manifest: Manifest | None, sources: Sources) -> bool:
    """The manifest says all is well and its generation serves ``sources`` as they are now."""
    return manifest is not None and manifest.get("status") == "ok" and stale_reason(manifest, sources) is None


def usable_site(
    manifest: Manifest | None, packages_dir: str | None = None, *, allow_world_writable: bool | None = None
) -> str | None:
    """The manifest's generation folder in ``packages_dir`` if this interpreter can use it (else None, with a
    warning why).

    ``packages_dir``: the folder the manifest was read from (default: ``BOOTSTRAP_PACKAGES_DIR``);
    ``allow_world_writable``: the setting (default: ``BOOTSTRAP_ALLOW_WORLD_WRITABLE``).
    """
    if not manifest or not manifest.get("generation"):
        return None
    folder = packages_dir if packages_dir is not None else env_packages_dir()
    misplaced = misplaced_site(manifest, folder)
    if misplaced is not None:
        _warn("not activating: %s", misplaced)
        return None
    site_dir = site_path(folder, str(manifest["generation"]))
    if not manifest_mod.built_for_this_interpreter(manifest.get("python")):
        _warn("not activating %s: it was built for another Python interpreter", site_dir)
        return None
    if not os.path.isdir(site_dir):
        _warn("not activating %s: the folder is missing", site_dir)
        return None
    allowed = env_allow_world_writable() if allow_world_writable is None else allow_world_writable
    writable = None if allowed else open_to_others(site_dir, os.path.abspath(folder))
    if writable is not None:
        _warn("not activating %s: %s", site_dir, writable)
        return None
    return site_dir


def _warn(message: str, *args: object) -> None:
    import logging  # only when something is wrong: logging is not on the fast path

    logging.getLogger("bootstrap").warning(message, *args)
