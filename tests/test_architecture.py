"""The rooms of the repository import one way (docs/architecture.md): dags → operators → lakeloop → tfspark,
jobs → lakeloop/tfspark, and no module imports itself back through another."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROOMS = ("dags", "plugins", "operators", "jobs", "lakeloop", "tfspark")
MAY_IMPORT = {
    "dags": {"operators", "lakeloop"},
    "plugins": {"operators", "lakeloop"},
    "operators": {"lakeloop", "tfspark"},
    "jobs": {"lakeloop", "tfspark"},
    "lakeloop": {"tfspark"},
    "tfspark": set(),
}


def module_name(path: Path) -> str:
    """The dotted module name of a file in the repository (a DAG or plugin file by its folder and stem)."""
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module of ours that a file imports, at module level or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.split(".")[0] in ROOMS}


def room_files() -> dict[str, Path]:
    """Module name → file of every Python module in the rooms."""
    return {module_name(path): path for room in ROOMS for path in sorted((REPO / room).rglob("*.py"))}


def test_each_room_imports_only_the_rooms_below_it():
    wrong = []
    for name, path in room_files().items():
        room = name.split(".")[0]
        for target in imported_modules(path):
            if target.split(".")[0] not in MAY_IMPORT[room] | {room}:
                wrong.append(f"{path.relative_to(REPO)} imports {target}")
    assert wrong == []


def test_jobs_are_entry_points_only():
    for path in sorted((REPO / "jobs").glob("*.py")):
        if path.name == "__init__.py":
            continue
        names = {node.name for node in ast.parse(path.read_text()).body if isinstance(node, ast.FunctionDef)}
        assert "main" in names, f"{path.name} has no main(): jobs/ holds spark-submit entry points only"
        others = {target for target in imported_modules(path)
                  if target.startswith("jobs.") and not target.startswith(f"jobs.{path.stem}")}
        assert others == set(), f"{path.name} imports another job: shared code belongs in lakeloop/"


@pytest.mark.parametrize("room", ["lakeloop", "tfspark", "operators"])
def test_no_import_cycles(room):
    files = {name: path for name, path in room_files().items() if name.split(".")[0] == room}
    graph = {name: {target for target in imported_modules(path) if target in files and target != name}
             for name, path in files.items()}
    cycles, state = [], {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                cycles.append(" → ".join([*trail[trail.index(target):], target]))
            elif target not in state:
                visit(target, [*trail, target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_tfspark_task_side_and_shared_modules_never_import_the_driver_side():
    imports_driver = {
        name for name, path in room_files().items()
        if name.startswith("tfspark") and not name.startswith("tfspark.driver")
        and any(target.startswith("tfspark.driver") for target in imported_modules(path))
    }
    assert imports_driver == set()
