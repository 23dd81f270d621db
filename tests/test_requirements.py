"""Unit tests of ``bootstrap.requirements.read``: what a committed file may say, and every refusal."""

from __future__ import annotations

import codecs
import os
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from bootstrap.errors import RequirementsError
from bootstrap.inputs.requirements import Desired, Policy, read

HASH_A = "sha256:" + "a" * 64
HASH_B = "sha256:" + "b" * 64


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """The repo folder (real path, so error messages name the same path the reader computes)."""
    repo = tmp_path.resolve() / "repo"
    repo.mkdir()
    return repo


def write(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def read_lines(folder: Path, *lines: str) -> Desired:
    return read(write(folder / "requirements.txt", *lines))


def refusal(folder: Path, *lines: str, filename: str = "requirements.txt") -> RequirementsError:
    path = write(folder / filename, *lines)
    with pytest.raises(RequirementsError) as info:
        read(path)
    return info.value


def assert_refused_at(error: RequirementsError, path: Path, line: int) -> None:
    """The message is exactly ``<path>:<line>: <why>``."""
    assert error.line == line
    assert str(error) == f"{path}:{line}: {error.why}"
    assert error.why
    assert error.stage == "read"


def specs(desired: Desired) -> dict[str, str]:
    return {line.name: str(line.requirement) for line in desired.requirements}


# -- what is allowed ---------------------------------------------------------------------------


def test_comments_blank_lines_and_inline_comments(folder: Path) -> None:
    desired = read_lines(
        folder,
        "# the reporting workflow",
        "",
        "bsf-alpha==1.0  # pinned for reports",
        "   ",
        "   bsf-gamma",
        "# trailing comment",
    )
    assert desired.exists
    assert specs(desired) == {"bsf-alpha": "bsf-alpha==1.0", "bsf-gamma": "bsf-gamma"}
    assert [line.line for line in desired.requirements] == [3, 5]
    assert desired.requested == frozenset({"bsf-alpha", "bsf-gamma"})


def test_backslash_continuation_is_one_requirement_at_its_first_line(folder: Path) -> None:
    desired = read_lines(folder, "# header", "bsf-alpha>=1.0, \\", "    <3", "bsf-gamma")
    assert specs(desired)["bsf-alpha"] in ("bsf-alpha<3,>=1.0", "bsf-alpha>=1.0,<3")
    assert [(line.name, line.line) for line in desired.requirements] == [("bsf-alpha", 2), ("bsf-gamma", 4)]


def test_extras_and_markers(folder: Path) -> None:
    desired = read_lines(
        folder,
        "requests[security,socks]>=2.31",
        'colorama>=0.4; sys_platform == "win32"',
        "tomli; python_version < '3.11'",
    )
    by_name = {line.name: line.requirement for line in desired.requirements}
    assert by_name["requests"].extras == {"security", "socks"}
    assert str(by_name["requests"].specifier) == ">=2.31"
    assert by_name["colorama"].marker is not None
    assert "sys_platform" in str(by_name["colorama"].marker)
    assert by_name["tomli"].marker is not None


def test_names_are_canonicalised(folder: Path) -> None:
    desired = read_lines(folder, "Jaraco.Functools==1.0", "BSF_Alpha")
    assert desired.requested == frozenset({"jaraco-functools", "bsf-alpha"})


def test_hashes_per_line_and_on_continuation_lines(folder: Path) -> None:
    desired = read_lines(
        folder,
        f"bsf-alpha==1.0 --hash={HASH_A}",
        "bsf-gamma==1.0 \\",
        f"    --hash={HASH_A} \\",
        f"    --hash {HASH_B}",
    )
    hashes = {line.name: line.hashes for line in desired.requirements}
    assert hashes == {"bsf-alpha": (HASH_A,), "bsf-gamma": (HASH_A, HASH_B)}
    assert desired.has_hashes
    assert f"bsf-gamma==1.0 --hash={HASH_A} --hash={HASH_B}" in desired.input_text()


def test_no_hashes_means_no_hash_mode(folder: Path) -> None:
    assert not read_lines(folder, "bsf-alpha").has_hashes


def test_include_and_constraints_inside_the_repo_folder(folder: Path) -> None:
    (folder / "reqs").mkdir()
    other = write(folder / "reqs" / "other.txt", "# included", "bsf-gamma")
    constraints = write(folder / "constraints.txt", "bsf-alpha<2")
    desired = read_lines(folder, "bsf-alpha", "-r reqs/other.txt", "--constraint=constraints.txt")
    assert specs(desired) == {"bsf-alpha": "bsf-alpha", "bsf-gamma": "bsf-gamma"}
    gamma = next(line for line in desired.requirements if line.name == "bsf-gamma")
    assert gamma.path == other and gamma.line == 2
    assert [str(line.requirement) for line in desired.constraints] == ["bsf-alpha<2"]
    assert desired.requested == frozenset({"bsf-alpha", "bsf-gamma"})  # constraints are not requests
    assert set(desired.inputs) == {str(folder / "requirements.txt"), str(other), str(constraints)}
    assert all(desired.inputs.values())


def test_short_include_without_a_space(folder: Path) -> None:
    write(folder / "other.txt", "bsf-gamma")
    assert specs(read_lines(folder, "-rother.txt")) == {"bsf-gamma": "bsf-gamma"}


def test_constraints_change_the_input_hash(folder: Path) -> None:
    write(folder / "constraints.txt", "bsf-alpha<2")
    with_constraints = read_lines(folder, "bsf-alpha", "-c constraints.txt").input_sha256
    without = read_lines(folder, "bsf-alpha").input_sha256
    assert with_constraints != without


def test_pre_is_a_global_option(folder: Path) -> None:
    desired = read_lines(folder, "--pre", "bsf-alpha")
    assert desired.global_options == ["--pre"]
    assert desired.input_text().splitlines()[0] == "--pre"


def test_missing_file_is_the_empty_set(folder: Path) -> None:
    desired = read(folder / "requirements.txt")
    assert desired.exists is False
    assert desired.requirements == [] and desired.constraints == []
    assert desired.requested == frozenset()
    assert desired.inputs == {str(folder / "requirements.txt"): None}


def test_relative_path_is_made_absolute(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(folder / "requirements.txt", "bsf-alpha")
    monkeypatch.chdir(folder)
    desired = read(Path("requirements.txt"))
    assert desired.requirements_file == Path(os.path.abspath(folder / "requirements.txt"))


def test_input_hash_ignores_comments_and_layout(folder: Path) -> None:
    plain = read_lines(folder, "bsf-alpha==1.0", "bsf-gamma").input_sha256
    decorated = read_lines(
        folder,
        "# a comment",
        "",
        "bsf-alpha == 1.0   # why",
        "",
        "   bsf-gamma   ",
    ).input_sha256
    assert decorated == plain


def test_input_hash_changes_with_a_version(folder: Path) -> None:
    one = read_lines(folder, "bsf-alpha==1.0").input_sha256
    two = read_lines(folder, "bsf-alpha==2.0").input_sha256
    assert one != two
    assert read_lines(folder, "bsf-alpha==1.0", "bsf-gamma").input_sha256 not in (one, two)


# -- what is refused: file:line: why -----------------------------------------------------------

PRELUDE = ("# comment", "", "bsf-alpha")  # the bad line is always line 4


@pytest.mark.parametrize(
    ("bad", "why_contains"),
    [
        ("colorama>=>1", "not a valid requirement"),
        ("--index-url https://pypi.example/simple", "PIP_INDEX_URL"),
        ("-i https://pypi.example/simple", "PIP_INDEX_URL"),
        ("--extra-index-url=https://user:pw@pypi.example/simple", "PIP_INDEX_URL"),
        ("--find-links ./wheels", "PIP_INDEX_URL"),
        ("-f https://example.com/wheels/", "PIP_INDEX_URL"),
        ("--trusted-host pypi.example", "PIP_INDEX_URL"),
        ("--no-index", "PIP_INDEX_URL"),
        ("-e .", "editable"),
        ("--editable ./src", "editable"),
        ("bsf-gamma @ https://example.com/bsf_gamma-1.0-py3-none-any.whl", "direct references"),
        ("bsf-gamma @ https://example.com/src/bsf-gamma", "direct references"),
        ("https://x/y.whl", "direct references"),
        ("git+https://github.com/example/pkg.git#egg=pkg", "direct references"),
        ("./pkg", "direct references"),
        ("/abs/pkg", "direct references"),
        ("pkg-1.0.tar.gz", "direct references"),
        ("bsf-gamma==${VERSION}", "environment variable"),
        ("--index-url https://${TOKEN}@pypi.example/simple", "environment variable"),
        ("bsf-gamma --global-option=--fast", "--global-option"),
        ("--global-option=--fast", "--global-option"),
        ("--no-binary :all:", "--no-binary"),
        ("--no-binary=bsf-gamma", "--no-binary"),
        ("bsf-gamma --hash=md5:abc", "--hash must be"),
        ("-r", "needs a file name"),
    ],
)
def test_refusals_name_the_file_and_line(folder: Path, bad: str, why_contains: str) -> None:
    error = refusal(folder, *PRELUDE, bad, "bsf-gamma")
    assert_refused_at(error, folder / "requirements.txt", 4)
    assert why_contains in error.why


@pytest.mark.parametrize(
    "option", ["--index-url https://x/simple", "--extra-index-url https://x/simple", "--find-links ./w", "--no-index"]
)
def test_index_options_point_at_pip_configuration(folder: Path, option: str) -> None:
    error = refusal(folder, option)
    assert_refused_at(error, folder / "requirements.txt", 1)
    assert "PIP_INDEX_URL" in error.why and "pip" in error.why
    assert option.split()[0] in error.why


def test_refusal_after_a_continuation_counts_physical_lines(folder: Path) -> None:
    error = refusal(folder, "bsf-alpha>=1, \\", "    <3", "", "colorama>=>1")
    assert_refused_at(error, folder / "requirements.txt", 4)
    assert "colorama>=>1" in error.why


def test_include_outside_the_repo_folder(folder: Path) -> None:
    write(folder.parent / "outside.txt", "bsf-gamma")
    error = refusal(folder, "bsf-alpha", "-r ../outside.txt")
    assert_refused_at(error, folder / "requirements.txt", 2)
    assert "outside the repo folder" in error.why and "../outside.txt" in error.why


def test_include_through_a_symlink_out_of_the_repo_folder(folder: Path) -> None:
    write(folder.parent / "outside.txt", "bsf-gamma")
    (folder / "inside.txt").symlink_to(folder.parent / "outside.txt")
    error = refusal(folder, "-r inside.txt")
    assert_refused_at(error, folder / "requirements.txt", 1)
    assert "outside the repo folder" in error.why


def test_include_of_a_url(folder: Path) -> None:
    error = refusal(folder, "bsf-alpha", "", "-r https://example.com/reqs.txt")
    assert_refused_at(error, folder / "requirements.txt", 3)


def test_include_of_a_missing_file(folder: Path) -> None:
    error = refusal(folder, "-c nothere.txt")
    assert_refused_at(error, folder / "requirements.txt", 1)
    assert "nothere.txt does not exist" in error.why


def test_include_cycle(folder: Path) -> None:
    write(folder / "other.txt", "bsf-gamma", "-r requirements.txt")
    error = refusal(folder, "bsf-alpha", "-r other.txt")
    assert_refused_at(error, folder / "other.txt", 2)
    assert "cycle" in error.why


def test_error_inside_an_included_file_names_that_file(folder: Path) -> None:
    write(folder / "other.txt", "# included", "", "--extra-index-url https://x/simple")
    error = refusal(folder, "bsf-alpha", "-r other.txt")
    assert_refused_at(error, folder / "other.txt", 3)


def test_duplicate_package_names_that_cannot_both_hold_name_both_lines(folder: Path) -> None:
    error = refusal(folder, "bsf-alpha<2", "# again:", "BSF_Alpha==2.0")
    assert_refused_at(error, folder / "requirements.txt", 3)
    assert "requirements.txt:1" in error.why  # the earlier line
    assert "bsf-alpha<2" in error.why and "no version satisfies both" in error.why


def test_duplicate_across_an_include(folder: Path) -> None:
    write(folder / "other.txt", "bsf-alpha==2.0")
    error = refusal(folder, "bsf-alpha==1.0", "-r other.txt")
    assert_refused_at(error, folder / "other.txt", 1)
    assert "requirements.txt:1" in error.why


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("kombu[msgpack]", "kombu[yaml]>=5"),  # celery's files, across -r
        ("tomli", 'tomli>=1.1.0; python_version < "3.11"'),  # mypy's
        ("bsf-alpha>=1", "BSF_Alpha==2.0"),
        ('bsf-alpha==1.0; python_version < "3.10"', "bsf-alpha==2.0"),  # the first is not in force here
    ],
)
def test_the_same_package_on_two_lines_is_merged_as_pip_merges_it(folder: Path, first: str, second: str) -> None:
    write(folder / "more.txt", second)
    desired = read_lines(folder, first, "-r more.txt")
    assert [str(line.requirement) for line in desired.requirements] == [
        str(Requirement(first)),
        str(Requirement(second)),
    ]


