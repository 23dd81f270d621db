"""Read and validate the committed requirements file.

The file is the truth, but it is also input from anyone who can commit to the
workflow repo. So it may name packages and versions (PEP 508), pin hashes, and
include other files inside the repo folder; it may not say *where* packages
come from (index options, URLs, paths, editables): that is the operator's
choice, made in pip's own configuration. Every refusal is ``file:line: why``.
"""

from __future__ import annotations

import codecs
import functools
import logging
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from bootstrap.errors import RequirementsError, redact
from bootstrap.store.fs import (
    MAX_REQUIREMENTS_BYTES,
    bytes_sha256,
    file_sha256,
    read_limited,
    resolves_inside,
    text_sha256,
)

log = logging.getLogger("bootstrap")

_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://|^(git|hg|svn|bzr)\+")
# pip's archive endings (pip._internal.utils.filetypes): pip takes `x.tbz` for a file, not a name.
_ARCHIVE = re.compile(r"\.(whl|zip|tar\.gz|tgz|tar|tar\.bz2|tbz|tar\.xz|txz|tlz|tar\.lz|tar\.lzma)$", re.IGNORECASE)
_ENV_VAR = re.compile(r"\$\{[A-Za-z0-9_]+\}")
_NAMED_REFERENCE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._-]*+\s*+(?:\[[^\]]*+\])?+\s*+@"
)  # possessive: linear on a long run of blanks
# A pinned hash as pip takes it (``--hash=sha256:<hex>``), in a requirements file or a lock.
HASH_VALUE = re.compile(r"^(sha256|sha384|sha512):[0-9a-fA-F]+$")

_WHERE_FROM = (
    "where packages come from is the operator's choice, set in pip's configuration "
    "(PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS or pip.conf), never in the committed file"
)
_INDEX_OPTIONS = frozenset(
    {"-i", "--index-url", "--extra-index-url", "--no-index", "-f", "--find-links", "--trusted-host"}
)
_ALLOWED_GLOBAL_FLAGS = frozenset({"--pre", "--prefer-binary", "--require-hashes"})
_VALUE_OPTIONS = frozenset({"--only-binary"})  # allowed global options that take one value
# Files included within files (-r, -c), counting the committed file: far more than anyone writes, far
# fewer than the interpreter's recursion limit allows.
MAX_INCLUDE_DEPTH = 100
# The longest logical line read (continuations joined): a line holding every hash of numpy's 60 wheels is
# about 6,000 characters. Longer is a mistake or an attack; shlex, as pip uses it, is quadratic in a token's
# length.
MAX_LINE_LENGTH = 100_000
_INCLUDE_OPTIONS = {
    "-r": "requirement",
    "--requirement": "requirement",
    "-c": "constraint",
    "--constraint": "constraint",
}


@dataclass(frozen=True)
class Policy:
    """What an operator lets the committed file do beyond naming packages (the BOOTSTRAP_ALLOW_* settings)."""

    allow_index_options: bool = False
    allow_direct_references: bool = False
    allow_outside_includes: bool = False


@dataclass(frozen=True)
class RequirementLine:
    """One requirement, with where it was written."""

    path: Path
    line: int
    requirement: Requirement
    hashes: tuple[str, ...] = ()
    runtime: bool = False  # added at run time (the overlay in the packages folder), not committed
    workspace: bool = False  # an organisation's set: a pin of the workspace's, which every org has (``inputs.orgs``)

    @property
    def name(self) -> str:
        return canonicalize_name(self.requirement.name)

    def normalized(self) -> str:
        text = str(self.requirement)
        return " ".join([text, *(f"--hash={h}" for h in self.hashes)])


