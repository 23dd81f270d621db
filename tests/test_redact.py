"""``_pipout.redact``: credentials in URLs never reach a message, a log line or the manifest."""

from __future__ import annotations

import pytest

from bootstrap.errors import redact
from bootstrap.tools.pipout import indexes, last_error


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://bob:secret@127.0.0.1:9/wheels/", "https://****@127.0.0.1:9/wheels/"),
        ("https://token@pypi.example/simple", "https://****@pypi.example/simple"),
        # pip takes an unencoded @ in a password: everything up to the last @ before the host is userinfo
        ("https://bob:p@ssw0rd@127.0.0.1:9/wheels/", "https://****@127.0.0.1:9/wheels/"),
        ("https://bob:a@b@c@host", "https://****@host"),
        ("https://bob:p%40ss@host/simple", "https://****@host/simple"),
        ("git+https://bob:p@ss@github.com/org/repo.git", "git+https://****@github.com/org/repo.git"),
        # no userinfo: an @ in the path or after it is not a credential
        ("https://host/x@y", "https://host/x@y"),
        ("https://host/packages/pkg@1.0/file.whl", "https://host/packages/pkg@1.0/file.whl"),
        ("https://pypi.example/simple", "https://pypi.example/simple"),
        ("mail bob@example.com about it", "mail bob@example.com about it"),
        ("", ""),
        # Azure Storage: a connection string's account key and SAS, a SAS token's signature in a URL
        (
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=Eby8vdM0+/K1S==;EndpointSuffix=core.windows.net",
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=****;EndpointSuffix=core.windows.net",
        ),
        (
            "BlobEndpoint=https://a.blob;SharedAccessSignature=sv=2022&sig=abc%2B",
            "BlobEndpoint=https://a.blob;SharedAccessSignature=****",
        ),
        (
            "https://a.blob.core.windows.net/c/b?sv=2022-11-02&se=2030&sig=AbC%2Bd%3D&sp=r",
            "https://a.blob.core.windows.net/c/b?sv=2022-11-02&se=2030&sig=****&sp=r",
        ),
        ("accountkey='s3cret' in a message", "accountkey=**** in a message"),
    ],
)
def test_one_url(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_several_urls_in_one_text() -> None:
    text = (
        "Looking in indexes: https://bob:p@ssw0rd@idx.example/simple, https://mirror.example/simple,"
        " http://tok@other.example:8080/x@y\n"
        "ERROR: could not fetch https://alice:s3cr@t@files.example/pkg.whl (see https://host/a@b)"
    )
    result = redact(text)
    for secret in ("bob", "ssw0rd", "p@ss", "tok@", "alice", "s3cr"):
        assert secret not in result
    assert result == (
        "Looking in indexes: https://****@idx.example/simple, https://mirror.example/simple,"
        " http://****@other.example:8080/x@y\n"
        "ERROR: could not fetch https://****@files.example/pkg.whl (see https://host/a@b)"
    )


def test_a_url_without_a_path_at_the_end_of_a_sentence() -> None:
    assert redact("cannot reach https://bob:p@ss@host; check it") == "cannot reach https://****@host; check it"


def test_indexes_and_last_error_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_FIND_LINKS", "https://bob:p@ssw0rd@links.example/wheels/")
    output = "Looking in indexes: https://bob:p@ssw0rd@idx.example/simple\nERROR: 401 for https://bob:p@ssw0rd@idx.example/simple/x/"
    where = indexes(output)
    assert "ssw0rd" not in where and "bob" not in where
    assert where == "index https://****@idx.example/simple and find-links https://****@links.example/wheels/"
    assert last_error(output) == "401 for https://****@idx.example/simple/x/"