def test_a_constraint_may_repeat_a_requirement(folder: Path) -> None:
    write(folder / "constraints.txt", "bsf-alpha<2")
    desired = read_lines(folder, "bsf-alpha", "-c constraints.txt")
    assert [line.name for line in desired.constraints] == ["bsf-alpha"]


def test_not_utf8(folder: Path) -> None:
    path = folder / "requirements.txt"
    path.write_bytes(b"bsf-alpha\n\xff\xfe\n")
    with pytest.raises(RequirementsError) as info:
        read(path)
    assert str(info.value) == f"{path}: is not UTF-8 text"


# -- pip's reading, matched ----------------------------------------------------------------------


def test_a_utf8_bom_is_ignored(folder: Path) -> None:
    (folder / "other.txt").write_bytes(b"\xef\xbb\xbfbsf-gamma\n")
    path = folder / "requirements.txt"
    path.write_bytes(b"\xef\xbb\xbfbsf-alpha==1.0\n-r other.txt\n")
    desired = read(path)
    assert specs(desired) == {"bsf-alpha": "bsf-alpha==1.0", "bsf-gamma": "bsf-gamma"}
    assert [line.line for line in desired.requirements] == [1, 1]


def test_a_bom_before_an_option_is_ignored(folder: Path) -> None:
    path = folder / "requirements.txt"
    path.write_bytes(b"\xef\xbb\xbf--pre\nbsf-alpha\n")
    assert read(path).global_options == ["--pre"]