@dataclass(frozen=True)
class Desired:
    """What the committed file asks for, validated and normalised.

    Filled in while ``read`` reads the file (its lists grow line by line), never changed after:
    the runtime overlay and the host make new values (``overlay.merged``, ``dataclasses.replace``).
    """

    requirements_file: Path
    exists: bool
    requirements: list[RequirementLine] = field(default_factory=list)
    constraints: list[RequirementLine] = field(default_factory=list)
    global_options: list[str] = field(default_factory=list)
    index_options: list[str] = field(default_factory=list)  # only with BOOTSTRAP_ALLOW_INDEX_OPTIONS, as written
    # The same options as pip is given them (a relative find-links folder made absolute), in the same order.
    index_resolved: list[str] = field(default_factory=list)
    inputs: dict[str, str | None] = field(default_factory=dict)  # every file read, and its sha256
    # Given by the caller, not read from the file (so not part of input_sha256, which a committed lock records):
    host_constraints: str = ""  # the host's own packages, as name==version lines
    require_hashes: bool = False  # BOOTSTRAP_REQUIRE_HASHES
    # An organisation's set: what the workspace asks for by name (its pins are requirement lines marked ``workspace``).
    workspace_requested: frozenset[str] = frozenset()

    @property
    def requested(self) -> frozenset[str]:
        own = frozenset(line.name for line in self.requirements if not line.workspace)
        return own | self.workspace_requested

    @property
    def requested_extras(self) -> dict[str, frozenset[str]]:
        """The extras the lines ask for (``dask[complete]``), by canonical name."""
        asked: dict[str, frozenset[str]] = {}
        for line in self.requirements:
            if line.requirement.extras:
                extras = frozenset(canonicalize_name(extra) for extra in line.requirement.extras)
                asked[line.name] = asked.get(line.name, frozenset()) | extras
        return asked

    @property
    def has_hashes(self) -> bool:
        return (
            self.require_hashes
            or any(line.hashes for line in self.requirements)
            or "--require-hashes" in self.global_options
        )

    @property
    def added_at_runtime(self) -> frozenset[str]:
        """Names only the runtime overlay asks for (a name the committed file has too counts as the file's)."""
        committed = {line.name for line in self.requirements if not line.runtime}
        return frozenset(line.name for line in self.requirements if line.runtime and line.name not in committed)

    def source(self, name: str) -> str | None:
        """Where a package is asked for: "repo" (the committed file), "runtime" (added at run time), "workspace"
        (an organisation's set: the workspace's file asks for it) or None."""
        if name in self.added_at_runtime:
            return "runtime"
        if any(line.name == name and not line.workspace for line in self.requirements):
            return "repo"
        return "workspace" if name in self.workspace_requested else None

    def input_text(self, *, committed_only: bool = False, for_pip: bool = False) -> str:
        """The normalised requirements: what resolution depends on, comments and layout aside.

        As written (what a committed lock records: the same in every checkout), or ``for_pip``
        with find-links folders made absolute (pip-compile runs in a scratch folder).
        """
        lines = [
            *(self.index_resolved if for_pip else self.index_options),
            *self.global_options,
            *(
                line.normalized()
                for line in self.requirements
                if not (committed_only and line.runtime) and not (for_pip and line in self.layered_on)
            ),
        ]
        return "\n".join(lines) + "\n"

    @property
    def layered_on(self) -> tuple[RequirementLine, ...]:
        """An organisation's set: the workspace's pins, which the resolver gets as constraints, not requirements
        (its own lines alone are resolved, around them: a fraction of the work), then added to its lock as they
        are. Not with hashes: the pins carry none, and a lock with hashes needs them on every line."""
        if self.has_hashes:
            return ()
        return tuple(line for line in self.requirements if line.workspace)

    @property
    def direct_references(self) -> frozenset[str]:
        """Names the file gives as ``name @ URL`` (only with BOOTSTRAP_ALLOW_DIRECT_REFERENCES)."""
        return frozenset(line.name for line in self.requirements if line.requirement.url)

    def pip_args(self) -> list[str]:
        """The index options (allowed by the operator) that an install from the lock needs too."""
        return [token for option in self.index_resolved for token in shlex.split(option)]

    def constraints_text(self, *, committed_only: bool = False) -> str:
        return "".join(line.normalized() + "\n" for line in self.constraints if not (committed_only and line.runtime))

    @property
    def input_sha256(self) -> str:
        """Identifies the normalised input (requirements and constraints, runtime additions included)."""
        return text_sha256(self.input_text() + "\0" + self.constraints_text())

    @property
    def committed_sha256(self) -> str:
        """Identifies the committed file's input alone: what a committed lock records."""
        return text_sha256(self.input_text(committed_only=True) + "\0" + self.constraints_text(committed_only=True))

    def write_compile_input(self, folder: Path, around: str = "") -> Path:
        """Write the pip-compile input (and its constraints files) into ``folder``.

        ``around``: pins to resolve around (``name==version`` lines): the committed lock's, when only
        runtime additions are new.
        """
        text = self.input_text(for_pip=True)
        if self.constraints or self.layered_on:
            constraints = folder / "constraints.txt"
            layered = "".join(line.normalized() + "\n" for line in self.layered_on)
            constraints.write_text(self.constraints_text() + layered, encoding="utf-8")
            text = f"-c {constraints}\n" + text
        if self.host_constraints:
            host = folder / "host-constraints.txt"
            host.write_text(self.host_constraints, encoding="utf-8")
            text = f"-c {host}\n" + text
        if around:
            pinned = folder / "lock-constraints.txt"
            pinned.write_text(around, encoding="utf-8")
            text = f"-c {pinned}\n" + text
        path = folder / "requirements.in"
        path.write_text(text, encoding="utf-8")
        return path


