"""The package's imports follow its architecture: no import cycle, and no import that runs up the layers.

Every ``import`` and ``from ... import`` in every module is counted, including those inside functions and
under ``TYPE_CHECKING``: a lazy import that closes a cycle is still a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "sparsetopo"

# Bottom to top. A module may import modules of its own layer or of the layers below it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("version",),
    ("errors",),
    ("fileio", "system", "desc"),  # the run description's framework, identity and statuses
    ("topology",),  # pure maths
    ("nn",),
    ("models",),
    ("data",),
    ("challenge",),
    ("training",),
    ("pruning",),
    ("runs",),  # the registry of run kinds and the Python entry point
    ("experiments",),
    ("report",),
    ("cli", "__main__", "__init__"),  # the package's face: the CLI, and the names re-exported for users
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """The sparsetopo modules ``path`` imports (``from sparsetopo.x import y`` counts ``sparsetopo.x.y`` when
    that is a module, else ``sparsetopo.x``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("sparsetopo"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            if not base.startswith("sparsetopo"):
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in MODULES else base)
    return {m for m in found if m != here}


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {name: imports_of(path) for name, path in MODULES.items()}


def layer_of(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module}: its package {top!r} is in no layer; add it to LAYERS")


def test_every_module_is_in_a_layer() -> None:
    for module in MODULES:
        layer_of(module)


def test_no_import_runs_up_the_layers() -> None:
    upward = [f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
              for m, targets in GRAPH.items() for t in sorted(targets) if t in MODULES and layer_of(t) > layer_of(m)]
    assert not upward, "imports that run up the layers:\n" + "\n".join(upward)


def test_no_import_cycle() -> None:
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for t in sorted(GRAPH.get(m, ())):
            if t not in MODULES:
                continue
            if state.get(t) == 1:
                cycles.append(path[path.index(t):] + [t])
            elif t not in state:
                visit(t)
        path.pop()
        state[m] = 2

    for m in sorted(MODULES):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checker_sees_a_lazy_upward_import(tmp_path: Path) -> None:
    """The walk counts imports inside functions (the kind that used to hide cycles)."""
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    from sparsetopo.report import write_report\n    return write_report\n")
    global PACKAGE
    saved = PACKAGE
    try:
        PACKAGE = tmp_path
        assert "sparsetopo.report" in imports_of(source)
    finally:
        PACKAGE = saved
    assert layer_of("sparsetopo.report") > layer_of("sparsetopo.topology.core")  # so topology may not do that
