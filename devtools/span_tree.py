"""The tree of one trace, walked depth-first: what the CLI's waterfall draws and what the
tests print in their assertion messages."""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar


class TreeSpan(Protocol):
    @property
    def span_id(self) -> str: ...
    @property
    def parent_span_id(self) -> str | None: ...
    @property
    def start_ns(self) -> int: ...
    @property
    def end_ns(self) -> int: ...


S = TypeVar("S", bound=TreeSpan)


@dataclass(frozen=True)
class Node(Generic[S]):
    span: S
    depth: int  # 0 for a root
    last: bool  # the last of its siblings
    lineage: tuple[bool, ...]  # ``last`` of each ancestor below the root, outermost first
    has_children: bool


def walk(spans: Iterable[S]) -> list[Node[S]]:
    """Depth-first, children ordered by start (then end) time. A span whose parent is not in
    the trace (not exported yet, or from an upstream caller) is a root; a cycle in a malformed
    trace is cut."""
    ordered = sorted(spans, key=lambda s: (s.start_ns, s.end_ns))
    ids = {s.span_id for s in ordered}
    children: dict[str | None, list[S]] = {}
    for span in ordered:
        parent = span.parent_span_id if span.parent_span_id in ids else None
        children.setdefault(parent, []).append(span)
    nodes: list[Node[S]] = []
    seen: set[str] = set()

    def visit(parent: str | None, depth: int, lineage: tuple[bool, ...]) -> None:
        kids = children.get(parent, [])
        for i, span in enumerate(kids):
            if span.span_id in seen:
                continue
            seen.add(span.span_id)
            last = i == len(kids) - 1
            nodes.append(Node(span, depth, last, lineage, bool(children.get(span.span_id))))
            visit(span.span_id, depth + 1, (*lineage, last) if depth else lineage)

    visit(None, 0, ())
    return nodes