def read(requirements_file: Path, policy: Policy | None = None) -> Desired:
    """Read and validate ``requirements_file`` under ``policy``; a missing file is the empty set."""
    requirements_file = Path(os.path.abspath(requirements_file))
    desired = Desired(requirements_file=requirements_file, exists=requirements_file.is_file())
    if not desired.exists:
        desired.inputs[str(requirements_file)] = file_sha256(requirements_file)  # None, or why it is no file
        if os.path.lexists(requirements_file):  # a folder, a FIFO, a broken link: not "no requirements"
            why = str(desired.inputs[str(requirements_file)] or "").removeprefix("unreadable: ")
            raise RequirementsError(requirements_file, None, why if why.startswith("is ") else "is not a readable file")
        log.info("%s does not exist: the desired set is empty", requirements_file)
        return desired
    repo_dir = Path(os.path.realpath(requirements_file.parent))
    if not resolves_inside(requirements_file, repo_dir):  # a committed symlink to /proc/self/environ...
        real = os.path.realpath(requirements_file)
        raise RequirementsError(
            requirements_file, None, f"is a link to {real}, outside its folder {repo_dir}; commit the file itself"
        )
    _Reader(desired, repo_dir, policy or Policy()).read_file(requirements_file, kind="requirement", chain=())
    return desired


