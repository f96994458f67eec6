"""The package's structure: no import cycles and no import that points up the layers, counting the imports inside
functions (a lazy import that hides a cycle is still one). docs/layout.md draws these layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "cnnbench"

# From the bottom up. A module may import modules of its own layer's package and of lower layers; packages that share
# a layer (prune and search) are peers and import neither each other.
LAYERS = [
    ["cnnbench", "cnnbench.core"],  # cnnbench itself: the package's face (__version__)
    ["cnnbench.data"],
    ["cnnbench.spec"],
    ["cnnbench.models"],
    ["cnnbench.engine"],
    ["cnnbench.runs"],
    ["cnnbench.evaluate"],
    ["cnnbench.prune", "cnnbench.search", "cnnbench.export"],
    ["cnnbench.report"],
    ["cnnbench.studies"],
    ["cnnbench.cli"],
    ["cnnbench.__main__"],
]


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every cnnbench module `name` imports, at module level or inside a function; `from X import Y` counts as an
    import of X.Y when that is a module (X's __init__ runs too, but it is X's own business what it imports)."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            submodules = {f"{base}.{alias.name}" for alias in node.names} & known
            found |= submodules or {base}
    return {module for module in found if module in known and module != name}


def layer_of(module: str) -> tuple[int, str]:
    """(layer index, the layer's package) of the longest layer package that contains `module`."""
    best = None
    for index, packages in enumerate(LAYERS):
        for package in packages:
            if (module == package or module.startswith(package + ".")) and (best is None or len(package) > len(best[1])):
                best = (index, package)
    assert best is not None, f"{module} belongs to no layer: add its package to LAYERS"
    return best


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(name, path, set(found)) for name, path in found.items()}


def test_every_import_points_down_the_layers():
    upward = []
    for module, targets in graph().items():
        level, package = layer_of(module)
        for target in targets:
            target_level, target_package = layer_of(target)
            if target_level > level or (target_level == level and target_package != package):
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that point up (or sideways) the layers:\n" + "\n".join(sorted(upward))


def test_there_is_no_import_cycle():
    edges = graph()
    cycles, state = [], {}  # state: 1 on the current path, 2 finished

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(edges[module]):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target) :] + [module, target]))
            elif target not in state:
                visit(target, [*path, module])
        state[module] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checks_see_lazy_imports_and_layers():
    """The walk itself: an import inside a function counts, and a core module importing the CLI would be refused."""
    tree = imports("cnnbench.runs.kinds", PACKAGE / "runs" / "kinds.py", set(modules()))
    assert "cnnbench.runs.pipeline" in tree
    assert layer_of("cnnbench.core.storage")[0] < layer_of("cnnbench.cli.train_cmd")[0]
    lazy = imports("cnnbench.cli.train_cmd", PACKAGE / "cli" / "train_cmd.py", set(modules()))
    assert "cnnbench.runs.kinds" in lazy  # imported inside the command function, for a fast --help
