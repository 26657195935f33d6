"""docs/architecture.md's table of packages is true of the code: each package imports, at module
level, only the packages its row names (plus ``errors`` and ``_files``), and only packages listed
in rows before it. Imports inside functions (lazy imports of heavy parts) are not counted."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "prefloop"
DOC = ROOT / "docs" / "architecture.md"
SHARED = {"errors", "_files"}
_ROW = re.compile(r"^\| `(\w+)`[^|]*\|.*\| ([^|]*) \|$", re.M)


def table() -> list[tuple[str, set[str] | None]]:
    """(package, the packages its row says it imports; None for "all") in the table's order."""
    found = _ROW.findall(DOC.read_text(encoding="utf-8"))
    names = {name for name, _ in found}
    rows: list[tuple[str, set[str] | None]] = []
    for name, cell in found:
        words = (re.match(r"\(?(\w+)", part.strip()) for part in cell.split(","))
        named = {w.group(1) for w in words if w} & names  # "demo (plots)": demo; "—": nothing
        rows.append((name, None if cell.strip() == "all" else named))
    return rows


def _sources(name: str) -> list[Path]:
    folder, module = PACKAGE / name, PACKAGE / f"{name}.py"
    return sorted(folder.rglob("*.py")) if folder.is_dir() else [module] if module.exists() else []


def module_level_imports(path: Path) -> set[str]:
    """The prefloop packages ``path`` imports outside function bodies."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                continue
            if isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                parts = child.module.split(".")
                if parts[0] == "prefloop":
                    found.update([parts[1]] if len(parts) > 1 else [a.name for a in child.names])
            elif isinstance(child, ast.Import):
                for alias in child.names:
                    parts = alias.name.split(".")
                    if parts[0] == "prefloop" and len(parts) > 1:
                        found.add(parts[1])
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


ROWS = table()


def test_the_table_names_every_package() -> None:
    listed = {name for name, _ in ROWS}
    present = {
        p.name.removesuffix(".py")
        for p in PACKAGE.iterdir()
        if (p.is_dir() and (p / "__init__.py").exists())
        or (p.suffix == ".py" and not p.name.startswith("_") and p.stem not in SHARED)
    }
    assert present <= listed, f"add a row to docs/architecture.md for {sorted(present - listed)}"


@pytest.mark.parametrize("index", range(len(ROWS)), ids=[name for name, _ in ROWS])
def test_a_package_imports_what_its_row_says(index: int) -> None:
    name, allowed = ROWS[index]
    sources = _sources(name)
    if not sources:
        pytest.skip(f"{name} is not in this checkout")
    earlier = {n for n, _ in ROWS[:index]}
    imported = set().union(*(module_level_imports(s) for s in sources)) - SHARED - {name}
    if allowed is None:
        return
    assert allowed <= earlier, (
        f"docs/architecture.md: {name}'s row names {sorted(allowed - earlier)}, listed after it; "
        "a package imports only packages listed before it"
    )
    assert imported <= allowed, (
        f"{name} imports {sorted(imported - allowed)} at module level, which its row of "
        "docs/architecture.md does not name: add them to the row (keeping the order), or import "
        "them inside the function that needs them"
    )


def test_module_level_imports_skip_function_bodies(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "from prefloop.store import Store\nimport prefloop.bandit.online\n"
        "from prefloop import feedback\nif True:\n    from prefloop.llm import x\n"
        "def f():\n    from prefloop.train import y\n"
    )
    assert module_level_imports(source) == {"store", "bandit", "feedback", "llm"}