class _Reader:
    def __init__(self, desired: Desired, repo_dir: Path, policy: Policy) -> None:
        self.desired = desired
        self.repo_dir = repo_dir
        self.policy = policy
        self.seen: dict[tuple[str, str], list[RequirementLine]] = {}
        # (real path, kind) of every file read: a file two includes share (a diamond) is read once.
        self.done: set[tuple[Path, str]] = set()

    def read_file(self, path: Path, *, kind: str, chain: tuple[Path, ...]) -> None:
        real = Path(os.path.realpath(path))
        self.done.add((real, kind))
        try:
            raw = read_limited(path, MAX_REQUIREMENTS_BYTES)  # a FIFO or /dev/zero is refused, never waited on
            self.desired.inputs[str(path)] = bytes_sha256(raw)  # the bytes read are the bytes judged
            text = decode(raw)
        except ValueError as exc:
            raise RequirementsError(path, None, str(exc)) from None
        except OSError as exc:
            raise RequirementsError(path, None, f"cannot be read ({exc.strerror})") from None
        for line_no, line in logical_lines(text):
            if len(line) > MAX_LINE_LENGTH:
                raise RequirementsError(
                    path,
                    line_no,
                    f"is {len(line):,} characters long (continuations joined), more than the {MAX_LINE_LENGTH:,} "
                    "bootstrap reads in one line; write one requirement per line",
                )
            self.read_line(path, line_no, line, kind=kind, chain=(*chain, real))

    def read_line(self, path: Path, line_no: int, line: str, *, kind: str, chain: tuple[Path, ...]) -> None:
        if _ENV_VAR.search(line):
            raise RequirementsError(
                path, line_no, "environment variable references (${...}) are not allowed in a committed file"
            )
        if line.startswith("-"):
            self.read_option(path, line_no, line, kind=kind, chain=chain)
            return
        requirement_line = parse_requirement(path, line_no, line, self.policy)
        if kind == "constraint" and requirement_line.requirement.extras:
            extras = ",".join(sorted(requirement_line.requirement.extras))
            raise RequirementsError(
                path, line_no, f"a constraint cannot have extras ([{extras}]), as pip refuses them; drop them here"
            )
        earlier_lines = self.seen.setdefault((kind, requirement_line.name), [])
        for earlier in earlier_lines:  # pip merges the others: extras united, specifiers intersected
            if conflicting(earlier, requirement_line):
                raise RequirementsError(
                    path,
                    line_no,
                    f"{requirement_line.requirement} conflicts with {earlier.path.name}:{earlier.line} "
                    f"({earlier.requirement}): no version satisfies both; keep one of them",
                )
        earlier_lines.append(requirement_line)
        target = self.desired.requirements if kind == "requirement" else self.desired.constraints
        target.append(requirement_line)

    def read_option(self, path: Path, line_no: int, line: str, *, kind: str, chain: tuple[Path, ...]) -> None:
        try:
            tokens = split_options(line)
        except ValueError as exc:
            raise RequirementsError(path, line_no, f"cannot parse options ({exc})") from None
        if _short_or_long(tokens[0])[0] in _INDEX_OPTIONS:
            self.read_index_options(path, line_no, tokens)
            return
        option, equals, value = _short_or_long(tokens[0])
        rest = tokens[1:]
        if not equals and rest and option not in _ALLOWED_GLOBAL_FLAGS:
            value, rest = rest[0], rest[1:]
        if option in ("-e", "--editable"):
            raise RequirementsError(
                path,
                line_no,
                f"editable installs ({option}) are never put in a shared generation: publish the package to "
                "the index and require it by name",
            )
        if option == "--no-binary":
            raise RequirementsError(
                path, line_no, "--no-binary is not allowed: it makes pip build (run code) from source at start-up"
            )
        is_global = kind == "requirement" and option in _ALLOWED_GLOBAL_FLAGS | _VALUE_OPTIONS
        if option not in _INCLUDE_OPTIONS and not is_global:
            raise RequirementsError(path, line_no, f"option {option} is not supported in a committed requirements file")
        if option in _ALLOWED_GLOBAL_FLAGS and equals:
            raise RequirementsError(path, line_no, f"{option} takes no value")
        if not value and option not in _ALLOWED_GLOBAL_FLAGS:
            what = "a file name" if option in _INCLUDE_OPTIONS else "a value"
            raise RequirementsError(path, line_no, f"{option} needs {what}")
        if rest:
            # pip would apply these too (`-r x.txt --index-url ...`): never drop them silently.
            stated = f"{option} {value}" if value else option
            raise RequirementsError(
                path, line_no, f"unexpected {redact(shlex.join(rest))} after {stated}; write one option per line"
            )
        if option in _INCLUDE_OPTIONS:
            self.include(
                path, line_no, value, kind=_INCLUDE_OPTIONS[option] if kind == "requirement" else kind, chain=chain
            )
        elif value:
            self._global(f"{option}={_binary_value(path, line_no, option, value)}")
        else:
            self._global(option)

    def read_index_options(self, path: Path, line_no: int, tokens: list[str]) -> None:
        """A line of index options, as many as pip takes on one line (``--trusted-host=a --trusted-host=b``).

        Only with BOOTSTRAP_ALLOW_INDEX_OPTIONS. A relative ``--find-links`` is relative to the file
        that says it, when there is such a folder there (as pip takes it).
        """
        remaining = list(tokens)
        while remaining:
            option, equals, value = _short_or_long(remaining.pop(0))
            if option not in _INDEX_OPTIONS:
                stated = " ".join(tokens[: len(tokens) - len(remaining) - 1])
                raise RequirementsError(
                    path, line_no, f"unexpected {redact(option)} after {redact(stated)}; write it on a line of its own"
                )
            if not self.policy.allow_index_options:
                raise RequirementsError(
                    path,
                    line_no,
                    f"{option} is not allowed: {_WHERE_FROM} (an operator can allow it with "
                    "BOOTSTRAP_ALLOW_INDEX_OPTIONS=true)",
                )
            if option == "--no-index":
                if equals:
                    raise RequirementsError(path, line_no, f"{option} takes no value")
                stated = option
            else:
                if not equals:
                    if not remaining or remaining[0].startswith("-"):
                        raise RequirementsError(path, line_no, f"{option} needs a value")
                    value = remaining.pop(0)
                stated = f"{option} {shlex.quote(value)}"
                if option in ("-f", "--find-links"):
                    resolved = f"{option} {shlex.quote(self._find_links(path, line_no, value))}"
            pair = (stated, resolved if option in ("-f", "--find-links") else stated)
            if pair not in zip(self.desired.index_options, self.desired.index_resolved, strict=True):
                self.desired.index_options.append(pair[0])
                self.desired.index_resolved.append(pair[1])

    def _find_links(self, path: Path, line_no: int, link: str) -> str:
        """A find-links folder named relative to the file that says it, as pip takes it (absolute, for pip);
        inside the repo folder unless BOOTSTRAP_ALLOW_OUTSIDE_INCLUDES; a URL or an absolute path as given."""
        if _URL_SCHEME.match(link) or os.path.isabs(link):
            return link
        beside = path.parent / link
        if not beside.exists():
            raise RequirementsError(path, line_no, f"{link} does not exist beside {path.name}")
        self._inside_repo(path, line_no, link, beside, "")
        return os.path.abspath(beside)

    def _inside_repo(self, path: Path, line_no: int, value: str, target: Path, why: str) -> None:
        """Refuse ``target`` outside the repo folder (links followed), unless BOOTSTRAP_ALLOW_OUTSIDE_INCLUDES."""
        if not resolves_inside(target, self.repo_dir) and not self.policy.allow_outside_includes:
            raise RequirementsError(
                path,
                line_no,
                f"{value} is outside the repo folder {self.repo_dir}{why} (an operator can allow it with "
                "BOOTSTRAP_ALLOW_OUTSIDE_INCLUDES=true)",
            )

    def _global(self, option: str) -> None:
        if option not in self.desired.global_options:
            self.desired.global_options.append(option)

    def include(self, path: Path, line_no: int, value: str, *, kind: str, chain: tuple[Path, ...]) -> None:
        if _URL_SCHEME.match(value):
            raise RequirementsError(path, line_no, f"including {value} is not allowed: only files in the repo folder")
        target = Path(os.path.realpath(path.parent / value))
        self._inside_repo(path, line_no, value, target, "; only files inside it can be included")
        if target in chain:
            raise RequirementsError(path, line_no, f"{value} includes itself (a cycle)")
        if len(chain) >= MAX_INCLUDE_DEPTH:
            raise RequirementsError(
                path,
                line_no,
                f"{value} would be file {len(chain) + 1} of a chain of includes "
                f"(at most {MAX_INCLUDE_DEPTH}); flatten them",
            )
        if not target.exists():  # a folder or a FIFO is named by read_file, with what it is
            raise RequirementsError(path, line_no, f"{value} does not exist")
        if (target, kind) in self.done:  # already read through another include: nothing new in it
            log.debug("%s: %s was already read", path, value)
            return
        self.read_file(target, kind=kind, chain=chain)


