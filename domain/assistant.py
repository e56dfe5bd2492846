"""The assistant's rules (flow 5), pure: when a message asks for an answer, which reply answers it, what
context the model sees, and what a call costs. The worker (``workers/assistant.py``) applies them.

Nothing here does I/O: the worker loads messages and usage, these functions decide.
"""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Sequence
from uuid import UUID

import msgspec

from domain.values import AssistantSettings, Message, MessageRole

#: Fixed namespace for reply ids: the same trigger message always names the same reply, on every worker,
#: so a re-delivered event or a retried job lands on the reply (and the job id) already in flight.
REPLY_NAMESPACE = UUID("6f1b3c1e-0b7a-4c55-9d39-4f6b8f0d9a21")

#: How a person calls the assistant in a conversation with several people.
MENTION = re.compile(r"(?<![\w@])@assistant\b", re.IGNORECASE)


class ReplyStatus(enum.StrEnum):
    DONE = "done"
    CANCELLED = "cancelled"
    ERROR = "error"


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens


class Price(msgspec.Struct, frozen=True, kw_only=True):
    """US dollars per million tokens."""

    input: float
    output: float


class Turn(msgspec.Struct, frozen=True, kw_only=True):
    """One turn as the model sees it: ``user`` or ``assistant``."""

    role: str
    text: str


class ContextMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A stored message with its author's display name (the model is told who said what)."""

    message: Message
    author: str | None = None


def reply_id_for(trigger_message_id: UUID) -> UUID:
    return uuid.uuid5(REPLY_NAMESPACE, str(trigger_message_id))


def answer_client_msg_id(reply_id: UUID) -> str:
    """The assistant message's client id: writing the answer twice finds the first one instead."""
    return f"reply:{reply_id}"


def wants_reply(message: Message, assistant: AssistantSettings, member_count: int) -> bool:
    """A person's message asks for an answer when the assistant is on and, with several people in the
    room, the message mentions ``@assistant``. The assistant's own messages never do."""
    if message.role is not MessageRole.USER or not assistant.enabled:
        return False
    return member_count <= 1 or MENTION.search(message.text) is not None


def estimate_tokens(text: str) -> int:
    """A cheap upper-ish estimate (about four characters a token, plus framing) for budgeting context."""
    return len(text) // 4 + 4


def recent_within_budget(
    newest_first: Sequence[ContextMessage], *, max_messages: int, budget: int
) -> list[ContextMessage]:
    """The most recent messages, oldest first, that fit the token budget. The newest (the trigger) is
    always kept, even alone over budget: the model must see the question it answers."""
    kept: list[ContextMessage] = []
    spent = 0
    for item in newest_first[:max_messages]:
        cost = estimate_tokens(item.message.text)
        if kept and spent + cost > budget:
            break
        kept.append(item)
        spent += cost
    kept.reverse()
    return kept


def _speaker_text(item: ContextMessage) -> str:
    if item.message.role is MessageRole.USER and item.author:
        return f"{item.author}: {item.message.text}"
    return item.message.text


def to_turns(recent: Sequence[ContextMessage]) -> list[Turn]:
    """Messages to alternating turns that start with the user (the Messages API's shape): people's
    messages are named and merged when several come in a row; leading assistant messages are dropped."""
    turns: list[Turn] = []
    for item in recent:
        role = "assistant" if item.message.role is MessageRole.ASSISTANT else "user"
        if not turns and role == "assistant":
            continue
        text = _speaker_text(item)
        if turns and turns[-1].role == role:
            turns[-1] = Turn(role=role, text=turns[-1].text + "\n\n" + text)
        else:
            turns.append(Turn(role=role, text=text))
    return turns


def system_prompt(base: str, recalled: Sequence[ContextMessage]) -> str:
    """The conversation's system prompt, followed by the recalled earlier messages, if any."""
    if not recalled:
        return base
    lines = [f"[#{item.message.seq}] {_speaker_text(item)}" for item in recalled]
    return base + "\n\nEarlier messages of this conversation that may be relevant:\n" + "\n".join(lines)


def cost_of(usage: Usage, price: Price | None) -> float:
    if price is None:
        return 0.0
    return (usage.input_tokens * price.input + usage.output_tokens * price.output) / 1_000_000


def parse_prices(spec: str) -> dict[str, Price]:
    """``model=input/output,model2=input/output`` (dollars per million tokens) to a price table."""
    table: dict[str, Price] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        model, _, pair = part.partition("=")
        inp, _, out = pair.partition("/")
        try:
            table[model.strip()] = Price(input=float(inp), output=float(out))
        except ValueError as exc:
            raise ValueError(f"price {part!r} is not model=input/output") from exc
    return table
