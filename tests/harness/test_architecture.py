"""The floors of the project stay apart: ovi_bench imports ovi_engine only in the reference adapter, and
ovi_engine never imports ovi_bench (read from the source, every import statement, wherever it sits)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REFERENCE_ADAPTER = REPO / "ovi_bench" / "engines" / "reference.py"


def imported_packages(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_harness_imports_the_engine_only_in_the_reference_adapter():
    importers = sorted(str(p.relative_to(REPO)) for p in (REPO / "ovi_bench").rglob("*.py")
                       if "ovi_engine" in imported_packages(p))
    assert importers == [str(REFERENCE_ADAPTER.relative_to(REPO))]


def test_engine_never_imports_the_harness():
    assert not [p for p in (REPO / "ovi_engine").rglob("*.py") if "ovi_bench" in imported_packages(p)]


def test_the_walk_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from ovi_engine.attention import attend\n    import "
                      "ovi_engine.variants\n")
    assert imported_packages(source) == {"ovi_engine"}