def _short_or_long(token: str) -> tuple[str, str, str]:
    """``(option, "=" or "", value)`` of one token: ``--index-url=X``, ``-iX`` and ``-f`` alike."""
    for short in ("-r", "-c", "-i", "-f", "-e"):  # "-rother.txt"
        if token.startswith(short) and len(token) > 2 and not token.startswith("--"):
            return short, "=", token[2:]
    return token.partition("=")


def conflicting(one: RequirementLine, other: RequirementLine) -> bool:
    """Two lines for one package that no version can satisfy together (as far as exact pins and URLs tell;
    ranges are the resolver's to judge), where both are in force: with the same marker (or none), or with
    markers that both hold for this interpreter. Lines under exclusive markers (``x==1; python_version<"3.10"``
    and ``x==2; python_version>="3.10"``) never conflict: pip-compile keeps both."""
    first, second = one.requirement, other.requirement
    if str(first.marker) != str(second.marker) and not (_in_force(first) and _in_force(second)):
        return False
    if first.url or second.url:
        return bool(first.url and second.url and first.url != second.url) or bool(
            (first.url and second.specifier) or (second.url and first.specifier)
        )
    for pinned, against in ((first, second), (second, first)):
        for spec in pinned.specifier:
            exact = spec.operator in ("==", "===") and not spec.version.endswith(".*")
            if exact and not against.specifier.contains(spec.version, prereleases=True):
                return True
    return False


