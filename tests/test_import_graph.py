"""The import graph of the geometry package: acyclic, no lazy imports, layers point downward.

Every ``.py`` file under geometry/ is parsed with :mod:`ast` (nothing is imported).  Every
import statement anywhere in a file counts -- module level, inside functions, classes,
``if TYPE_CHECKING:`` blocks -- and so does ``importlib.import_module("...")`` /
``__import__("...")`` with a literal name.  Relative imports are resolved against the
importing module's package (``from . import x``, ``from .x import y``, ``from .. import z``);
``from pkg import name`` counts as an import of the submodule ``pkg.name`` when that file
exists, else of ``pkg`` itself.
"""

from __future__ import annotations

import ast
import dataclasses
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "geometry"
SRC = f"{PACKAGE}._src"

#: bottom to top; a tuple is one layer whose members must not import each other
LAYERS = [("mathns", "quadrature"), "families", "fisher", "linalg", "tensors", "routes", "mapping", "tiers",
          ("ddouble", "highprec"), ("engine", "store", "processes"), ("api", "sweep", "geodesics")]
LAYER_OF = {name: i for i, entry in enumerate(LAYERS) for name in ((entry,) if isinstance(entry, str) else entry)}


@dataclasses.dataclass(frozen=True)
class Edge:
    src: str  # importing module
    dst: str  # imported geometry module
    path: str  # file of src, relative to the repo
    line: int
    text: str  # the import statement as written
    in_function: bool


