"""The README's examples run, so they cannot rot."""

from __future__ import annotations

import re
from pathlib import Path

from bootstrap.settings import Settings
from tests.conftest import Repo, python_with_bootstrap

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_the_host_wiring_example_runs(repo: Repo) -> None:
    blocks = python_blocks()
    assert blocks, "the README shows how to wire bootstrap.startup() into a host"
    repo.write("bsf-alpha==1.0")
    for block in blocks:
        proc = python_with_bootstrap(block + "\nimport bsf_alpha\nprint(manifest['status'], bsf_alpha.__version__)\n")
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == ["ok", "1.0"]


def test_every_setting_is_documented() -> None:
    text = README.read_text()
    for name in Settings.model_fields:
        assert f"BOOTSTRAP_{name.upper()}" in text, f"BOOTSTRAP_{name.upper()} is not in the README"


def test_every_manifest_key_is_documented() -> None:
    from bootstrap.manifest import MANIFEST_KEYS

    text = README.read_text()
    for key in MANIFEST_KEYS:
        assert f"| `{key}` |" in text, f"manifest key {key} is not in the README's table"
