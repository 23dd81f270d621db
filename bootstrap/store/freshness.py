"""Is the active generation still what the files ask for, and can this interpreter use it?

The one freshness check: the start-up fast path, ``sync``, ``check``, the
live host and ``ensure`` all ask ``stale_reason``. On the fast path: os and
hashlib only (no pathlib, typing or logging unless something is wrong).
"""

from __future__ import annotations

import os

from bootstrap.store import manifest as manifest_mod
from bootstrap.store.fs import file_sha256, resolves_inside
from bootstrap.store.paths import GENERATIONS_DIR, SITE_DIR
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


TYPE_CHECKING = False
if TYPE_CHECKING:  # typing stays off the fast path
    from collections.abc import Iterable

    from bootstrap.store.manifest import Inputs, Manifest
    from bootstrap.store.paths import Sources


def inputs_of(sources: Sources, read: Inputs | None = None, also: Iterable[str] = ()) -> Inputs:
    """Every file a result depends on, ``{path: sha256 or None}``: what a manifest's ``inputs`` records.

    The one way inputs are hashed. ``read``: files already hashed as they were read (the requirements
    file and its includes, the overlay as it is to be); the key files (``sources``) and ``also``
    that are not among them are hashed now.
    """
    inputs = dict(read or {})
    for path in (*sources.key_files(), *also):
        if path not in inputs:
            inputs[path] = file_sha256(path)
    return inputs


def stale_reason(manifest: Manifest | None, sources: Sources, *, inputs_too: bool = True) -> str | None:
    """Why the active generation does not serve ``sources`` as they are now; None when it does.

    Every file the manifest records (the requirements file, its included files, the lock,
    the runtime overlay) must still have the recorded hash, and the three key files must be
    among them; the generation must be built for this interpreter and be there, one of the packages
    folder's own (``misplaced_site``), where only its owner (and group) can write (``open_to_others``).
    ``inputs_too=False``: all that but the recorded files' hashes (``changed_inputs`` says which changed).
    """
    if manifest is None or not manifest.get("site_dir"):
        return "never synced"
    requirements_file = sources.requirements_file
    if manifest.get("requirements_file") != requirements_file:
        return f"the requirements file is now {requirements_file} (built from {manifest.get('requirements_file')})"
    misplaced = _misplaced_or_open(manifest, sources)  # first: it matters more than an edited file
    if misplaced is not None:
        return misplaced
    inputs = manifest.get("inputs")
    if not isinstance(inputs, dict) or not inputs:
        return "the manifest does not record what it was built from"
    if sources.lock_file not in inputs:
        return f"the lock file is now {sources.lock_file}"
    if sources.runtime_file not in inputs:
        return "the manifest does not record the packages added at run time"
    changed = changed_inputs(manifest) if inputs_too else []
    if changed:
        return f"{changed[0]} changed since the last sync"
    if not manifest_mod.built_for_this_interpreter(manifest.get("python")):
        python = manifest.get("python") or {}
        return (
            f"the active generation was built for Python {python.get('version')} ({python.get('tag')}, "
            f"{python.get('platform')}), not this interpreter"
        )
    return None


def changed_inputs(manifest: Manifest) -> list[str]:
    """The files the manifest records whose bytes are not what they were (first: the first one found)."""
    inputs = manifest.get("inputs")
    if not isinstance(inputs, dict):
        return []
    return [path for path, sha256 in inputs.items() if file_sha256(path) != sha256]


def _misplaced_or_open(manifest: Manifest, sources: Sources) -> str | None:
    """Why the host must not import from the manifest's generation folder, wherever it is; None if it may."""
    misplaced = misplaced_site(manifest, sources.packages_dir)
    if misplaced is not None:
        return misplaced
    site_dir = manifest["site_dir"]
    if site_dir is None or not os.path.isdir(site_dir):
        return f"the active generation's folder {site_dir} is missing"
    return None if sources.allow_world_writable else open_to_others(site_dir, sources.packages_dir)


def misplaced_site(manifest: Manifest, packages_dir: str) -> str | None:
    """Why the manifest's ``site_dir`` is not its generation's folder in ``packages_dir``; None when it is.

    The manifest is a file anyone who can write the folder can edit: its ``site_dir`` must be exactly
    ``<packages_dir>/generations/<id>/site`` for a well-formed ``generation`` id (no separator, no
    ``..``), and stay inside the packages folder with links followed. Else a ``.pth`` wherever it
    points would run in every host.
    """
    generation, site_dir = manifest.get("generation"), manifest.get("site_dir")
    if not isinstance(generation, str) or not _well_formed(generation):
        return f"the manifest names no well-formed generation ({str(generation)[:80]!r}): not activated"
    root = os.path.abspath(packages_dir)
    expected = os.path.join(root, GENERATIONS_DIR, generation, SITE_DIR)
    if not isinstance(site_dir, str) or os.path.normpath(site_dir) != expected:
        return f"the manifest's site_dir {str(site_dir)[:200]} is not generation {generation}'s folder {expected}"
    if not resolves_inside(expected, root):
        return f"generation {generation}'s folder {expected} leads out of the packages folder (a link): not activated"
    return None


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
        try:
            mode = os.stat(folder).st_mode
        except OSError:
            continue  # gone: the callers say so
        if mode & 0o002:
            return (
                f"{folder} is writable by every local user (mode {mode & 0o7777:o}), so anyone could change what "
                f"hosts import: not activated; run `chmod o-w {folder}` and check what is in it, or set "
                "BOOTSTRAP_ALLOW_WORLD_WRITABLE=true where modes mean nothing (an SMB share)"
            )
    return None


def is_fresh(manifest: Manifest | None, sources: Sources) -> bool:
    """The manifest says all is well and its generation serves ``sources`` as they are now."""
    return manifest is not None and manifest.get("status") == "ok" and stale_reason(manifest, sources) is None


def usable_site(
    manifest: Manifest | None, packages_dir: str | None = None, *, allow_world_writable: bool | None = None
) -> str | None:
    """The manifest's generation folder if this interpreter can use it (else None, with a warning why).

    ``packages_dir``: the folder the manifest was read from (default: ``BOOTSTRAP_PACKAGES_DIR``);
    ``allow_world_writable``: the setting (default: ``BOOTSTRAP_ALLOW_WORLD_WRITABLE``).
    """
    site_dir = manifest.get("site_dir") if manifest else None
    if not manifest or not site_dir:
        return None
    folder = packages_dir if packages_dir is not None else env_packages_dir()
    misplaced = misplaced_site(manifest, folder)
    if misplaced is not None:
        _warn("not activating: %s", misplaced)
        return None
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
    return str(site_dir)


def _warn(message: str, *args: object) -> None:
    import logging  # only when something is wrong: logging is not on the fast path

    logging.getLogger("bootstrap").warning(message, *args)
