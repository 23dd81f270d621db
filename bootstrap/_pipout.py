"""Reading pip's and pip-compile's output: which index was asked, what the error was.

Credentials in index URLs (``https://user:secret@host``) never leave this
module in clear: everything it returns is redacted.
"""

from __future__ import annotations

import os
import re

# Userinfo is everything between "scheme://" and the LAST "@" before the host part ends (the first "/" or
# blank): pip takes an unencoded "@" in a password (https://bob:p@ss@host), so stopping at the first "@" would
# leak the rest. The greedy run backtracks to that last "@"; an "@" after the first "/" is path, not userinfo.
_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s]*@")


def redact(text: str) -> str:
    """Hide credentials in URLs (``https://user:secret@host`` becomes ``https://****@host``)."""
    return _CREDENTIALS.sub(lambda m: f"{m.group('scheme')}****@", text)


def indexes(output: str) -> str:
    """Where pip looked, from its own output (``Using indexes:``, ``Looking in indexes:``), redacted."""
    lines = output.splitlines()
    found: list[str] = []
    for number, line in enumerate(lines):
        stripped = line.strip()
        if stripped == "Using indexes:":  # pip-compile --verbose
            for following in lines[number + 1 :]:
                if not following.startswith("  ") or not following.strip():
                    break
                found.append(following.strip())
        elif stripped.startswith("Looking in indexes:"):  # pip install
            found.extend(part.strip() for part in stripped.split(":", 1)[1].split(","))
    places = []
    if found:
        places.append("index " + ", ".join(dict.fromkeys(redact(url) for url in found)))
    find_links = os.environ.get("PIP_FIND_LINKS")
    if find_links:
        places.append(f"find-links {redact(find_links)}")
    if not places:
        return "the configured package index"
    return " and ".join(places) + (" (no package index)" if not found and os.environ.get("PIP_NO_INDEX") else "")


def last_error(output: str) -> str:
    """pip's own last ``ERROR:`` line, or else the last unindented line (a traceback's summary)."""
    for line in reversed(output.splitlines()):
        stripped = line.strip()
        if stripped.startswith("ERROR:"):
            return redact(stripped[len("ERROR:") :].strip())
    for line in reversed(output.splitlines()):
        if line.strip() and not line.startswith(" "):
            return redact(line.strip())
    return "unknown error"


def uv_error(output: str) -> str:
    """uv's ``error:`` line and the ``Caused by:`` chain under it, as one line, redacted."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for number, line in enumerate(lines):
        if not line.lower().startswith("error:"):
            continue
        parts = [line[len("error:") :].strip()]
        for following in lines[number + 1 :]:
            lowered = following.lower()
            if lowered.startswith("error:"):
                break
            if lowered.startswith(("caused by:", "cause:")):
                parts.append(following.split(":", 1)[1].strip())
            elif not lowered.startswith("hint:"):
                parts[-1] = f"{parts[-1]} {following}"
        return redact(": ".join(parts))
    return last_error(output)


def uv_places() -> str:
    """Where uv was told to look (the same words as for pip), redacted."""
    places = []
    index = os.environ.get("UV_INDEX_URL") or os.environ.get("PIP_INDEX_URL")
    if os.environ.get("PIP_NO_INDEX", "").lower() not in ("1", "true", "yes", "on"):
        places.append(f"index {redact(index or 'https://pypi.org/simple')}")
    links = os.environ.get("UV_FIND_LINKS") or os.environ.get("PIP_FIND_LINKS")
    if links:
        places.append(f"find-links {redact(links)}")
    return " and ".join(places) or "the configured package index"
