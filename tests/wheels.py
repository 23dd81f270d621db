"""Tiny wheels written with zipfile, for hermetic tests (no network, no build backend)."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import random
import zipfile
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Dist:
    name: str
    version: str
    files: dict[str, str]  # path inside the wheel -> text
    requires: tuple[str, ...] = ()
    extra_metadata: tuple[str, ...] = field(default=())

    @property
    def filename_stem(self) -> str:
        return f"{self.name.replace('-', '_').replace('.', '_')}-{self.version}"


def _record_hash(data: bytes) -> str:
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def build_wheel(dist: Dist, folder: Path) -> Path:
    """Write ``dist`` as a py3-none-any wheel into ``folder``; return its path."""
    stem = dist.filename_stem
    dist_info = f"{stem}.dist-info"
    metadata = ["Metadata-Version: 2.1", f"Name: {dist.name}", f"Version: {dist.version}"]
    metadata += [f"Requires-Dist: {req}" for req in dist.requires]
    metadata += list(dist.extra_metadata)
    contents: dict[str, bytes] = {path: text.encode() for path, text in dist.files.items()}
    contents[f"{dist_info}/METADATA"] = ("\n".join(metadata) + "\n").encode()
    contents[f"{dist_info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record_lines = [f"{path},{_record_hash(data)},{len(data)}" for path, data in contents.items()]
    record_lines.append(f"{dist_info}/RECORD,,")
    contents[f"{dist_info}/RECORD"] = ("\n".join(record_lines) + "\n").encode()
    path = folder / f"{stem}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in contents.items():
            archive.writestr(name, data)
    return path


def module(name: str, version: str, body: str = "") -> dict[str, str]:
    """A plain package ``name`` whose ``__version__`` is ``version``."""
    return {f"{name}/__init__.py": f"__version__ = {version!r}\n{body}"}


# The fixture index: every test's packages come from here.
FIXTURE_DISTS = [
    Dist("bsf-alpha", "1.0", module("bsf_alpha", "1.0")),
    Dist("bsf-alpha", "2.0", module("bsf_alpha", "2.0")),
    Dist("bsf-beta", "1.0", module("bsf_beta", "1.0", "import bsf_alpha\n"), requires=("bsf-alpha>=1.0",)),
    Dist("bsf-beta", "2.0", module("bsf_beta", "2.0", "import bsf_alpha\n"), requires=("bsf-alpha>=2.0",)),
    Dist("bsf-gamma", "1.0", {"bsf_gamma.py": "__version__ = '1.0'\n"}),
    # Two distributions sharing the namespace folder "jaraco" (PEP 420: no jaraco/__init__.py).
    Dist("jaraco.functools", "1.0", {"jaraco/functools/__init__.py": "__version__ = '1.0'\n"}),
    Dist("jaraco.functools", "2.0", {"jaraco/functools/__init__.py": "__version__ = '2.0'\n"}),
    Dist("jaraco.context", "1.0", {"jaraco/context.py": "__version__ = '1.0'\n"}),
    # Imports only with configuration: needs BOOTSTRAP_SKIP_IMPORT_CHECK.
    Dist("bsf-needs-config", "1.0", module("bsf_needs_config", "1.0", "import os\nos.environ['BSF_CONFIG']\n")),
    # Broken at import for everyone.
    Dist("bsf-broken", "1.0", module("bsf_broken", "1.0", "raise RuntimeError('boom at import')\n")),
    # Bigger than the tiny filesystem of the full-disk test (3 MB of incompressible-ish text).
    Dist(
        "bsf-huge",
        "1.0",
        {**module("bsf_huge", "1.0"), "bsf_huge/blob.txt": random.Random(7).randbytes(1_600_000).hex()},
    ),
    # Conflicts: bsf-beta 2.0 needs alpha>=2, bsf-old-alpha-user needs alpha<2.
    Dist("bsf-old-alpha-user", "1.0", module("bsf_old_alpha_user", "1.0"), requires=("bsf-alpha<2",)),
    # Needs a bsf-alpha that does not exist (installed with --no-deps, the set is inconsistent);
    # its extra's requirement is only needed with [cli].
    Dist("bsf-unmet", "1.0", module("bsf_unmet", "1.0"), requires=("bsf-alpha>=5", 'bsf-nowhere; extra == "cli"')),
    # Needs bsf-gamma only for its extra [fancy] (as pandas needs tabulate only for [output-formatting]).
    Dist(
        "bsf-extra-user",
        "1.0",
        module("bsf_extra_user", "1.0"),
        requires=('bsf-gamma; extra == "fancy"',),
        extra_metadata=("Provides-Extra: fancy",),
    ),
    # Takes 1 GiB at import (a large set's import check, in effect): in a small memory cgroup, the kernel kills it.
    Dist(
        "bsf-hog",
        "1.0",
        module("bsf_hog", "1.0", "HELD = bytearray(1 << 30)\nfor i in range(0, len(HELD), 4096):\n    HELD[i] = 1\n"),
    ),
    # Kills the interpreter at import (a crashing C extension, in effect).
    Dist(
        "bsf-segfault",
        "1.0",
        module("bsf_segfault", "1.0", "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n"),
    ),
]


# The host (this test environment) has `packaging`: the index must offer the host's version for a
# resolution that touches it (then it is provided by the host, never installed), and an older one
# to pin against the host.
HOST_PACKAGING = importlib.metadata.version("packaging")
HOST_DISTS = [
    Dist("packaging", HOST_PACKAGING, module("packaging", HOST_PACKAGING)),
    Dist("packaging", "20.9", module("packaging", "20.9")),
    Dist("bsf-needs-host", "1.0", module("bsf_needs_host", "1.0", "import packaging\n"), requires=("packaging>=20",)),
]
# A user's own version of one of bootstrap's tools: filelock is bootstrap's lock and nothing else of the
# test host needs it, so it is no protected host package (bootstrap.inputs.host.own_tools).
USER_FILELOCK = "0.0.1"
HOST_DISTS.append(Dist("filelock", USER_FILELOCK, module("filelock", USER_FILELOCK)))


def build_wheelhouse(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for dist in FIXTURE_DISTS + HOST_DISTS:
        build_wheel(dist, folder)
    return folder


# Stand-ins for the packages of the test workflow (repo_template/test_custom_packages_runtime.py).
# NOT the real projects: just enough of each API for the workflow's usage checks, under the real names and
# import names, so the workflow runs offline. The real ones are used by the tests marked `network`.
_COLORAMA_ANSI = """\
CSI = "\\033["