def test_diamond_includes_read_the_common_file_once(folder: Path) -> None:
    write(folder / "common.txt", "bsf-alpha>=1")
    write(folder / "a.txt", "-r common.txt", "bsf-gamma")
    write(folder / "b.txt", "-r ./common.txt", "bsf-beta")
    desired = read_lines(folder, "-r a.txt", "-r b.txt")
    assert [line.name for line in desired.requirements] == ["bsf-alpha", "bsf-gamma", "bsf-beta"]
    assert str(folder / "common.txt") in desired.inputs


def test_the_same_file_as_requirements_and_as_constraints_is_read_as_both(folder: Path) -> None:
    write(folder / "pins.txt", "bsf-alpha==1.0")
    desired = read_lines(folder, "-r pins.txt", "-c pins.txt")
    assert [line.name for line in desired.requirements] == ["bsf-alpha"]
    assert [line.name for line in desired.constraints] == ["bsf-alpha"]


def test_a_cycle_through_a_diamond_is_still_a_cycle(folder: Path) -> None:
    write(folder / "common.txt", "bsf-alpha", "-r a.txt")
    write(folder / "a.txt", "-r common.txt")
    error = refusal(folder, "-r a.txt")
    assert_refused_at(error, folder / "common.txt", 2)
    assert "cycle" in error.why


