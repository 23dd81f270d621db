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
    from bootstrap.store.manifest import MANIFEST_KEYS

    text = README.read_text()
    for key in MANIFEST_KEYS:
        assert f"| `{key}` |" in text, f"manifest key {key} is not in the README's table"


def readme_row(key: str) -> str:
    row = next((line for line in README.read_text().splitlines() if line.startswith(f"| `{key}` |")), None)
    assert row is not None, f"no README row for {key}"
    return row


def test_every_lock_source_is_documented() -> None:
    from bootstrap.pipeline.lockfile import LOCK_SOURCES

    row = readme_row("lock_source")
    for value in (*LOCK_SOURCES, "rollback"):
        assert f'`"{value}"`' in row, f"lock_source {value!r} is not in the README's table"


def test_the_package_and_error_keys_are_the_ones_the_readme_gives() -> None:
    from bootstrap.store.manifest import ERROR_KEYS, PACKAGE_KEYS

    assert readme_row("packages").split("`")[3] == "[{" + ", ".join(f'"{key}"' for key in PACKAGE_KEYS) + "}]"
    assert readme_row("error").split("`")[5] == "{" + ", ".join(f'"{key}"' for key in ERROR_KEYS) + "}"


def test_the_readme_names_every_folder_of_the_package() -> None:
    text = README.read_text()
    package = README.parent / "bootstrap"
    for folder in sorted(path for path in package.iterdir() if (path / "__init__.py").is_file()):
        assert f"bootstrap/{folder.name}/" in text, f"the README's code map does not name bootstrap/{folder.name}/"
