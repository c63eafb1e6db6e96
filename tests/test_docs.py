"""The repository stands on its own: its documents link only inside it, use no words
of the process that wrote them, describe the code as it is (docs/api.md names every
public method), and every command the Makefile names exists."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import banyanstore
from banyanstore.lsm.batch import Batch
from banyanstore.lsm.keyspace import Keyspace
from banyanstore.snapshot import Snapshot

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", ROOT / "benchmarks" / "README.md", *(ROOT / "docs").rglob("*.md")])
LINK = re.compile(r"\[[^\]]*\]\(([^)#\s]+)(?:#[^)]*)?\)")
# Words of the process, not of the product: readers of the repository have no issue
# tracker, sessions or closing notes to look up.
PROCESS_WORDS = re.compile(r"\bsessions?\b|\bissue \d|\bissues all\b|\bclosing notes?\b|\bCEO\b|"
                           r"\bknown issue\b|/work/|\.\./shared", re.IGNORECASE)


def _rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_links_stay_inside_the_repository_and_resolve(doc: Path) -> None:
    for target in LINK.findall(doc.read_text()):
        if re.match(r"^[a-z]+://", target):
            continue  # a web address: outside by design
        path = (doc.parent / target).resolve()
        assert path.is_relative_to(ROOT), f"{_rel(doc)} links outside the repository: {target}"
        assert path.exists(), f"{_rel(doc)} links to a missing file: {target}"


@pytest.mark.parametrize("doc", DOCS, ids=_rel)
def test_documents_use_no_process_words(doc: Path) -> None:
    found = [m.group(0) for m in PROCESS_WORDS.finditer(doc.read_text())]
    assert not found, f"{_rel(doc)} mentions {found}"


def test_sources_cite_facts_inside_the_repository() -> None:
    """Modules that quote measured facts point at docs/facts.md, which exists."""
    assert (ROOT / "docs" / "facts.md").exists() and (ROOT / "docs" / "api.md").exists()
    for py in (ROOT / "src").rglob("*.py"):
        for line in py.read_text().splitlines():
            if "FACTS.md" in line or "facts.md" in line:
                assert "docs/facts.md" in line, f"{_rel(py)}: {line.strip()}"


def _public(cls: type) -> set[str]:
    return {n for n in dir(cls) if not n.startswith("_")}


def test_api_document_names_every_public_method_and_error() -> None:
    """docs/api.md is kept in step with the code: every public name of the Store, its
    keyspaces, snapshots, batches, the Log, the dbm module and the errors appears."""
    from banyanstore.dbm import BanyanDbm
    from banyanstore.log.log import Log
    from banyanstore.lsm.store import Store
    text = (ROOT / "docs" / "api.md").read_text()
    names = set()
    for cls in (Store, Keyspace, Snapshot, Batch, Log, BanyanDbm):
        names |= _public(cls)
    names -= {"open"}  # Store.open / Log.open are banyanstore.open / open_log
    names |= {n for n in banyanstore.errors.__all__ if n.endswith("Error")}
    names -= {"clear", "items", "pop", "popitem", "update", "values"}  # MutableMapping's own
    missing = sorted(n for n in names if not re.search(rf"\b{re.escape(n)}\b", text))
    assert not missing, f"docs/api.md does not mention {missing}"


def test_api_document_calls_only_methods_that_exist() -> None:
    """The other way round: every method docs/api.md calls on a store, snapshot, batch or
    log outside its asyncio section (whose methods are AsyncStore's) is one the object has."""
    from banyanstore.log.log import Log
    from banyanstore.lsm.follower import FollowerStore
    text = (ROOT / "docs" / "api.md").read_text()
    sync = "\n".join(p for p in re.split(r"^## ", text, flags=re.M) if not p.startswith("asyncio"))
    kinds = {"store": (FollowerStore, Keyspace), "snap": (Snapshot,), "b": (Batch,), "batch": (Batch,),
             "log": (Log,), "index": (Keyspace,)}
    unknown = sorted(f"{var}.{name}()" for var, classes in kinds.items()
                     for name in set(re.findall(rf"(?<![\w.]){var}\.(\w+)\(", sync))
                     if not any(hasattr(cls, name) for cls in classes))
    assert not unknown, f"docs/api.md calls methods that do not exist: {unknown}"


def test_api_document_examples_run() -> None:
    """The ``>>>`` examples of docs/api.md run and print what the document shows."""
    import doctest
    result = doctest.testfile(str(ROOT / "docs" / "api.md"), module_relative=False,
                              optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0, result


def test_every_option_is_in_the_readme() -> None:
    text = (ROOT / "README.md").read_text()
    missing = [n for n in banyanstore.Options().as_dict() if f"`{n}`" not in text and n not in text]
    assert not missing, f"README's option table lacks {missing}"


def test_make_bench_runs_a_script_that_covers_every_benchmark() -> None:
    """`make bench` names benchmarks/run_all.py, which exists and runs every bench_*.py."""
    makefile = (ROOT / "Makefile").read_text()
    for script in re.findall(r"\$\(BIN\)/python (\S+\.py)", makefile):
        assert (ROOT / script).exists(), f"the Makefile runs {script}, which is missing"
    assert "benchmarks/run_all.py" in makefile
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run_all.py"), "--dry-run"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    planned = set(re.findall(r"(bench_\w+\.py)", proc.stdout))
    assert planned == {p.name for p in (ROOT / "benchmarks").glob("bench_*.py")}


def test_api_document_shows_the_asyncio_defaults() -> None:
    """A keyword shown with a constant in the asyncio section's calls
    (``await log.append(record, sync=None)``) is that method's default: the section read
    ``sync=True`` where the default is None, as if appends were synced unless told."""
    import ast
    import inspect

    import banyanstore.aio
    text = (ROOT / "docs" / "api.md").read_text()
    section = next(p for p in re.split(r"^## ", text, flags=re.M) if p.startswith("asyncio"))
    kinds = {"store": banyanstore.aio.AsyncStore, "index": banyanstore.aio.AsyncKeyspace,
             "log": banyanstore.aio.AsyncLog}
    wrong, seen = [], 0
    for var, name, args in re.findall(r"(?<![\w.])(store|index|log)\.(\w+)\(([^()]*)\)", section):
        method = getattr(kinds[var], name, None)
        if method is None:
            continue
        params = inspect.signature(method).parameters
        for kw, value in re.findall(r"\b(\w+)=(None|True|False|-?\d+)\b", args):
            if kw in params:
                seen += 1
                if params[kw].default != ast.literal_eval(value):
                    wrong.append(f"{var}.{name}({kw}={value}): the default is {params[kw].default!r}")
    assert seen, "no keyword defaults found in the asyncio section"
    assert not wrong, wrong


def _exported_classes() -> dict[str, type]:
    """Every class a user reaches from the package's modules: ``banyanstore``'s, and those of
    ``banyanstore.aio``, ``banyanstore.dbm`` and ``banyanstore.tools``."""
    import banyanstore.aio
    import banyanstore.dbm
    import banyanstore.tools
    classes = {}
    for module in (banyanstore, banyanstore.aio, banyanstore.dbm, banyanstore.tools):
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type) and not issubclass(obj, BaseException):
                classes[f"{module.__name__}.{name}"] = obj
    return classes


def test_every_public_method_and_property_has_a_docstring() -> None:
    """``help(store.stats)`` says what it returns: a public method or property of an
    exported class without a docstring (its own, not one inherited from ``object``) shows
    ``help()`` nothing but its signature."""
    import inspect
    classes = _exported_classes()
    assert {"banyanstore.Store", "banyanstore.aio.AsyncStore", "banyanstore.dbm.BanyanDbm"} <= set(classes)
    bare = []
    for label, cls in classes.items():
        for name in _public(cls):
            member = inspect.getattr_static(cls, name)
            if isinstance(member, (staticmethod, classmethod)):
                member = member.__func__
            if (callable(member) or isinstance(member, property)) and not inspect.getdoc(member):
                bare.append(f"{label}.{name}")
    assert not bare, f"no docstring: {sorted(bare)}"
