"""``pip-compile --generate-hashes`` that takes each file's sha256 from the index's listing, as pip and uv do.

Run as ``python -m bootstrap.tools.piptools_compile`` with pip-compile's arguments
(``backends.pip``, for a lock with hashes only).

Why: pip-tools (7.x) hashes a pin's files from PyPI's JSON API when it finds it,
and otherwise downloads every file of that version, for every platform, and
hashes the bytes. Its JSON lookup asks ``<index>/<name>/json`` (on PyPI,
``https://pypi.org/<name>/json``: a 404; the API is at ``/pypi/<name>/json``), so
on PyPI too it downloads them all: 918 files for a 50-package set (every wheel of
cryptography and pydantic-core), 87 s here against 0.8 s for uv. The index's
listing already gives each file's sha256 (PEP 503's ``#sha256=`` fragment, PEP
691's ``hashes``), which pip checks every download against: that is taken as is.
A file listed without one (a plain folder of wheels, an index that gives none)
is still downloaded and hashed, as before. The patch touches one private method;
a pip-tools without it runs unpatched (slow, never wrong).
"""

from __future__ import annotations

import re
from typing import Any

_SHA256 = re.compile(r"[0-9a-f]{64}")


def _take_hashes_from_the_index() -> None:
    from piptools.repositories.pypi import PyPIRepository

    hash_the_file = getattr(PyPIRepository, "_get_file_hash", None)
    if hash_the_file is None:
        return

    def file_hash(self: Any, link: Any) -> str:
        # Only a listing's hash (a link found on an index page), and only a well-formed one: a URL the user
        # wrote (`name @ https://...#sha256=...`) is hashed from its bytes, as before.
        listed = str(getattr(link, "hash", None) or "").lower()
        came_from_an_index = getattr(link, "comes_from", None) is not None
        if getattr(link, "hash_name", None) == "sha256" and came_from_an_index and _SHA256.fullmatch(listed):
            return f"sha256:{listed}"
        return str(hash_the_file(self, link))

    PyPIRepository._get_file_hash = file_hash  # type: ignore[method-assign]


def main() -> None:
    _take_hashes_from_the_index()
    from piptools.scripts.compile import cli

    cli(prog_name="pip-compile")


if __name__ == "__main__":
    main()