def test_same_package_under_exclusive_markers(folder: Path) -> None:
    desired = read_lines(
        folder, 'bsf-alpha==1.0; python_version < "3.10"', "bsf-gamma", 'BSF_Alpha==2.0; python_version >= "3.10"'
    )
    assert [line.name for line in desired.requirements] == ["bsf-alpha", "bsf-gamma", "bsf-alpha"]
    assert 'BSF_Alpha==2.0; python_version >= "3.10"' in desired.input_text()


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("bsf-alpha==1.0", 'bsf-alpha==2.0; python_version >= "3.10"'),  # both in force here
        ('bsf-alpha==1.0; python_version < "3.10"', "bsf-alpha==2.0; python_version<'3.10'"),  # the same marker
        ("bsf-alpha @ https://x.example/a-1.0-py3-none-any.whl", "bsf-alpha==1.0"),
    ],
)
def test_two_lines_that_cannot_both_hold_are_refused(folder: Path, first: str, second: str) -> None:
    with pytest.raises(RequirementsError) as info:
        read(write(folder / "requirements.txt", first, second), Policy(allow_direct_references=True))
    assert_refused_at(info.value, folder / "requirements.txt", 2)
    assert "requirements.txt:1" in info.value.why and "keep one of them" in info.value.why


def test_a_third_duplicate_names_the_line_it_clashes_with(folder: Path) -> None:
    error = refusal(
        folder, 'bsf-alpha==1.0; python_version < "3.10"', 'bsf-alpha==2.0; python_version >= "3.10"', "bsf-alpha<2"
    )
    assert_refused_at(error, folder / "requirements.txt", 3)
    assert "requirements.txt:2" in error.why  # the line in force here that it contradicts


