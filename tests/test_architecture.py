"""The package's layering, checked on its source: imports point one way, modules stay small."""
import ast
from pathlib import Path

import botnet

PACKAGE = Path(botnet.__file__).parent
MAX_LINES = 300


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
    upward = ("botnet.detection", "botnet.classification", "botnet.engine", "botnet.loading", "botnet.export")
    offenders = [(name, i) for name, path in _modules() if name.startswith(("botnet.layers", "botnet.models"))
                 for i in _imports(path) if i.startswith(upward)]
    assert offenders == []


def test_no_module_over_the_size_limit():
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules()}
    assert {n: s for n, s in sizes.items() if s > MAX_LINES} == {}