def _in_force(requirement: Requirement) -> bool:
    return requirement.marker is None or requirement.marker.evaluate()


_PACKAGE_NAMES = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(,[A-Za-z0-9][A-Za-z0-9._-]*)*$")


def _binary_value(path: Path, line_no: int, option: str, value: str) -> str:
    """``--only-binary`` takes ``:all:`` or package names, nothing else.

    Its value is written back into pip's input, so anything more (a space and
    ``--find-links``) would be read by pip as another option; and ``:none:``
    would undo the operator's wheels-only default.
    """
    if value == ":none:":
        raise RequirementsError(
            path,
            line_no,
            f"{option}=:none: is not allowed: it makes pip build (run code) from source; whether that is allowed "
            "is the operator's choice (BOOTSTRAP_ALLOW_SOURCE_BUILDS)",
        )
    if value != ":all:" and not _PACKAGE_NAMES.match(value):
        raise RequirementsError(path, line_no, f"{option} takes :all: or package names, not {redact(value)!r}")
    return value


# Byte-order marks, longest first: a UTF-32 LE mark begins with the UTF-16 LE one.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
_CODING = re.compile(rb"coding[:=]\s*([-\w.]+)")


def decode(raw: bytes) -> str:
    """A requirements file's text, decoded as pip decodes it: a byte-order mark (PowerShell's
    ``pip freeze >`` writes UTF-16), else a ``# -*- coding: NAME -*-`` comment in the first two
    lines, else UTF-8. ``ValueError`` says why it cannot be decoded."""
    bom, encoding = next(((bom, name) for bom, name in _BOMS if raw.startswith(bom)), (b"", "utf-8"))
    if not bom:
        for line in raw.split(b"\n")[:2]:
            declared = _CODING.search(line) if line.lstrip().startswith(b"#") else None
            if declared:
                encoding = declared.group(1).decode("ascii")
                break
    try:
        return raw[len(bom) :].decode(encoding)
    except LookupError:
        raise ValueError(f"declares the encoding {encoding!r}, which Python does not know") from None
    except UnicodeDecodeError:
        if encoding == "utf-8" and not bom:
            raise ValueError("is not UTF-8 text") from None
        told = "its byte-order mark" if bom else "its coding comment"
        raise ValueError(f"is not {encoding} text, as {told} says") from None


def strip_comment(line: str) -> str:
    """``line`` without its comment, as pip's ``(^|\\s+)#.*$`` strips it: a ``#`` at the start or after
    white space begins one (``pkg@https://h/x#egg=pkg`` keeps its fragment).

    Linear in the line's length: the regex is quadratic on a long run of blanks (100,000 of them held
    the build lock for minutes).
    """
    start = line.find("#")
    while start > 0 and not line[start - 1].isspace():
        start = line.find("#", start + 1)
    return line if start < 0 else line[:start]


_QUOTING = frozenset("'\"\\")
_BLANKS = re.compile(r"[ \t\r\n]+")  # shlex's own whitespace