@pytest.mark.parametrize(
    ("bad", "unexpected", "after"),
    [
        ("-r common.txt --index-url https://evil.example/simple", "--index-url", "-r common.txt"),
        ("-rcommon.txt --pre", "--pre", "-r common.txt"),
        ("--requirement=common.txt bsf-gamma", "bsf-gamma", "--requirement common.txt"),
        ("-c common.txt -r common.txt", "-r common.txt", "-c common.txt"),
        ("--only-binary :all: --pre", "--pre", "--only-binary :all:"),
        ("--only-binary=:all: bsf-gamma", "bsf-gamma", "--only-binary :all:"),
        ("--pre --foo", "--foo", "--pre"),
        ("--prefer-binary --index-url=https://evil.example/simple", "--index-url", "--prefer-binary"),
    ],
)
def test_extra_tokens_after_an_option_are_refused(folder: Path, bad: str, unexpected: str, after: str) -> None:
    write(folder / "common.txt", "bsf-gamma")
    error = refusal(folder, *PRELUDE, bad)
    assert_refused_at(error, folder / "requirements.txt", 4)
    assert f"unexpected {unexpected}" in error.why and f"after {after}" in error.why


def test_extra_tokens_are_shown_redacted(folder: Path) -> None:
    write(folder / "common.txt", "bsf-gamma")
    error = refusal(folder, "-r common.txt --extra-index-url https://bob:s3cret@evil.example/simple")
    assert "s3cret" not in str(error) and "bob" not in str(error)
    assert "unexpected --extra-index-url https://****@evil.example/simple after -r common.txt" in error.why


@pytest.mark.parametrize("bad", ["--pre=yes", "--require-hashes=1"])
def test_a_flag_takes_no_value(folder: Path, bad: str) -> None:
    error = refusal(folder, bad)
    assert_refused_at(error, folder / "requirements.txt", 1)
    assert "takes no value" in error.why


def test_only_binary_needs_a_value(folder: Path) -> None:
    error = refusal(folder, "--only-binary")
    assert_refused_at(error, folder / "requirements.txt", 1)
    assert "needs a value" in error.why


def test_a_chain_of_includes_too_deep_to_follow_is_one_line(folder: Path) -> None:
    depth = 400
    for number in range(depth):
        write(folder / f"r{number}.txt", f"-r r{number + 1}.txt")
    write(folder / f"r{depth}.txt", "bsf-alpha")
    write(folder / "requirements.txt", "-r r0.txt")
    error = refusal(folder, "-r r0.txt")
    assert "r99.txt would be file 101 of a chain of includes (at most 100); flatten them" in error.why
    assert error.path.name == "r98.txt" and error.line == 1


def test_a_deep_but_reasonable_chain_of_includes_is_read(folder: Path) -> None:
    for number in range(50):
        write(folder / f"r{number}.txt", f"-r r{number + 1}.txt")
    write(folder / "r50.txt", "bsf-alpha")
    assert [line.name for line in read_lines(folder, "-r r0.txt").requirements] == ["bsf-alpha"]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "utf-8-sig"])
