"""The package's structure, checked from its source: no import loops, no reaching into
another object's private names.

* **Imports** (:func:`import_graph`): every ``import`` of a ``banyanstore`` module
  anywhere in a module -- at the top, under ``if TYPE_CHECKING:``, inside a function --
  is an edge; the graph must have no cycle.  A cycle hidden behind ``TYPE_CHECKING`` or a
  deferred import is still a cycle of the design: the two modules cannot be understood,
  tested or changed one without the other.  ``from pkg import name`` is an edge to
  ``pkg.name`` when that is a module, else to ``pkg`` itself.
* **Private names** (:func:`private_accesses`): ``x._name`` (read, write, call) is
  allowed only where ``x`` is ``self`` or ``cls``, and ``from m import _name`` only
  where ``_name`` is a module (the compiled ``_native``).  A class keeps its underscore
  names to itself, a module its underscore functions; what others need is a public
  method, attribute or function whose docstring says its rules.  Dunder names
  (``__class__``, ``x.__dict__``) are not private.  There is no allowlist.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "banyanstore"
ROOT = "banyanstore"


def module_files(package: Path = PACKAGE) -> dict[str, Path]:
    """``{dotted module name: source file}`` of the package (C extensions count as modules,
    named after their ``.c`` source, so ``from . import _native`` is not an edge to the package)."""
    out: dict[str, Path] = {}
    for path in sorted(package.rglob("*.py")) + sorted(package.rglob("*.c")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imported(module: str, is_package: bool, node: ast.AST, modules: dict[str, Path]) -> Iterator[str]:
    """The package modules one import statement depends on."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            name = alias.name
            while name and name not in modules:  # `import a.b.c` runs a, a.b, a.b.c
                name = name.rpartition(".")[0]
            if name.startswith(ROOT):
                yield name
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".")
            if not is_package:
                base = base[:-1]
            base = base[:len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        if target != ROOT and not target.startswith(ROOT + "."):
            return
        for alias in node.names:
            sub = f"{target}.{alias.name}"
            yield sub if sub in modules else target


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """``{module: modules it imports}``: every import statement anywhere in the module."""
    modules = module_files(package)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        if path.suffix != ".py":
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            for dep in _imported(module, path.name == "__init__.py", node, modules):
                if dep != module and dep in modules:
                    graph[module].add(dep)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_accesses(source: str, filename: str = "<src>", modules: frozenset[str] = frozenset()
                     ) -> list[str]:
    """``file:line: code`` for every ``x._name`` whose ``x`` is not ``self`` or ``cls``, and
    every ``from m import _name`` where ``_name`` is not among ``modules`` (names of modules)."""
    out = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            out.append(f"{filename}:{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if _private(alias.name) and alias.name not in modules:
                    out.append(f"{filename}:{node.lineno}: {ast.unparse(node)}")
    return out


# -- the checks -------------------------------------------------------------------------------

def test_the_package_has_no_import_cycles() -> None:
    loops = cycles(import_graph())
    assert not loops, "import cycles (TYPE_CHECKING and deferred imports included):\n" + "\n".join(
        " <-> ".join(c) for c in loops)


def test_no_module_touches_another_objects_private_names() -> None:
    modules = frozenset(name.rpartition(".")[2] for name in module_files())
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found += private_accesses(path.read_text(), str(path.relative_to(PACKAGE.parent)), modules)
    assert not found, "private names used outside their object:\n" + "\n".join(found)


# -- the checkers catch what they are for -----------------------------------------------------

def _write(root: Path, files: dict[str, str]) -> Path:
    pkg = root / ROOT
    for name, text in files.items():
        path = pkg / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return pkg


def test_a_loop_through_a_type_checking_import_is_found(tmp_path: Path) -> None:
    pkg = _write(tmp_path, {
        "__init__.py": "",
        "lsm/__init__.py": "",
        "lsm/store.py": "from .flush import Flusher\n",
        "lsm/flush.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .store import Store\n",
    })
    assert cycles(import_graph(pkg)) == [["banyanstore.lsm.flush", "banyanstore.lsm.store"]]


def test_a_loop_through_a_deferred_import_is_found(tmp_path: Path) -> None:
    pkg = _write(tmp_path, {
        "__init__.py": "",
        "a.py": "from . import b\n",
        "b.py": "def f():\n    from .c import g\n",
        "c.py": "import banyanstore.a\n",
    })
    assert cycles(import_graph(pkg)) == [["banyanstore.a", "banyanstore.b", "banyanstore.c"]]


def test_importing_a_name_of_the_package_depends_on_the_package(tmp_path: Path) -> None:
    pkg = _write(tmp_path, {
        "__init__.py": "def open():\n    from .store import Store\n",
        "store.py": "from . import open\n",
        "native.py": "from . import _core\n",
        "_core.c": "",
    })
    graph = import_graph(pkg)
    assert graph["banyanstore.store"] == {"banyanstore"}
    assert graph["banyanstore.native"] == {"banyanstore._core"}
    assert cycles(graph) == [["banyanstore", "banyanstore.store"]]


def test_a_tree_without_loops_passes(tmp_path: Path) -> None:
    pkg = _write(tmp_path, {
        "__init__.py": "from .lsm import store\n",
        "lsm/__init__.py": "",
        "lsm/store.py": "from .flush import Flusher\nfrom ..errors import E\n",
        "lsm/flush.py": "from .. import errors\n",
        "errors.py": "",
    })
    assert cycles(import_graph(pkg)) == []


@pytest.mark.parametrize("source", [
    "store._version",
    "store._version = 1",
    "store._log_edit(edit)",
    "self._store._ks_by_id[1]",
    "other._root",
    "f()._x",
    "del obj._cache",
    "from .iterators import _chunks",
    "from .iterators import table_runs, _Source",
])
def test_private_access_outside_self_is_flagged(source: str) -> None:
    assert len(private_accesses(source)) == 1


@pytest.mark.parametrize("source", [
    "self._version",
    "cls._instances",
    "self._tree.version",
    "obj.__class__",
    "store.version",
    "_module_level_name",
    "from . import _native",
    "from .memory_nodes import raise_oserror as _raise",
])
def test_own_and_public_names_are_not_flagged(source: str) -> None:
    assert private_accesses(source, modules=frozenset({"_native"})) == []
