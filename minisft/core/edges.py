"""Which state may follow which, as data: one table per machine, checked on every change.

A machine's `TRANSITIONS` says which inputs a state accepts; its handlers decide the next
state. `EDGES` lists, per state, the states a handler may go to from it, and `_go` checks
each change against it: a path nobody designed raises `IllegalTransition` instead of
running quietly. docs/design.md shows the diagram `mermaid` draws from the same table, and
a unit test keeps the two equal, so the picture cannot drift from the code.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import TypeVar

S = TypeVar("S", bound=StrEnum)


class IllegalTransition(RuntimeError):
    """A handler tried a state change its machine's `EDGES` do not list: a bug in the
    machine (an `IllegalInput` is a bug in the caller)."""


def check_edge(edges: Mapping[S, frozenset[S]], who: str, old: S, new: S) -> None:
    if new not in edges[old]:
        raise IllegalTransition(f"{who}: {old.value} -> {new.value} is not an edge of the "
                                "state machine")


def mermaid(edges: Mapping[S, frozenset[S]], initial: S) -> str:
    """The table as a Mermaid `stateDiagram-v2`, states and edges in declaration order."""
    lines = ["stateDiagram-v2", f"    [*] --> {initial.value}"]
    states = list(type(initial))
    for old in states:
        lines += [f"    {old.value} --> {new.value}" for new in states if new in edges[old]]
    return "\n".join(lines) + "\n"
