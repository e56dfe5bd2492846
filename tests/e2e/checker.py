"""A recorded history and its checker (the Jepsen/Kafka system-test way): log every acked send and
every delivered frame, then look for lost, duplicated, out-of-order and never-seen messages."""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class History:
    #: (conversation_id, seq) of every acked send.
    acked: set[tuple[str, int]] = field(default_factory=set)
    #: client name -> conversation_id -> seqs in the order the client received them.
    delivered: defaultdict[str, defaultdict[str, list[int]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(list))
    )

    def ack(self, conversation_id: str, seq: int) -> None:
        self.acked.add((conversation_id, seq))

    def deliver(self, client: str, conversation_id: str, seq: int) -> None:
        self.delivered[client][conversation_id].append(seq)


@dataclass
class Verdict:
    lost: dict[str, list[int]]
    duplicated: dict[str, list[int]]
    out_of_order: dict[str, list[int]]
    gaps: dict[str, list[int]]

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.out_of_order or self.gaps)


def check(history: History, clients: list[str], conversation_id: str, *, from_seq: int = 1) -> Verdict:
    """Every client must have received exactly the acked seqs >= from_seq of the conversation, each
    once, ascending, with no gap (seqs it received that nobody acked are fine: other writers)."""
    expected = sorted(seq for cid, seq in history.acked if cid == conversation_id and seq >= from_seq)
    lost: dict[str, list[int]] = {}
    duplicated: dict[str, list[int]] = {}
    out_of_order: dict[str, list[int]] = {}
    gaps: dict[str, list[int]] = {}
    for client in clients:
        got = [s for s in history.delivered[client][conversation_id] if s >= from_seq]
        missing = sorted(set(expected) - set(got))
        if missing:
            lost[client] = missing
        dups = sorted({s for s in got if got.count(s) > 1})
        if dups:
            duplicated[client] = dups
        disorder = [b for a, b in itertools.pairwise(got) if b <= a]
        if disorder:
            out_of_order[client] = disorder
        holes = [b for a, b in itertools.pairwise(got) if b > a + 1]
        if holes:
            gaps[client] = holes
    return Verdict(lost, duplicated, out_of_order, gaps)