def code_to_chars(code):
    return CSI + str(code) + "m"


class AnsiCodes:
    def __init__(self):
        for name in dir(self):
            if not name.startswith("_"):
                setattr(self, name, code_to_chars(getattr(self, name)))


class AnsiFore(AnsiCodes):
    BLACK, RED, GREEN, YELLOW, BLUE, MAGENTA, CYAN, WHITE, RESET = 30, 31, 32, 33, 34, 35, 36, 37, 39


class AnsiBack(AnsiCodes):
    BLACK, RED, GREEN, YELLOW, BLUE, MAGENTA, CYAN, WHITE, RESET = 40, 41, 42, 43, 44, 45, 46, 47, 49


class AnsiStyle(AnsiCodes):
    BRIGHT, DIM, NORMAL, RESET_ALL = 1, 2, 22, 0


Fore, Back, Style = AnsiFore(), AnsiBack(), AnsiStyle()
"""

_TABULATE = """\
__version__ = "0.9.0"


def tabulate(rows, headers=()):
    table = [[str(cell) for cell in row] for row in [list(headers), *rows]]
    widths = [max(len(row[i]) for row in table if i < len(row)) for i in range(len(table[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\\n".join(lines)
"""

_DATEUTIL_PARSER = """\
import datetime


def parse(text):
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        return datetime.datetime.strptime(text, "%B %d, %Y")
"""

# A YAML subset: flat mappings of scalars and flow lists; dumps JSON (which is YAML).
_YAML = """\
import json

__version__ = "6.0.2"


def safe_dump(data):
    return json.dumps(data) + "\\n"


def _scalar(text):
    text = text.strip()
    if text.startswith("["):
        return [_scalar(part) for part in text[1:-1].split(",") if part.strip()]
    try:
        return json.loads(text)
    except ValueError:
        return text


def safe_load(text):
    try:
        return json.loads(text)
    except ValueError:
        pass
    return {key.strip(): _scalar(value) for key, value in (line.split(":", 1) for line in text.splitlines() if line)}
"""

RUNTIME_STAND_INS = [
    Dist(
        "colorama",
        "0.4.6",
        {
            "colorama/__init__.py": "from .ansi import Back, Fore, Style\n__version__ = '0.4.6'\n",
            "colorama/ansi.py": _COLORAMA_ANSI,
        },
    ),
    # Broken on purpose: its colours are not escape codes, so the workflow's usage checks fail.
    Dist("colorama", "0.4.5", module("colorama", "0.4.5", "class Fore:\n    RED = 'red'\nBack = Style = Fore\n")),
    Dist("tabulate", "0.9.0", {"tabulate/__init__.py": _TABULATE}),
    Dist(
        "python-dateutil",
        "2.9.0.post0",
        {"dateutil/__init__.py": "__version__ = '2.9.0.post0'\n", "dateutil/parser.py": _DATEUTIL_PARSER},
    ),
    Dist("PyYAML", "6.0.2", {"yaml/__init__.py": _YAML}),
    # Imported under a name that is not its own, with no top_level.txt: the workflow reads its RECORD.
    Dist("bsf-renamed", "1.0", module("bsf_other_name", "1.0", "def hello():\n    return 'hello'\n")),
]
FIXTURE_DISTS.extend(RUNTIME_STAND_INS)

# A package that ships its own test suite: test folders get no bytecode at build time.
FIXTURE_DISTS.append(
    Dist(
        "bsf-with-tests",
        "1.0",
        {
            **module("bsf_with_tests", "1.0"),
            "bsf_with_tests/core.py": "VALUE = 42\n",
            "bsf_with_tests/tests/__init__.py": "",
            "bsf_with_tests/tests/test_core.py": "from bsf_with_tests.core import VALUE\nCHECKED = VALUE == 42\n",
        },
    )
)
# A package shipping a file that does not compile (Python 2 syntax, never imported): bytecode
# compilation at build time must warn about it and go on, as pip does.
FIXTURE_DISTS.append(
    Dist(
        "bsf-py2-leftovers",
        "1.0",
        {**module("bsf_py2_leftovers", "1.0"), "bsf_py2_leftovers/legacy.py": "print 'python 2'\n"},
    )
)