def test_a_file_with_a_byte_order_mark_is_read_as_pip_reads_it(folder: Path, encoding: str) -> None:
    """PowerShell's `pip freeze > requirements.txt` writes UTF-16 with a BOM; pip reads it."""
    path = folder / "requirements.txt"
    text = "# café\nbsf-alpha==1.0\nbsf-beta\n"
    raw = text.encode(encoding)
    if encoding == "utf-16-be":
        raw = codecs.BOM_UTF16_BE + raw
    path.write_bytes(raw)
    assert [str(line.requirement) for line in read(path).requirements] == ["bsf-alpha==1.0", "bsf-beta"]


def test_a_coding_comment_in_the_first_two_lines_is_honoured(folder: Path) -> None:
    path = folder / "requirements.txt"
    path.write_bytes("#!/usr/bin/env pip\n# -*- coding: latin-1 -*-\n# Müller's set\nbsf-alpha\n".encode("latin-1"))
    assert [line.name for line in read(path).requirements] == ["bsf-alpha"]
    path.write_bytes(b"# -*- coding: no-such-codec -*-\nbsf-alpha\n")
    with pytest.raises(RequirementsError, match="declares the encoding 'no-such-codec'"):
        read(path)
    path.write_bytes(codecs.BOM_UTF16_LE + b"\x00\xd8")  # a lone surrogate: not UTF-16
    with pytest.raises(RequirementsError, match="is not utf-16-le text, as its byte-order mark says"):
        read(path)


def test_a_constraint_with_extras_is_refused_as_pip_refuses_it(folder: Path) -> None:
    write(folder / "constraints.txt", "bsf-alpha[cli,fast]==1.0")
    error = refusal(folder, "bsf-alpha", "-c constraints.txt")
    assert_refused_at(error, folder / "constraints.txt", 1)
    assert "a constraint cannot have extras ([cli,fast])" in error.why


def test_several_index_options_on_one_line_once_allowed(folder: Path) -> None:
    """As pip takes them: repeated on one line, continued over lines; a relative find-links folder is
    relative to the file that names it."""
    (folder / "sub" / "wheels").mkdir(parents=True)
    write(
        folder / "sub" / "more.txt",
        "--trusted-host=a.example --trusted-host b.example",
        "--extra-index-url https://a.example/simple \\",
        "    --extra-index-url https://b.example/simple",
        "-f ./wheels",
        "bsf-alpha",
    )
    path = write(folder / "requirements.txt", "-r sub/more.txt")
    desired = read(path, Policy(allow_index_options=True))
    assert desired.index_options == [
        "--trusted-host a.example",
        "--trusted-host b.example",
        "--extra-index-url https://a.example/simple",
        "--extra-index-url https://b.example/simple",
        "-f ./wheels",  # as written: what a committed lock records is the same in every checkout
    ]
    assert desired.index_resolved[-1] == f"-f {folder.resolve() / 'sub' / 'wheels'}"  # as pip is given it
    assert desired.pip_args()[-2:] == ["-f", str(folder.resolve() / "sub" / "wheels")]
    import shutil

    checkout = shutil.copytree(folder, folder.parent / "another-checkout")
    elsewhere = read(checkout / "requirements.txt", Policy(allow_index_options=True))
    assert elsewhere.input_sha256 == desired.input_sha256  # another checkout, the same input
    with pytest.raises(RequirementsError) as info:
        read(write(folder / "requirements.txt", "--trusted-host a.example --pre"), Policy(allow_index_options=True))
    assert "unexpected --pre after --trusted-host a.example; write it on a line of its own" in info.value.why


def test_a_relative_find_links_folder_must_be_there_and_inside_the_repo(folder: Path) -> None:
    allowed = Policy(allow_index_options=True)
    with pytest.raises(RequirementsError, match=r"\./nowhere does not exist beside requirements\.txt"):
        read(write(folder / "requirements.txt", "-f ./nowhere"), allowed)
    (folder.parent / "outside-wheels").mkdir()
    with pytest.raises(RequirementsError, match="BOOTSTRAP_ALLOW_OUTSIDE_INCLUDES"):
        read(write(folder / "requirements.txt", "-f ../outside-wheels"), allowed)
    both = Policy(allow_index_options=True, allow_outside_includes=True)
    assert read(write(folder / "requirements.txt", "-f ../outside-wheels"), both).index_options == [
        "-f ../outside-wheels"
    ]
