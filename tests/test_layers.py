"""The folder tree names the layers, and imports point down only.

Every import in the library, lazy ones inside functions included, is checked:
a module may import its own room and anything below it, never above.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# rank of each room, bottom (0) to top; a module may import ranks <= its own
RANKS = {
    "errors": 0, "util": 0, "config": 0,
    "codecs": 1, "blobs": 1, "db": 1, "checkpoint": 1, "merge": 1,
    "tensors": 2,
    "ops": 3,
    "registry": 4, "remote": 4,
    "cli": 5, "server": 5,
}
# bottom rooms stay independent of each other, with these exceptions
BOTTOM_ALLOWED = {("merge", "checkpoint")}


def _room(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "tvstore" or len(parts) < 2:
        return None
    return parts[1]


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            found.extend(f"{node.module}.{a.name}" for a in node.names if node.module == "tvstore")
        elif isinstance(node, ast.Import):
            found.extend(a.name for a in node.names)
    return found


def _modules() -> list[tuple[str, Path]]:
    out = [(p.relative_to(ROOT / "tvstore").parts[0].removesuffix(".py"), p) for p in (ROOT / "tvstore").rglob("*.py")]
    out += [("cli", p) for p in (ROOT / "cli").rglob("*.py")]
    return [(room, p) for room, p in out if room != "__init__"]


def test_every_room_has_a_rank() -> None:
    rooms = {room for room, _ in _modules()}
    assert rooms - set(RANKS) == set(), "a new folder of tvstore/ needs a place in the layer order"


def test_imports_point_down_only() -> None:
    upward = []
    for room, path in _modules():
        for module in _imports(path):
            target = _room(module)
            if target is None or target == room or target not in RANKS:
                continue
            rank, target_rank = RANKS[room], RANKS[target]
            same_bottom = rank == target_rank == 1 and (room, target) not in BOTTOM_ALLOWED
            if target_rank > rank or same_bottom:
                upward.append(f"{path.relative_to(ROOT)} imports {module}")
    assert upward == []


def test_no_flat_modules_beyond_the_facade() -> None:
    flat = sorted(p.name for p in (ROOT / "tvstore").glob("*.py"))
    assert flat == ["__init__.py", "config.py", "errors.py", "registry.py"]
