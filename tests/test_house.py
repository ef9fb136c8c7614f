"""The plan of the house, checked on the code: layers import one way (cli -> stages -> data ->
pipeline), no module imports itself back through others, setup.cfg installs every folder, and
functions and files stay small. The import graph is read from the source (every ``import`` and
``from ... import`` of a ``tiekd`` module, lazy ones included), nothing is run."""

import ast
import configparser

import pytest
from support.paths import REPOSITORY, SETUP_CFG

LAYERS = ("cli", "stages", "data", "pipeline")
"""From the top down: a module imports only modules of its own layer or below."""
MAX_FUNCTION_LINES = 40
MAX_FILE_LINES = 400


def package_files() -> list:
    """Every .py file of the package (the checkout minus tests/ and bench/)."""
    return sorted(
        path
        for path in REPOSITORY.rglob("*.py")
        if path.relative_to(REPOSITORY).parts[0] not in ("tests", "bench", ".git", "build")
    )


def module_name(path) -> str:
    parts = path.relative_to(REPOSITORY).with_suffix("").parts
    return ".".join(("tiekd", *parts)).removesuffix(".__init__")


def imported_modules(path, modules: set[str]) -> set[str]:
    """The tiekd modules a file imports (``from tiekd.x import y`` counts y where y is a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("tiekd.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tiekd"):
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & modules
            found |= submodules or {node.module}
    return found & modules


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    files = package_files()
    modules = {module_name(path) for path in files}
    return {module_name(path): imported_modules(path, modules) for path in files}


def layer(module: str) -> int | None:
    """Index of the module's layer in LAYERS (cli_cache and cli_options belong to cli)."""
    first = module.split(".")[1] if "." in module else ""
    first = "cli" if first.startswith("cli") else first
    return LAYERS.index(first) if first in LAYERS else None


def test_layers_import_one_way(graph):
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in graph.items()
        for target in targets
        if layer(module) is not None and layer(target) is not None and layer(target) < layer(module)
    )
    assert upward == []


def test_no_import_cycle(graph):
    """Depth-first search for a back edge; the first cycle found is named in full."""
    state, stack = {}, []

    def visit(module):
        state[module] = "open"
        stack.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                pytest.fail("import cycle: " + " -> ".join(stack[stack.index(target) :] + [target]))
            if target not in state:
                visit(target)
        stack.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)


def test_setup_cfg_installs_every_folder():
    config = configparser.ConfigParser()
    config.read(SETUP_CFG)
    listed = set(config["options"]["packages"].split())
    folders = {module_name(path) for path in package_files() if path.name == "__init__.py"}
    assert listed == folders


def test_functions_and_files_stay_small():
    long_functions, long_files = [], []
    for path in package_files():
        text = path.read_text()
        if len(text.splitlines()) >= MAX_FILE_LINES:
            long_files.append(str(path.relative_to(REPOSITORY)))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:  # def line to last line
                    long_functions.append(f"{path.relative_to(REPOSITORY)}:{node.lineno} {node.name}")
    long_files += [
        str(path.relative_to(REPOSITORY))
        for path in (REPOSITORY / "tests").rglob("*.py")
        if len(path.read_text().splitlines()) >= MAX_FILE_LINES
    ]
    assert (long_functions, long_files) == ([], [])
