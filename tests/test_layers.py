"""The package's folders are layers that import one way only, and the host side stays light.

Two guards, as pip-tools keeps one (``tests/test_circular_imports.py``) and
stricter: every module imports alone in a fresh interpreter, and every import
statement of the package (at the top, inside functions, under TYPE_CHECKING)
is parsed and checked against the layer order, for cycles, and for the
hand-offs to the slow path being marked as such.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.conftest import Repo, python_with_bootstrap

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "bootstrap"

# Bottom to top. A module may import modules of its own rank or below, never above.
LAYERS = {
    "bootstrap.errors": 0,
    "bootstrap.store": 1,
    "bootstrap.settings": 2,
    "bootstrap.inputs": 3,
    "bootstrap.tools": 4,
    # the remote cache (Azure Blob Storage): above the store and settings, below the pipeline that uses it
    "bootstrap.remote": 4.5,
    "bootstrap.pipeline": 5,
    "bootstrap.ops": 6,
    "bootstrap.host": 7,
    "bootstrap.cli": 8,
    "bootstrap.azure_functions": 8,  # the documented import path of the Azure host: a public entry point
    "bootstrap.__main__": 9,
    "bootstrap": 9,  # the public names
}
# Beyond the standard library the store layer (the fast path's) may use only these, and only here.
STORE_THIRD_PARTY = {"bootstrap.store.locks": {"filelock"}}
SLOW_PATH_MARK = "# slow path"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return LAYERS[prefix]
    raise AssertionError(f"{module} is in no layer: add its folder to LAYERS")


def resolve_target(module: str, node: ast.ImportFrom | ast.Import, alias: ast.alias) -> str:
    """The module an import names (``from bootstrap.store import manifest`` imports bootstrap.store.manifest)."""
    if isinstance(node, ast.Import):
        return alias.name
    base = node.module or ""
    if node.level:  # relative: not used in this package, but judge it right if it appears
        package = module.split(".")[: -node.level] if MODULES[module].name != "__init__.py" else module.split(".")
        base = ".".join([*package, base]) if base else ".".join(package)
    candidate = f"{base}.{alias.name}"
    return candidate if candidate in MODULES else base


class Import:
    def __init__(self, source: str, target: str, line: int, in_function: bool, text: str) -> None:
        self.source, self.target, self.line, self.in_function, self.text = source, target, line, in_function, text

    def __repr__(self) -> str:
        return f"{self.source}:{self.line} imports {self.target}"


def imports_of(module: str) -> list[Import]:
    path = MODULES[module]
    source = path.read_text()
    lines = source.splitlines()
    found: list[Import] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            if isinstance(child, ast.Import | ast.ImportFrom):
                text = " ".join(lines[child.lineno - 1 : (child.end_lineno or child.lineno)])
                for alias in child.names:
                    found.append(Import(module, resolve_target(module, child, alias), child.lineno, inside, text))
            visit(child, inside)

    visit(ast.parse(source), False)
    return found


ALL_IMPORTS = [item for module in MODULES for item in imports_of(module)]
INTERNAL = [item for item in ALL_IMPORTS if item.target == "bootstrap" or item.target.startswith("bootstrap.")]


def test_every_module_is_in_a_layer() -> None:
    for module in MODULES:
        layer_of(module)


def test_no_import_points_up_a_layer() -> None:
    upward = [
        f"{item} (layer {layer_of(item.source)} -> {layer_of(item.target)})"
        for item in INTERNAL
        if layer_of(item.target) > layer_of(item.source)
    ]
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_the_import_graph_has_no_cycle() -> None:
    graph: dict[str, set[str]] = {module: set() for module in MODULES}
    for item in INTERNAL:
        if item.target in MODULES and item.target != item.source:
            graph[item.source].add(item.target)
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                walk(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            walk(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_imports_inside_functions_are_marked_hand_offs_to_the_slow_path() -> None:
    unmarked = [repr(item) for item in INTERNAL if item.in_function and SLOW_PATH_MARK not in item.text]
    assert not unmarked, f"imports inside functions without `{SLOW_PATH_MARK}`:\n" + "\n".join(unmarked)


def test_the_layer_packages_themselves_import_nothing() -> None:
    """``bootstrap.store`` and the other folders are only their docstring: importing one costs nothing."""
    for module, path in MODULES.items():
        if path.name == "__init__.py" and module != "bootstrap" and module != "bootstrap.tools.backends":
            assert not imports_of(module) or all(item.target == "__future__" for item in imports_of(module)), module


def test_the_store_layer_uses_the_standard_library_only() -> None:
    outside = []
    for item in ALL_IMPORTS:
        if not item.source.startswith("bootstrap.store") and item.source != "bootstrap.errors":
            continue
        top = item.target.split(".")[0]
        if top in ("bootstrap", "__future__") or top in sys.stdlib_module_names:
            continue
        if top not in STORE_THIRD_PARTY.get(item.source, set()):
            outside.append(repr(item))
    assert not outside, "the store layer reaches beyond the standard library:\n" + "\n".join(outside)


def test_nothing_imports_the_cli() -> None:
    assert not [item for item in INTERNAL if item.target == "bootstrap.cli" and item.source != "bootstrap.__main__"]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_module_imports_alone_in_a_fresh_interpreter(module: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", f"import {module}"], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert proc.returncode == 0, proc.stderr


# The host side: what start-up loads into the host process.

HEAVY = ("pydantic", "pydantic_settings", "packaging", "watchdog", "piptools", "pip", "filelock", "uv")
# The bootstrap modules a host may load without a sync: the store layer, and the host's light parts.
HOST_SIDE = (
    "bootstrap",
    "bootstrap.host",
    "bootstrap.store",
    "bootstrap.store.*",
    "bootstrap.host.startup",
    "bootstrap.host.boot",
    "bootstrap.host.activation",
    "bootstrap.host.state",
)


def outside(modules: list[str], allowed: tuple[str, ...]) -> list[str]:
    """The modules no entry of ``allowed`` names (``pkg.*``: anything in pkg, never pkg itself or a sibling)."""

    def named(module: str, entry: str) -> bool:
        return module.startswith(entry[:-1]) if entry.endswith(".*") else module == entry

    return [module for module in modules if not any(named(module, entry) for entry in allowed)]


def loaded_by(code: str) -> tuple[list[str], list[str]]:
    """(non-standard-library modules, bootstrap modules) a fresh interpreter loads to run ``code``."""
    probe = textwrap.dedent(
        f"""
        import json, sys
        before = set(sys.modules)
        {code}
        new = sorted(set(sys.modules) - before)
        print(json.dumps(new))
        """
    )
    proc = python_with_bootstrap(probe)
    assert proc.returncode == 0, proc.stderr
    new = json.loads(proc.stdout.splitlines()[-1])
    ours = [name for name in new if name == "bootstrap" or name.startswith("bootstrap.")]
    others = [name for name in new if name not in ours and name.split(".")[0] not in sys.stdlib_module_names]
    return others, ours


def synced(repo: Repo) -> None:
    from bootstrap.pipeline.sync import sync

    repo.write("bsf-alpha")
    sync(repo.settings())


def test_startup_and_activate_load_the_standard_library_and_the_store_layer_only(repo: Repo) -> None:
    synced(repo)
    for code in ("import bootstrap; bootstrap.startup()", "import bootstrap; bootstrap.activate()"):
        others, ours = loaded_by(code)
        assert others == [], (code, others)
        assert outside(ours, HOST_SIDE) == [], (code, ours)
        assert "bootstrap.host.startup" in ours  # the probe saw the start-up run at all


def test_startup_without_blocking_loads_nothing_heavy(repo: Repo) -> None:
    synced(repo)
    others, ours = loaded_by("import bootstrap; bootstrap.startup(block=False); bootstrap.stop()")
    assert others == [], others
    light = (
        "bootstrap.errors",
        "bootstrap.host.live",
        "bootstrap.host.child",
        "bootstrap.tools",
        "bootstrap.tools.runner",
    )
    assert outside(ours, (*HOST_SIDE, *light)) == [], ours
    assert "bootstrap.host.live" in ours


# Records which thread first imported each heavy package (a finder that never finds anything itself).
THREAD_PROBE = """
import json, sys, threading
HEAVY = {heavy!r}
seen = {{}}
class Probe:
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in HEAVY and top not in seen:
            seen[top] = threading.current_thread().name
        return None
