"""The span-tree walker the waterfall and the tests' messages share."""

from dataclasses import dataclass

from devtools.span_tree import walk


@dataclass(frozen=True)
class Span:
    span_id: str
    parent_span_id: str | None
    start_ns: int
    end_ns: int = 100


def test_depth_first_with_children_by_start_time_and_orphans_as_roots() -> None:
    spans = [
        Span("c2", "root", 30),
        Span("root", None, 0),
        Span("c1", "root", 10),
        Span("g1", "c1", 20),
        Span("orphan", "not-exported-yet", 40),
    ]
    nodes = walk(spans)
    assert [(n.span.span_id, n.depth, n.last) for n in nodes] == [
        ("root", 0, False),
        ("c1", 1, False),
        ("g1", 2, True),
        ("c2", 1, True),
        ("orphan", 0, True),
    ]
    assert nodes[2].lineage == (False,)  # g1's parent c1 has a sibling after it
    assert [n.has_children for n in nodes] == [True, True, False, False, False]


def test_a_cycle_is_cut() -> None:
    spans = [Span("a", None, 0), Span("b", "c", 1), Span("c", "b", 2)]
    assert [n.span.span_id for n in walk(spans)] == ["a"]
