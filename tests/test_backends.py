"""Unit tests of ``bootstrap.tools.backends``: the command lines, and the tools' failures as one line.

Nothing is run here: the backends are built directly and their failures are
``CommandError``s holding output as pip-compile, pip and uv write it.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import pytest

from bootstrap.errors import CommandError
from bootstrap.inputs import requirements
from bootstrap.inputs.requirements import Desired
from bootstrap.tools.backends import PipBackend, UvBackend

UV = "/usr/bin/uv"
SECRET_INDEX = "https://user:secret@host/simple"


@pytest.fixture(autouse=True)
def no_uv_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine's uv settings stay out (pip's are stripped by conftest's ``isolated_pip``)."""
    for key in ("UV_FIND_LINKS", "UV_INDEX_URL", "UV_EXTRA_INDEX_URL"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture
def desired(tmp_path: Path) -> Desired:
    """A requirements.txt asking for bar (line 2) and foo (line 3)."""
    path = tmp_path / "requirements.txt"
    path.write_text("# the workflow's packages\nbar>=1\nfoo==9\n", encoding="utf-8")
    return requirements.read(path)


def failure(stdout: str = "", stderr: str = "", *, timed_out: bool = False) -> CommandError:
    return CommandError([sys.executable, "-m", "piptools", "compile"], 1, stdout, stderr, timed_out=timed_out)


def pip() -> PipBackend:
    return PipBackend({"PIP_ONLY_BINARY": ":all:"})


def uv(env: dict[str, str] | None = None) -> UvBackend:
    return UvBackend(UV, env=env if env is not None else {}, options=("--no-index",))


def uv_find_links() -> str:
    """Where uv is said to look under the tests' settings: conftest's find-links, no index."""
    return os.environ["PIP_FIND_LINKS"]


# -- command lines: pip-tools and pip --------------------------------------------------------------


@pytest.mark.parametrize("hashes", [False, True])
def test_pip_compile_argv(hashes: bool) -> None:
    argv = pip().compile_argv("requirements.in", "requirements.lock", hashes=hashes)
    # With hashes, pip-compile through bootstrap's shim that takes them from the index (tools.piptools_compile).
    program = ["bootstrap.tools.piptools_compile"] if hashes else ["piptools", "compile"]
    assert argv[: 2 + len(program)] == [sys.executable, "-m", *program]
    for option in ("--no-emit-options", "--strip-extras", "--no-header"):
        assert option in argv
    assert argv[-3:] == ["--output-file", "requirements.lock", "requirements.in"]
    assert ("--generate-hashes" in argv) is hashes
    if hashes:
        assert argv.index("--generate-hashes") < argv.index("--output-file")


@pytest.mark.parametrize("no_deps", [False, True])
def test_pip_install_command(tmp_path: Path, no_deps: bool) -> None:
    target, reqs = tmp_path / "site", tmp_path / "pins.txt"
    argv, env = pip().install_command(target, reqs, no_deps=no_deps, index_args=["--extra-index-url", "https://x/"])
    assert argv[:4] == [sys.executable, "-m", "pip", "install"]
    assert argv[argv.index("--target") + 1] == str(target)
    assert "--no-compile" in argv
    assert ("--no-deps" in argv) is no_deps
    assert argv[-2:] == ["-r", str(reqs)]
    assert argv[argv.index("--extra-index-url") + 1] == "https://x/"
    assert env == {"PIP_ONLY_BINARY": ":all:"}


def test_the_backend_keeps_its_own_copy_of_the_environment() -> None:
    given = {"PIP_ONLY_BINARY": ":all:"}
    backend = PipBackend(given)
    given["PIP_INDEX_URL"] = "https://elsewhere/"
    assert backend.env == {"PIP_ONLY_BINARY": ":all:"}


# -- command lines: uv -----------------------------------------------------------------------------


@pytest.mark.parametrize("hashes", [False, True])
def test_uv_compile_argv(hashes: bool) -> None:
    argv = uv().compile_argv("requirements.in", "requirements.lock", hashes=hashes)
    assert argv[:3] == [UV, "pip", "compile"]
    assert argv[argv.index("--python") + 1] == sys.executable
    assert "--no-index" in argv
    assert "--no-header" in argv
    assert argv[-3:] == ["--output-file", "requirements.lock", "requirements.in"]
    assert ("--generate-hashes" in argv) is hashes
    if hashes:
        assert argv.index("--generate-hashes") < argv.index("--output-file")


@pytest.mark.parametrize("no_deps", [False, True])
def test_uv_install_command(tmp_path: Path, no_deps: bool) -> None:
    target, reqs = tmp_path / "site", tmp_path / "pins.txt"
    argv, env = uv({"UV_HTTP_TIMEOUT": "5"}).install_command(target, reqs, no_deps=no_deps, index_args=[])
    assert argv[:3] == [UV, "pip", "install"]
    assert argv[argv.index("--target") + 1] == str(target)
    assert argv[argv.index("--python") + 1] == sys.executable
    assert "--no-index" in argv
    assert ("--no-deps" in argv) is no_deps
    assert argv[-2:] == ["-r", str(reqs)]
    assert env == {"UV_HTTP_TIMEOUT": "5"}


def test_uv_find_links_go_into_the_environment(tmp_path: Path) -> None:
    index_args = ["-f", "https://a.example/links/", "--extra-index-url", "https://x/", "--find-links=/wheels"]
    argv, env = uv().install_command(tmp_path / "site", tmp_path / "pins.txt", no_deps=True, index_args=index_args)
    assert env["UV_FIND_LINKS"] == "https://a.example/links/,/wheels"
    assert argv[argv.index("--extra-index-url") + 1] == "https://x/"
    for left_out in ("-f", "--find-links", "--find-links=/wheels", "/wheels", "https://a.example/links/"):
        assert left_out not in argv


def test_uv_find_links_join_the_backends_own(tmp_path: Path) -> None:
    backend = uv({"UV_FIND_LINKS": "/mine,https://theirs/"})
    argv, env = backend.install_command(
        tmp_path / "site", tmp_path / "pins.txt", no_deps=False, index_args=["--find-links", "/added"]
    )
    assert env["UV_FIND_LINKS"] == "/mine,https://theirs/,/added"
    assert "/added" not in argv
    assert backend.env == {"UV_FIND_LINKS": "/mine,https://theirs/"}  # the backend itself is unchanged


def test_uv_find_links_join_the_operators(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UV_FIND_LINKS", "/operator")
    argv, env = uv().install_command(tmp_path / "site", tmp_path / "pins.txt", no_deps=False, index_args=["-f", "/x"])
    assert env["UV_FIND_LINKS"] == "/operator,/x"
    assert "/x" not in argv


def test_uv_without_find_links_sets_none(tmp_path: Path) -> None:
    _, env = uv().install_command(tmp_path / "site", tmp_path / "pins.txt", no_deps=False, index_args=[])
    assert "UV_FIND_LINKS" not in env


# -- pip-compile's failures ------------------------------------------------------------------------

PIP_NOT_FOUND = """\
Using indexes:
  {index}

ROUND 1
ERROR: Could not find a version that satisfies the requirement {spec} (from versions: {versions})
ERROR: No matching distribution found for {spec}
"""


def pip_not_found(spec: str, versions: str, index: str = "https://pypi.example/simple") -> CommandError:
    return failure(stderr=PIP_NOT_FOUND.format(spec=spec, versions=versions, index=index))


def test_pip_a_missing_version_names_the_line_and_the_versions(desired: Desired) -> None:
    message = pip().explain_resolution(pip_not_found("foo==9", "1.0, 2.0"), desired, wheels_only=True)
    assert message.startswith("requirements.txt:3: no version of foo==9 found on ")
    assert "(available: 1.0, 2.0)" in message
    assert "index https://pypi.example/simple" in message
    assert "\n" not in message


def test_pip_names_are_compared_canonically(tmp_path: Path) -> None:
    path = tmp_path / "requirements.txt"
    path.write_text("Foo_Bar==9\n", encoding="utf-8")
    message = pip().explain_resolution(pip_not_found("foo-bar==9", "1.0"), requirements.read(path), wheels_only=True)
    assert message.startswith("requirements.txt:1: no version of foo-bar==9")


def test_pip_a_missing_dependency_names_no_line(desired: Desired) -> None:
    message = pip().explain_resolution(pip_not_found("baz>=3", "1.0"), desired, wheels_only=True)
    assert message.startswith("no version of baz>=3 found on ")


@pytest.mark.parametrize("wheels_only", [True, False])
def test_pip_a_package_with_no_versions_was_not_found(desired: Desired, wheels_only: bool) -> None:
    message = pip().explain_resolution(pip_not_found("foo==9", "none"), desired, wheels_only=wheels_only)
    assert message.startswith("requirements.txt:3: foo==9 was not found on ")
    assert "check the name" in message
    assert ("BOOTSTRAP_ALLOW_SOURCE_BUILDS" in message) is wheels_only


def test_pip_a_host_pin_the_index_lacks(desired: Desired) -> None:
    hosted = dataclasses.replace(desired, host_constraints="foo==1.0\n")
    message = pip().explain_resolution(pip_not_found("foo==1.0", "2.0"), hosted, wheels_only=True)
    assert message.startswith("requirements.txt:3: the requirements need foo, which the host has (foo==1.0)")
    assert "does not offer that version (2.0)" in message
    assert "BOOTSTRAP_HOST_OVERRIDES=foo" in message


def test_pip_the_last_conflict_is_the_one_named(desired: Desired) -> None:
    block = (
        "ERROR: Cannot install {a} and {b} because these package versions have conflicting dependencies.\n"
        "\n"
        "The conflict is caused by:\n"
        "    The user requested {a}\n"
        "    {b} depends on {c}\n"
        "\n"
        "To fix this you could try to:\n"
        "1. loosen the range of package versions you've specified\n"
    )
    output = block.format(a="foo==1.0", b="old 1.0", c="foo<1") + block.format(a="foo==9", b="bar 1.0", c="foo<2")
    message = pip().explain_resolution(failure(stderr=output), desired, wheels_only=True)
    assert message == (
        "the requirements conflict: The user requested foo==9; bar 1.0 depends on foo<2; relax one of the pins"
    )


@pytest.mark.parametrize(
    "line",
    [
        "ERROR: HTTPSConnectionPool(host='pypi.example', port=443): Max retries exceeded with url: /simple/foo/",
        "WARNING: Retrying after connection broken by 'NewConnectionError(...: Failed to establish a new connection'",
        f"WARNING: Could not fetch URL {SECRET_INDEX}/foo/: connection error",
    ],
)
def test_pip_an_unreachable_index(desired: Desired, line: str) -> None:
    output = f"Using indexes:\n  {SECRET_INDEX}\n\n{line}\n"
    message = pip().explain_resolution(failure(stderr=output), desired, wheels_only=True)
    assert message.startswith("could not reach index https://****@host/simple")
    assert "secret" not in message


def test_pip_a_timeout(desired: Desired) -> None:
    message = pip().explain_resolution(failure(stderr="Collecting foo==9\n", timed_out=True), desired, wheels_only=True)
    assert message.startswith("resolution timed out on ")
    assert "BOOTSTRAP_RESOLVE_TIMEOUT" in message


def test_pip_any_other_failure_gives_pips_last_error(desired: Desired) -> None:
    output = "Traceback (most recent call last):\n  File 'x'\nERROR: something odd\n  some detail\n"
    message = pip().explain_resolution(failure(stderr=output), desired, wheels_only=True)
    assert message.startswith("pip-compile failed on ")
    assert message.endswith(": something odd")


def test_pip_messages_never_show_credentials(desired: Desired, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_FIND_LINKS", "https://user:secret@links.example/wheels/")
    hosted = dataclasses.replace(desired, host_constraints="foo==1.0\n")
    outputs = [
        pip_not_found("foo==9", "1.0, 2.0", SECRET_INDEX),
        pip_not_found("foo==9", "none", SECRET_INDEX),
        failure(stderr=f"Using indexes:\n  {SECRET_INDEX}\n\nERROR: boom at {SECRET_INDEX}\n"),
        failure(stderr=f"Using indexes:\n  {SECRET_INDEX}\n", timed_out=True),
    ]
    for exc in outputs:
        for wanted in (desired, hosted):
            message = pip().explain_resolution(exc, wanted, wheels_only=True)
            assert "secret" not in message
            assert "****@" in message
        assert "secret" not in pip().explain_install(exc)


# -- pip install's failures ------------------------------------------------------------------------


def test_pip_install_on_a_full_disk() -> None:
    output = "Processing ./foo-1.0-py3-none-any.whl\nERROR: Could not install packages due to an OSError: [Errno 28] "
    exc = failure(stderr=output + "No space left on device\n")
    assert pip().explain_install(exc).startswith("the disk is full")


def test_pip_install_timing_out() -> None:
    message = pip().explain_install(failure(stdout="Collecting foo\n", timed_out=True))
    assert message.startswith("pip install timed out on ")
    assert "BOOTSTRAP_INSTALL_TIMEOUT" in message


def test_pip_install_failing_otherwise_gives_its_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_FIND_LINKS", "https://user:secret@links.example/")
    output = "Looking in indexes: https://user:secret@host/simple\nERROR: Wheel 'foo' has an invalid RECORD\n"
    message = pip().explain_install(failure(stdout=output))
    assert message.startswith("pip install failed on index https://****@host/simple")
    assert message.endswith(": Wheel 'foo' has an invalid RECORD")
    assert "secret" not in message


# -- uv's failures ---------------------------------------------------------------------------------


def uv_report(*because: str) -> CommandError:
    """uv's resolution report as it draws it on a terminal."""
    lines = ["  \u00d7 No solution found when resolving dependencies:", f"  \u2570\u2500\u25b6 {because[0]}"]
    lines += [f"      {line}" for line in because[1:]]
    return CommandError([UV, "pip", "compile"], 1, "", "\n".join(lines) + "\n")


@pytest.mark.parametrize("wheels_only", [True, False])
def test_uv_a_package_not_in_the_registry_was_not_found(desired: Desired, wheels_only: bool) -> None:
    exc = uv_report(
        "Because foo was not found in the package registry and you require foo, we can conclude that your "
        "requirements are unsatisfiable."
    )
    message = uv().explain_resolution(exc, desired, wheels_only=wheels_only)
    assert message.startswith("requirements.txt:3: foo==9 was not found on ")
    assert ("BOOTSTRAP_ALLOW_SOURCE_BUILDS" in message) is wheels_only


def test_uv_no_fitting_version(desired: Desired) -> None:
    exc = uv_report(
        "Because only foo<=2.0 is available and you require foo>=3, we can conclude that your requirements are "
        "unsatisfiable."
    )
    message = uv().explain_resolution(exc, desired, wheels_only=True)
    assert message.startswith("requirements.txt:3: no version of foo>=3 found on ")
    assert "only foo<=2.0 is available" in message
    assert "\u2570" not in message and "\u00d7" not in message  # no box drawing
    assert "\n" not in message


def test_uv_a_host_pin_the_index_lacks(desired: Desired) -> None:
    hosted = dataclasses.replace(desired, host_constraints="foo==1.0\n")
    exc = uv_report(
        "Because only foo==2.0 is available and you require foo==1.0, we can conclude that your requirements "
        "are unsatisfiable."
    )
    message = uv().explain_resolution(exc, hosted, wheels_only=True)
    assert message.startswith("requirements.txt:3: the requirements need foo, which the host has (foo==1.0)")
    assert "BOOTSTRAP_HOST_OVERRIDES=foo" in message


def test_uv_a_source_only_package(desired: Desired) -> None:
    exc = uv_report(
        "Because foo==9 has no usable wheels and building from source is disabled, we can conclude that foo==9 "
        "cannot be used.",
        "And because you require foo==9, we can conclude that your requirements are unsatisfiable.",
    )
    message = uv().explain_resolution(exc, desired, wheels_only=True)
    assert message.startswith("requirements.txt:3: foo publishes only a source archive on ")
    assert "BOOTSTRAP_ALLOW_SOURCE_BUILDS=true" in message


def test_uv_a_conflict(desired: Desired) -> None:
    exc = uv_report(
        "Because foo==9 depends on bar<1 and you require foo==9, we can conclude that you require bar<1.",
        "And because you require bar>=1, we can conclude that your requirements are unsatisfiable.",
    )
    message = uv().explain_resolution(exc, desired, wheels_only=True)
    assert message.startswith("the requirements conflict: Because foo==9 depends on bar<1")
    assert "you require bar>=1" in message
    assert message.endswith("; relax one of the pins")


def test_uv_an_unreachable_index(desired: Desired) -> None:
    output = (
        f"error: Failed to fetch: `{SECRET_INDEX}/foo/`\n"
        f"  Caused by: Request failed after 3 retries\n"
        f"  Caused by: error sending request for url ({SECRET_INDEX}/foo/)\n"
    )
    message = uv().explain_resolution(CommandError([UV], 2, "", output), desired, wheels_only=True)
    assert message.startswith("could not reach ")
    assert "https://****@host/simple/foo/" in message
    assert "secret" not in message


def test_uv_a_timeout(desired: Desired) -> None:
    exc = CommandError([UV, "pip", "compile"], None, "", "", timed_out=True)
    assert uv().explain_resolution(exc, desired, wheels_only=True).startswith("resolution timed out on ")


def test_uv_any_other_failure_gives_uvs_error(desired: Desired) -> None:
    output = "error: Failed to parse `requirements.in`\n  Caused by: unexpected character\nhint: check it\n"
    message = uv().explain_resolution(CommandError([UV], 2, "", output), desired, wheels_only=True)
    assert message == (
        "uv pip compile failed on find-links "
        f"{uv_find_links()}: Failed to parse `requirements.in`: unexpected character"
    )


def test_uv_messages_never_show_credentials(desired: Desired, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIP_NO_INDEX")
    monkeypatch.setenv("UV_INDEX_URL", SECRET_INDEX)
    monkeypatch.setenv("UV_FIND_LINKS", "https://user:secret@links.example/")
    hosted = dataclasses.replace(desired, host_constraints="foo==1.0\n")
    outputs = [
        uv_report(f"Because foo was not found in the package registry at {SECRET_INDEX} and you require foo, ..."),
        uv_report("Because only foo==2.0 is available and you require foo==1.0, we can conclude ..."),
        uv_report(f"Because foo==9 depends on bar<1 (from {SECRET_INDEX}) and you require bar>=1, we can conclude"),
        CommandError([UV], 2, "", f"error: Failed to fetch: `{SECRET_INDEX}/foo/`\n"),
        CommandError([UV], 2, "", f"error: something else at {SECRET_INDEX}\n"),
        CommandError([UV], None, "", "", timed_out=True),
    ]
    for exc in outputs:
        for wanted in (desired, hosted):
            message = uv().explain_resolution(exc, wanted, wheels_only=True)
            assert "secret" not in message
            assert "****@" in message
        assert "secret" not in uv().explain_install(exc)


# -- uv install's failures -------------------------------------------------------------------------


def test_uv_install_on_a_full_disk() -> None:
    output = "error: Failed to install: foo-1.0-py3-none-any.whl\n  Caused by: No space left on device (os error 28)\n"
    assert uv().explain_install(CommandError([UV], 2, "", output)).startswith("the disk is full")
    output = "error: Failed to write to the target folder (os error 28)\n"
    assert uv().explain_install(CommandError([UV], 2, "", output)).startswith("the disk is full")


def test_uv_install_failing_otherwise_gives_its_error() -> None:
    output = "error: Failed to install: foo-1.0-py3-none-any.whl\n  Caused by: the wheel is invalid\n"
    message = uv().explain_install(CommandError([UV], 2, "", output))
    assert message.startswith("uv pip install failed on ")
    assert message.endswith(": Failed to install: foo-1.0-py3-none-any.whl: the wheel is invalid")


def test_a_tool_the_interpreter_cannot_find_is_named_not_the_index(desired: Desired) -> None:
    for module, distribution in (("piptools", "pip-tools"), ("pip", "pip")):
        stderr = f"/usr/bin/python3: No module named {module}\n"
        exc = CommandError(["/usr/bin/python3", "-m", module, "compile"], 1, "", stderr)
        message = PipBackend().explain_resolution(exc, desired, wheels_only=True)
        assert message.startswith(f"/usr/bin/python3 cannot run {distribution} (No module named {module})"), message
        assert "index" not in message.split(":")[0]
        assert PipBackend().explain_install(exc) == message
    shim = ["/usr/bin/python3", "-m", "bootstrap.tools.piptools_compile", "--generate-hashes"]
    exc = CommandError(shim, 1, "", "ModuleNotFoundError: No module named 'piptools'\n")
    assert PipBackend().explain_install(exc).startswith("/usr/bin/python3 cannot run pip-tools")
    # A package's own build failing on a module of another name is that package's error, not a missing tool.
    for other in ("pipes", "pip._internal.locations.foo"):
        exc = CommandError(["/usr/bin/python3", "-m", "pip", "install"], 1, "", f"No module named '{other}'\n")
        assert "cannot run" not in PipBackend().explain_install(exc)


def test_pip_a_version_for_another_python_says_which_python(desired: Desired) -> None:
    stderr = (
        "pip._internal.exceptions.UnsupportedPythonVersion: "
        "Package 'Foo' requires a different Python: 3.11.7 not in '>=3.12'\n"
    )
    message = pip().explain_resolution(failure(stderr=stderr), desired, wheels_only=True)
    assert "the versions of foo the requirements allow need Python >=3.12, and this interpreter is 3.11.7" in message
    assert "not found" not in message


def test_pip_a_long_list_of_versions_is_cut_to_the_newest(desired: Desired) -> None:
    versions = ", ".join(f"0.{minor}" for minor in range(300))
    stderr = f"ERROR: Could not find a version that satisfies the requirement foo==9 (from versions: {versions})\n"
    message = pip().explain_resolution(failure(stderr=stderr), desired, wheels_only=True)
    assert "(available: 0.295, 0.296, 0.297, 0.298, 0.299 and 295 older)" in message
    assert len(message) < 400


def test_pip_versions_an_index_ignored_for_another_python_are_told(desired: Desired) -> None:
    """On an index that serves data-requires-python (PyPI), pip lists such versions as ignored."""
    stderr = (
        "INFO: Ignored the following versions that require a different python version: 2.0 Requires-Python >=3.99\n"
        "ERROR: Could not find a version that satisfies the requirement foo==2.0 (from versions: 1.0)\n"
    )
    message = pip().explain_resolution(failure(stderr=stderr), desired, wheels_only=True)
    assert "the versions of foo the requirements allow need Python >=3.99" in message


def test_pip_versions_ignored_for_another_python_are_not_blamed_on_a_package_they_are_not_of(
    desired: Desired,
) -> None:
    """pip lists every version it skipped for Python in the whole resolution (Django 6 for 3.12), next to
    whatever failed (djhtml==1.4.13, which has no such version)."""
    stderr = (
        "INFO: Ignored the following versions that require a different python version: 6.0 Requires-Python "
        ">=3.12; 6.0.1 Requires-Python >=3.12\n"
        "ERROR: Could not find a version that satisfies the requirement foo==1.4.13 (from versions: 1.4.10, 1.4.14)\n"
    )
    message = pip().explain_resolution(failure(stderr=stderr), desired, wheels_only=True)
    assert "need Python" not in message and "no version of foo==1.4.13 found" in message, message


def test_uv_the_current_python_not_satisfying_a_version_is_told(desired: Desired) -> None:
    stderr = (
        "  \u00d7 No solution found when resolving dependencies:\n"
        "  ╰─▶ Because the current Python version (3.11.7) does not satisfy Python>=3.99 and foo==2.0 depends on "
        "Python>=3.99, we can conclude that foo==2.0 cannot be used.\n"
    )
    backend = UvBackend("/usr/bin/uv")
    message = backend.explain_resolution(CommandError(["uv"], 1, "", stderr), desired, wheels_only=True)
    assert "the versions of foo the requirements allow need Python >=3.99" in message
