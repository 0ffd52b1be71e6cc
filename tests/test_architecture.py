"""The package's layering, checked on its source: imports point one way, modules stay small."""
import ast
import re
from pathlib import Path

import botnet

PACKAGE = Path(botnet.__file__).parent
MAX_LINES = 300
#: the layer table: its row order is the one layer order, its modules column places every module
LAYOUT_DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(("botnet",) + path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
        yield name, path


def _imports(path: Path) -> set[str]:
    # every import, also those inside functions (lazy imports are imports too)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_nothing_inside_the_package_imports_the_api_facade():
    offenders = [name for name, path in _modules()
                 if name not in ("botnet", "botnet.api") and not name.startswith("botnet.cli")
                 and any(i == "botnet.api" or i.startswith("botnet.api.") for i in _imports(path))]
    assert offenders == []


def test_the_library_never_imports_the_command_line():
    offenders = [name for name, path in _modules() if not name.startswith(("botnet.cli", "botnet.__main__"))
                 and any(i == "botnet.cli" or i.startswith("botnet.cli.") for i in _imports(path))]
    assert offenders == []


def test_layers_and_models_do_not_reach_up():
    # position encoding -> attention -> block -> backbone: the building blocks know no task
    upward = ("botnet.detection", "botnet.classification", "botnet.engine", "botnet.weights", "botnet.tasks",
              "botnet.export")
    offenders = [(name, i) for name, path in _modules() if name.startswith(("botnet.layers", "botnet.models"))
                 for i in _imports(path) if i.startswith(upward)]
    assert offenders == []


def test_no_module_over_the_size_limit():
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules()}
    assert {n: s for n, s in sizes.items() if s > MAX_LINES} == {}


def _layers() -> list[tuple[str, list[str], str]]:
    """(layer, path specs, row text) for each row of the layer table, bottom first."""
    rows = []
    for line in LAYOUT_DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[1].startswith("`botnet/"):
            rows.append((cells[0], re.findall(r"`(botnet/[^`]*)`", cells[1]), line))
    return rows


def _runtime_imports(path: Path) -> set[str]:
    # every import executed at some point (inside functions too); those for type checking only aside
    found: set[str] = set()

    def visit(node):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return found


def _graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (a name imported from a module counts as that module)."""
    modules = dict(_modules())

    def owner(name: str) -> str:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name

    return {name: {owner(i) for i in _runtime_imports(path) if i.startswith("botnet")} - {name, ""}
            for name, path in modules.items()}


def _layer_of() -> dict[str, int]:
    placed: dict[str, list[int]] = {}
    for name, path in _modules():
        rel = "botnet/" + path.relative_to(PACKAGE).as_posix()
        for index, (_, specs, _) in enumerate(_layers()):
            if any(rel == spec or (spec.endswith("/") and rel.startswith(spec)) for spec in specs):
                placed.setdefault(name, []).append(index)
    return {name: rows[0] for name, rows in placed.items() if len(rows) == 1}


def test_every_module_sits_in_one_layer_and_is_named_there():
    rows = _layers()
    assert len(rows) >= 8, "the layer table of docs/architecture.md was not found"
    layer_of = _layer_of()
    assert sorted(name for name, _ in _modules() if name not in layer_of) == []
    unnamed = [name for name, path in _modules() if path.name != "__init__.py"
               and f"{path.name}`" not in rows[layer_of[name]][2] and f"/{path.name}`" not in rows[layer_of[name]][2]]
    assert unnamed == []


def test_the_import_graph_is_acyclic():
    graph, state, cycles = _graph(), {}, []

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(trail[trail.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_imports_point_up_the_layer_order():
    layer_of, names = _layer_of(), [row[0] for row in _layers()]
    downward = [f"{name} ({names[layer_of[name]]}) imports {dep} ({names[layer_of[dep]]})"
                for name, deps in _graph().items() for dep in sorted(deps) if layer_of[dep] > layer_of[name]]
    assert downward == []