sys.meta_path.insert(0, Probe())
import bootstrap
{code}
print(json.dumps(seen))
"""


def heavy_imports_by_thread(code: str) -> dict[str, str]:
    proc = python_with_bootstrap(THREAD_PROBE.format(heavy=HEAVY, code=code))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])  # type: ignore[no-any-return]


# The host imports none of bootstrap's tools in any thread: its syncs and its watcher are child processes
# (bootstrap.host.child), since a generation may hold a user's own version of them.


def test_a_watching_host_imports_none_of_the_heavy_parts_in_any_thread(repo: Repo) -> None:
    synced(repo)
    code = (
        "from bootstrap.host import state\nbootstrap.startup(watch=True, raise_errors=True)\n"
        "watcher = state.current().watcher\nassert watcher.ready.is_set() and watcher.failure is None\n"
        "bootstrap.stop()"
    )
    assert heavy_imports_by_thread(code) == {}


def test_a_host_syncing_in_the_background_imports_none_of_the_heavy_parts_in_any_thread(repo: Repo) -> None:
    synced(repo)
    repo.write("bsf-alpha", "bsf-gamma")  # a sync is needed: it must run in the background
    seen = heavy_imports_by_thread("bootstrap.startup(block=False)\nassert bootstrap.wait_until_synced(120)")
    assert seen == {}
    assert "bsf-gamma" in repo.installed()  # the sync ran, in a child


# Functions stay short enough to read; a longer one says why in its docstring.

MAX_LINES = 60
LONG_REASON = "Long because"


def test_no_function_is_longer_than_sixty_lines_without_a_reason() -> None:
    long = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_LINES and LONG_REASON not in (ast.get_docstring(node) or ""):
                    long.append(f"{module}.{node.name}: {length} lines")
    assert not long, f"functions over {MAX_LINES} lines without `{LONG_REASON} ...` in their docstring:\n" + "\n".join(
        long
    )


def test_the_distribution_ships_every_folder_of_the_package() -> None:
    """An installed ``bootstrap-packages`` (not the editable one the tests use) has every layer.

    setuptools' package finder keeps the packages its ``include`` patterns match (fnmatch), as here; it is
    not imported in the test process (its distutils shim refuses to load once distutils is loaded).
    """
    import fnmatch
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    folders = {module for module, path in MODULES.items() if path.name == "__init__.py"}
    shipped = {name for name in folders if any(fnmatch.fnmatchcase(name, pattern) for pattern in config["include"])}
    assert folders == shipped, f"not in the distribution: {sorted(folders - shipped)}"


def test_the_host_side_check_refuses_what_it_does_not_name() -> None:
    """The check above can fail: a module of another layer, or a look-alike name, is outside."""
    assert outside(["bootstrap.pipeline.sync", "bootstrapx", "bootstrap.storex", "bootstrap.tools"], HOST_SIDE) == [
        "bootstrap.pipeline.sync",
        "bootstrapx",
        "bootstrap.storex",
        "bootstrap.tools",
    ]
    assert outside(["bootstrap.store.manifest", "bootstrap.host.boot"], HOST_SIDE) == []
