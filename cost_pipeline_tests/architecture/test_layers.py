"""Protects the layering: lib is pure, only store speaks SQL, the catalogue stands alone."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "cost_pipeline"
LIB_MODULES = sorted(
    f"cost_pipeline.lib.{p.stem}" for p in (PACKAGE / "lib").glob("*.py") if p.stem != "__init__"
)
FORBIDDEN_IN_LIB = (
    "dagster",
    "sqlalchemy",
    "psycopg2",
    "cost_pipeline.store",
    "cost_pipeline.defs",
)
SQL = re.compile(
    r"\b(SELECT\s.+\sFROM|INSERT\s+INTO|DELETE\s+FROM|UPDATE\s+\w+\s+SET|CREATE\s+(TEMP\s+)?TABLE|DROP\s+TABLE|TRUNCATE)\b",
    re.I | re.S,
)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_lib_imports_neither_dagster_nor_a_database() -> None:
    # What each lib module imports, transitively, in a clean interpreter.
    code = (
        "import importlib, sys, json\n"
        f"mods = {LIB_MODULES!r}\n"
        "for m in mods: importlib.import_module(m)\n"
        "print(json.dumps(sorted(n for n in sys.modules if n.split('.')[0] in "
        "('dagster', 'sqlalchemy', 'psycopg2') or n.startswith(('cost_pipeline.store', "
        "'cost_pipeline.defs')))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"lib pulls in: {out.stdout.strip()[:500]}"
    for module in LIB_MODULES:
        path = PACKAGE / "lib" / f"{module.rsplit('.', 1)[1]}.py"
        bad = [n for n in _imports(path) if n.startswith(FORBIDDEN_IN_LIB)]
        assert not bad, f"{module} imports {bad}"


def _strings(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str)
    ]


@pytest.mark.parametrize(
    "path",
    sorted(p for p in PACKAGE.rglob("*.py") if "store" not in p.relative_to(PACKAGE).parts),
    ids=lambda p: str(p.relative_to(PACKAGE)),
)
def test_no_sql_and_no_connection_outside_store(path: Path) -> None:
    sql = [(line, s[:80]) for line, s in _strings(path) if SQL.search(s)]
    assert not sql, f"SQL outside cost_pipeline/store: {sql}"
    assert "connect(" not in path.read_text(), "only the store opens connections"
    assert not any(n.startswith("sqlalchemy") for n in _imports(path)), "sqlalchemy outside store"


def test_catalogue_lists_every_table_without_the_definitions() -> None:
    code = (
        "import sys\n"
        "from cost_pipeline.catalog import TABLES\n"
        "assert not any(m.startswith(('cost_pipeline.defs', 'cost_pipeline.definitions', "
        "'dagster')) for m in sys.modules), 'the catalogue pulled in Dagster wiring'\n"
        "print(len(TABLES))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    from cost_pipeline.catalog import TABLES

    assert int(out.stdout) == len(TABLES) >= 25


def test_every_table_and_money_or_token_column_is_documented() -> None:
    from cost_pipeline.catalog import TABLES

    missing = [t.name for t in TABLES.values() if not t.doc]
    missing += [
        f"{t.name}.{c.name}"
        for t in TABLES.values()
        for c in t.columns
        if (c.kind == "money" or c.name.endswith("_tokens")) and not c.doc
    ]
    assert not missing, f"undocumented: {missing}"


def test_views_are_column_subsets_of_where_they_are_stored() -> None:
    from cost_pipeline.catalog import TABLES

    for table in TABLES.values():
        if table.view_of:
            stored = TABLES[table.view_of]
            assert set(table.column_names) <= set(stored.column_names), table.name
            for c in table.columns:
                assert stored.column(c.name).kind == c.kind, f"{table.name}.{c.name}"
