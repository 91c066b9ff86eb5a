"""The package's import graph (imports inside functions included): no circle between modules or
between subpackages, every import goes down the layers below, and nothing the product runs imports
the training or converter code. Read from the source with ``ast``, so it needs no model or video."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "deid_edit"

# Bottom to top: a module may import only from its own layer or below. Within a layer imports must
# not form a circle (checked separately). The first matching prefix names a module's layer.
LAYERS: tuple[tuple[str, ...], ...] = (
    (
        "deid_edit._version",
        "deid_edit.errors",
        "deid_edit.types",
        "deid_edit.progress",
        "deid_edit.geometry",
        "deid_edit.timefmt",
        "deid_edit.sidecars",
    ),
    ("deid_edit.models", "deid_edit.config", "deid_edit.io", "deid_edit.nets"),
    ("deid_edit.backend",),
    ("deid_edit.detect", "deid_edit.embed", "deid_edit.shots", "deid_edit.track", "deid_edit.smooth", "deid_edit.plan"),
    ("deid_edit.identities", "deid_edit.render", "deid_edit.coverage", "deid_edit.sample"),
    ("deid_edit.pipeline", "deid_edit.faces"),
    ("deid_edit.photo", "deid_edit.otio", "deid_edit.audit"),
    ("deid_edit.folder_batch", "deid_edit.generator", "deid_edit.convert"),
    ("deid_edit.cluster",),  # batch on Ray: folder_batch's per-file routine as Ray tasks
    ("deid_edit.cli", "deid_edit.__main__", "deid_edit"),
)
# what the product runs (run, analyze, render, batch, faces, audit, photos, OTIO): never the training or converters
RUNTIME = (
    "deid_edit.nets", "deid_edit.backend", "deid_edit.detect", "deid_edit.embed", "deid_edit.render", "deid_edit.pipeline",
    "deid_edit.photo", "deid_edit.folder_batch", "deid_edit.cluster", "deid_edit.faces", "deid_edit.audit", "deid_edit.otio",
    "deid_edit.identities",
    "deid_edit.cli.common", "deid_edit.cli.product",
)  # fmt: skip
OFFLINE = ("deid_edit.generator", "deid_edit.convert")


def _modules() -> dict[str, Path]:
    mods = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def _runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, in functions too, except those under ``if TYPE_CHECKING:`` (never run)."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _targets(module: str, is_package: bool, node: ast.Import | ast.ImportFrom, mods: dict[str, Path]) -> set[str]:
    """The project modules an import statement runs (with the packages on their way)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        here = module.split(".") if is_package else module.split(".")[:-1]
        base = here[: len(here) - (node.level - 1)] if node.level else []
        stem = ".".join(base + ([node.module] if node.module else []))
        names = [stem] + [f"{stem}.{a.name}" for a in node.names]
    found: set[str] = set()
    for name in names:
        parts = name.split(".")
        while parts and ".".join(parts) not in mods:
            parts.pop()
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
            found.add(".".join(parts[:i]))
    return found


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in mods.items():
        edges: set[str] = set()
        for node in _runtime_imports(ast.parse(path.read_text())):
            edges |= _targets(module, path.name == "__init__.py", node, mods)
        # a module's own package (and those above it) are being imported already when it runs
        graph[module] = {t for t in edges if t != module and not module.startswith(t + ".")}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in graph:
                    continue
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def _group(module: str) -> str:
    """The subpackage a module belongs to (``deid_edit.io.decode`` -> ``deid_edit.io``), or itself."""
    parts = module.split(".")
    return ".".join(parts[:2])


def _layer(module: str) -> int:
    for i, prefixes in enumerate(LAYERS):
        if (
            any(module == p or module.startswith(p + ".") for p in prefixes if p != "deid_edit")
            or module == "deid_edit"
            and "deid_edit" in prefixes
        ):
            return i
    raise AssertionError(f"{module} has no layer in tests/test_imports.py LAYERS; add it where it belongs")


def test_no_import_circle_between_modules() -> None:
    assert _cycles(import_graph()) == []


def test_no_import_circle_between_subpackages() -> None:
    graph = import_graph()
    groups: dict[str, set[str]] = {}
    for module, targets in graph.items():
        groups.setdefault(_group(module), set()).update(_group(t) for t in targets if _group(t) != _group(module))
    assert _cycles(groups) == []


def test_every_import_goes_down_the_layers() -> None:
    upward = sorted((module, target) for module, targets in import_graph().items() for target in targets if _layer(target) > _layer(module))
    assert upward == []


def test_what_the_product_runs_never_imports_training_or_converters() -> None:
    graph = import_graph()
    bad = sorted(
        (m, t)
        for m, targets in graph.items()
        for t in targets
        if any(m == r or m.startswith(r + ".") for r in RUNTIME) and any(t == o or t.startswith(o + ".") for o in OFFLINE)
    )
    assert bad == []


def test_the_checker_sees_a_circle() -> None:
    """The checker itself: a made-up graph with a circle and one without."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
