"""Lineage as a drawn graph: ancestors in columns to the left, descendants to the right.

Only the layout is computed here (boxes and arrows in pixels); the template
draws them as SVG, so every label goes through Jinja's escaping.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tvstore.ops.lineage import LineageNode

COL_W, ROW_H, BOX_W, BOX_H, PAD = 310, 56, 180, 30, 12


@dataclass
class Box:
    x: int
    y: int
    label: str
    kind: str  # vector | base | checkpoint | root


@dataclass
class Arrow:
    x1: int
    y1: int
    x2: int
    y2: int
    relation: str


@dataclass
class Layout:
    width: int = 0
    height: int = 0
    boxes: list[Box] = field(default_factory=list)
    arrows: list[Arrow] = field(default_factory=list)


def layout(root: str, ancestors: list[LineageNode], descendants: list[LineageNode]) -> Layout:
    """Place ``root`` and its family: column = generation, row = order met within that generation."""
    rows: dict[int, int] = {}
    placed: list[tuple[int, int, str, str]] = []  # (depth, row, label, kind)
    links: list[tuple[int, int, str]] = []  # (from index, to index, relation): arrows point parent -> child

    def place(depth: int, label: str, kind: str) -> int:
        placed.append((depth, rows.get(depth, 0), label, kind))
        rows[depth] = rows.get(depth, 0) + 1
        return len(placed) - 1

    def walk(nodes: list[LineageNode], above: int, depth: int, step: int) -> None:
        for node in nodes:
            me = place(depth, _describe(node), node.kind)
            links.append((me, above, node.relation or "") if step < 0 else (above, me, node.relation or ""))
            walk(node.children, me, depth + step, step)

    top = place(0, root, "root")
    walk(ancestors, top, -1, -1)
    walk(descendants, top, 1, 1)
    first = min(d for d, *_ in placed)
    out = Layout(width=(max(d for d, *_ in placed) - first) * COL_W + BOX_W + 2 * PAD,
                 height=max(rows.values()) * ROW_H + 2 * PAD)
    out.boxes = [Box(PAD + (d - first) * COL_W, PAD + r * ROW_H, label, kind) for d, r, label, kind in placed]
    for a, b, relation in links:
        pa, pb = out.boxes[a], out.boxes[b]
        out.arrows.append(Arrow(pa.x + BOX_W, pa.y + BOX_H // 2, pb.x, pb.y + BOX_H // 2, relation))
    return out


def _describe(node: LineageNode) -> str:
    return node.label if node.weight is None else f"{node.label} x{node.weight:g}"