def split_options(text: str) -> list[str]:
    """``shlex.split(text)``, as pip splits a line's options; without shlex (quadratic in a token's length)
    when nothing in ``text`` is quoted or escaped."""
    if _QUOTING.isdisjoint(text):
        return [token for token in _BLANKS.split(text) if token]
    return shlex.split(text)


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Lines as pip reads them: comments stripped, backslash continuations joined."""
    result: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        if not pending:
            start = number
        line = strip_comment(raw).rstrip()
        if line.endswith("\\"):
            pending.append(line[:-1])
            continue
        pending.append(line)
        joined = " ".join(part.strip() for part in pending).strip()
        pending = []
        if joined:
            result.append((start, joined))
    if pending:
        joined = " ".join(part.strip() for part in pending).strip()
        if joined:
            result.append((start, joined))
    return result


_ALLOW_DIRECT = "an operator can allow `name @ URL` with BOOTSTRAP_ALLOW_DIRECT_REFERENCES=true"


@functools.lru_cache(maxsize=4096)
def parse_requires_dist(line: str) -> Requirement | None:
    """An installed distribution's ``Requires-Dist`` line, parsed once per process (the host scan walks two
    closures over the same lines, verification one per generation); None when it does not parse: a
    distribution's metadata is not ours to judge. Callers only read the result (it is shared)."""
    try:
        return Requirement(line)
    except InvalidRequirement:
        return None


def is_direct_reference(spec: str) -> bool:
    """``name @ URL``, a URL, an archive or a path: not a name for the index to resolve."""
    return _NAMED_REFERENCE.match(spec) is not None or _bare_reference(spec)


def _bare_reference(spec: str) -> bool:
    return bool(
        _URL_SCHEME.match(spec) or spec.startswith((".", "/", "~")) or _ARCHIVE.search(spec.split(";")[0].strip())
    )


def parse_requirement(path: Path, line_no: int, line: str, policy: Policy) -> RequirementLine:
    spec, hashes = _split_line_options(path, line_no, line)
    named = _NAMED_REFERENCE.match(spec) is not None  # `name @ URL`: judged below, once parsed
    bare = _bare_reference(spec)
    if bare and not named:
        if policy.allow_direct_references:
            raise RequirementsError(path, line_no, f"write a direct reference as `name @ URL`, not {redact(spec)}")
        raise RequirementsError(
            path,
            line_no,
            f"direct references (URLs, archives, folders) are not allowed: {_WHERE_FROM}; require the package by "
            f"name ({_ALLOW_DIRECT})",
        )
    try:
        requirement = Requirement(spec)
    except InvalidRequirement as exc:
        why = str(exc).splitlines()[0] if str(exc) else "invalid requirement"
        raise RequirementsError(path, line_no, f"not a valid requirement ({why}): {spec}") from None
    if requirement.url and not policy.allow_direct_references:
        raise RequirementsError(
            path,
            line_no,
            f"direct references ({requirement.name} @ URL) are not allowed: {_WHERE_FROM}; require the package by "
            f"name ({_ALLOW_DIRECT})",
        )
    return RequirementLine(path=path, line=line_no, requirement=requirement, hashes=hashes)


def _split_line_options(path: Path, line_no: int, line: str) -> tuple[str, tuple[str, ...]]:
    match = re.search(r"\s--?[A-Za-z]", line)
    if match is None:
        return line.strip(), ()
    spec, options = line[: match.start()].strip(), line[match.start() :]
    try:
        tokens = split_options(options)
    except ValueError as exc:
        raise RequirementsError(path, line_no, f"cannot parse options ({exc})") from None
    hashes: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        name, _, value = token.partition("=")
        if name == "--hash":
            if not value and index + 1 < len(tokens):
                index += 1
                value = tokens[index]
            if not HASH_VALUE.match(value):
                raise RequirementsError(
                    path, line_no, f"--hash must be algorithm:hexdigest (sha256:...), not {value!r}"
                )
            hashes.append(value)
        else:
            raise RequirementsError(
                path, line_no, f"option {name} is not allowed on a requirement line (only --hash is)"
            )
        index += 1
    return spec, tuple(hashes)