def module_name(path: pathlib.Path, root: pathlib.Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def discover(root: pathlib.Path = ROOT) -> dict[str, pathlib.Path]:
    return {module_name(p, root): p for p in sorted((root / PACKAGE).rglob("*.py"))}


def _package_of(mod: str, path: pathlib.Path) -> str:
    return mod if path.name == "__init__.py" else mod.rpartition(".")[0]


def _resolve_from(mod: str, path: pathlib.Path, node: ast.ImportFrom, modules) -> list[str]:
    if node.level:
        base = _package_of(mod, path).split(".")
        if node.level > 1:
            base = base[: len(base) - (node.level - 1)]
        base = ".".join(base)
        target = f"{base}.{node.module}" if node.module else base
    else:
        target = node.module or ""
    out = []
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        if sub in modules:
            out.append(sub)
        elif target in modules or _is_namespace(target, modules):
            out.append(target)
    return out


def _is_namespace(name: str, modules) -> bool:
    """A directory without __init__.py (``geometry._src`` here) is a namespace package."""
    return any(m.startswith(name + ".") for m in modules)


def _in_package(name: str) -> bool:
    return name == PACKAGE or name.startswith(PACKAGE + ".")


class _Visitor(ast.NodeVisitor):
    def __init__(self, mod, path, modules, source, root):
        self.mod, self.path, self.modules, self.source, self.root = mod, path, modules, source, root
        self.depth = 0
        self.edges: list[Edge] = []

    def _add(self, node, targets):
        text = ast.get_source_segment(self.source, node) or ast.dump(node)
        for t in targets:
            if _in_package(t) and t != self.mod:
                self.edges.append(Edge(self.mod, t, str(self.path.relative_to(self.root)), node.lineno, text, self.depth > 0))

    def _function(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_Import(self, node):
        targets = []
        for alias in node.names:
            name = alias.name
            # ``import a.b.c`` binds/executes a, a.b and a.b.c
            parts = name.split(".")
            targets += [".".join(parts[: i + 1]) for i in range(len(parts))]
        self._add(node, [t for t in targets if t in self.modules or _is_namespace(t, self.modules)])

    def visit_ImportFrom(self, node):
        self._add(node, _resolve_from(self.mod, self.path, node, self.modules))

    def visit_Call(self, node):
        fn = node.func
        name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
        if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            target = node.args[0].value
            if target.startswith("."):  # importlib.import_module(".x", package=__package__)
                target = _package_of(self.mod, self.path) + target
            self._add(node, [target])
        self.generic_visit(node)


def edges(modules=None, root: pathlib.Path = ROOT) -> list[Edge]:
    modules = modules or discover(root)
    out = []
    for mod, path in modules.items():
        source = path.read_text()
        v = _Visitor(mod, path, modules, source, root)
        v.visit(ast.parse(source, filename=str(path)))
        out += v.edges
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]``, or None (iterative DFS, white/grey/black)."""
    colour = {n: 0 for n in graph}
    for start in sorted(graph):
        if colour[start]:
            continue
        stack = [(start, iter(sorted(graph[start])))]
        path = [start]
        colour[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                colour[node] = 2
                stack.pop()
                path.pop()
                continue
            if colour.get(nxt, 0) == 1:
                return path[path.index(nxt):] + [nxt]
            if colour.get(nxt, 0) == 0:
                colour[nxt] = 1
                path.append(nxt)
                stack.append((nxt, iter(sorted(graph.get(nxt, ())))))
    return None


def _describe(e: Edge) -> str:
    return f"{e.path}:{e.line}: {e.text!r} ({e.src} -> {e.dst})"


# --------------------------------------------------------------------------- the tests


MODULES = discover()
EDGES = edges(MODULES)


def test_the_scan_sees_the_package():
    assert f"{SRC}.api" in MODULES and PACKAGE in MODULES
    pairs = {(e.src, e.dst) for e in EDGES}
    for src, dst in [(PACKAGE, f"{SRC}.api"), (f"{SRC}.api", f"{SRC}.engine"), (f"{SRC}.engine", f"{SRC}.routes"),
                     (f"{SRC}.routes", f"{SRC}.tensors"), (f"{SRC}.families", f"{SRC}.mathns")]:
        assert (src, dst) in pairs, f"expected the import {src} -> {dst}; the scanner is broken"


def test_resolver_on_synthetic_sources(tmp_path):
    """The resolver handles every relative form (a self-check so that the tests above cannot pass vacuously)."""
    pkg = tmp_path / PACKAGE
    (pkg / "_src").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from ._src import a\nfrom ._src.b import thing\n")
    (pkg / "_src" / "a.py").write_text("from . import b\nfrom .. import c\n\ndef f():\n    from .b import g\n    import importlib\n    importlib.import_module('geometry._src.b')\n")
    (pkg / "_src" / "b.py").write_text("import geometry._src.a\nfrom geometry._src import a as A\n")
    (pkg / "c.py").write_text("")
    mods = discover(tmp_path)
    got = {(e.src, e.dst, e.line, e.in_function) for e in edges(mods, tmp_path)}
    assert ("geometry", "geometry._src.a", 1, False) in got
    assert ("geometry", "geometry._src.b", 2, False) in got
    assert ("geometry._src.a", "geometry._src.b", 1, False) in got
    assert ("geometry._src.a", "geometry.c", 2, False) in got
    assert ("geometry._src.a", "geometry._src.b", 5, True) in got
    assert ("geometry._src.a", "geometry._src.b", 7, True) in got
    assert ("geometry._src.b", "geometry._src.a", 1, False) in got
    assert ("geometry._src.b", "geometry", 1, False) in got  # ``import geometry._src.a`` runs geometry/__init__
    assert ("geometry._src.b", "geometry._src.a", 2, False) in got
    graph = {}
    for s, d, _, _ in got:
        graph.setdefault(s, set()).add(d)
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_import_graph_is_acyclic():
    graph = {m: set() for m in MODULES}
    for e in EDGES:
        graph[e.src].add(e.dst)
    assert len(graph) > 10 and sum(map(len, graph.values())) > 20  # the scan found the package
    cycle = find_cycle(graph)
    lines = []
    for a, b in zip(cycle or [], (cycle or [])[1:]):
        lines += [_describe(e) for e in EDGES if e.src == a and e.dst == b][:1]
    assert cycle is None, "import cycle " + " -> ".join(cycle) + ":\n" + "\n".join(lines)


def test_no_function_level_imports_of_geometry_modules():
    lazy = [_describe(e) for e in EDGES if e.in_function]
    assert not lazy, "imports of geometry modules inside functions (lazy imports dodge cycles):\n" + "\n".join(lazy)


def test_every_src_module_has_a_layer():
    src = sorted(m.rpartition(".")[2] for m in MODULES if m.startswith(SRC + ".") and m.count(".") == 2)
    unknown = [m for m in src if m not in LAYER_OF]
    assert not unknown, f"modules of {SRC} without a layer: {unknown}"
    missing = [m for m in LAYER_OF if f"{SRC}.{m}" not in MODULES]
    assert not missing, f"layers without a module: {missing}"


def test_imports_point_to_lower_layers():
    bad = []
    for e in EDGES:
        if not (e.src.startswith(SRC + ".") and e.dst.startswith(SRC + ".")):
            continue
        a, b = e.src.rpartition(".")[2], e.dst.rpartition(".")[2]
        if a in LAYER_OF and b in LAYER_OF and not LAYER_OF[a] > LAYER_OF[b]:
            rel = "the same layer" if LAYER_OF[a] == LAYER_OF[b] else "a higher layer"
            bad.append(f"{_describe(e)}: {a} (layer {LAYER_OF[a]}) imports {rel} ({b}, layer {LAYER_OF[b]})")
    assert not bad, "imports that do not point downward:\n" + "\n".join(bad)


def test_src_modules_do_not_import_the_public_package():
    """geometry/__init__ sits on top; a _src module importing ``geometry`` goes back up."""
    up = [_describe(e) for e in EDGES if e.src.startswith(SRC) and not e.dst.startswith(SRC)]
    assert not up, "\n".join(up)
