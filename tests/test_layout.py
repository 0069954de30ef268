"""Imports run one way (README "Layout"): no module or package of bn_nerf imports one that imports it
back (bn_nerf.tasks imports bn_nerf.codec, never the reverse), and the plugin's sub-packages import
only those before them in the direction data flows.

Read from the source, every import statement counted, those inside functions and under
TYPE_CHECKING too: an import deferred to call time still runs back up."""

from __future__ import annotations

import ast
from pathlib import Path

import bn_nerf

ROOT = Path(bn_nerf.__file__).parent
# bn_nerf/nerf/'s sub-packages in the direction data flows; each may import only those before it.
PLUGIN_ORDER = ("data", "distributed", "model_components", "fields", "models", "engine")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Each bn_nerf module and the bn_nerf modules it imports."""
    modules = {module_name(path): path for path in ROOT.rglob("*.py")}

    def defining_module(name: str) -> str:
        while name not in modules:  # `from bn_nerf.x import y`: y a module of x, or a name in x
            name = name.rpartition(".")[0]
        return name

    graph = {}
    for name, path in modules.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
        graph[name] = {defining_module(target) for target in imported if target.split(".")[0] == "bn_nerf"} - {name}
    return graph


def package(module: str) -> str:
    """A module's concept: bn_nerf's sub-package or top module, and bn_nerf/nerf/'s likewise."""
    parts = module.split(".")
    return ".".join(parts[:3] if parts[1:2] == ["nerf"] else parts[:2])


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as the path around it, or None."""
    path: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> list[str] | None:
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        path.append(node)
        for neighbour in sorted(graph.get(node, ())):
            if found := visit(neighbour):
                return found
        path.pop()
        done.add(node)
        return None

    return next((found for node in sorted(graph) if (found := visit(node))), None)


def test_no_module_or_package_imports_one_that_imports_it_back():
    graph = imports()
    assert cycle(graph) is None
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        if module != "bn_nerf":  # the package itself, which every module sits in
            packages.setdefault(package(module), set()).update(package(target) for target in targets)
    for name, targets in packages.items():
        targets.discard(name)
    assert cycle(packages) is None  # tasks -> codec, say, and never codec -> tasks


def test_the_plugins_sub_packages_import_only_those_before_them():
    graph = imports()
    plugin_packages = {f"bn_nerf.nerf.{name}" for name in PLUGIN_ORDER}
    assert {package(module) for module in graph if module.startswith("bn_nerf.nerf.")} == plugin_packages | {
        "bn_nerf.nerf.method_configs", "bn_nerf.nerf.demo"}
    for rank, name in enumerate(PLUGIN_ORDER):
        allowed = {f"bn_nerf.nerf.{earlier}" for earlier in PLUGIN_ORDER[: rank + 1]}
        for module in graph:
            if package(module) == f"bn_nerf.nerf.{name}":
                upward = {target for target in graph[module] if target.startswith("bn_nerf.nerf.")
                          and package(target) not in allowed}
                assert not upward, f"{module} imports {sorted(upward)}, which come after it"
