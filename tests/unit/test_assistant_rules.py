"""The assistant's pure rules: when a message asks for an answer, the context the model sees, cost."""

from __future__ import annotations

import uuid

import pytest

from domain.assistant import (
    ContextMessage,
    Price,
    Usage,
    answer_client_msg_id,
    cost_of,
    parse_prices,
    recent_within_budget,
    reply_id_for,
    system_prompt,
    to_turns,
    wants_reply,
)
from domain.values import AssistantSettings, MessageRole
from tests.factories import MessageFactory

ON = AssistantSettings(enabled=True)


def ctx(seq: int, text: str, role: MessageRole = MessageRole.USER, author: str | None = "Ann") -> ContextMessage:
    return ContextMessage(message=MessageFactory.build(seq=seq, text=text, role=role), author=author)


def test_alone_with_the_assistant_every_message_asks_for_an_answer() -> None:
    assert wants_reply(MessageFactory.build(text="hello"), ON, member_count=1)


def test_with_several_people_only_a_mention_asks_for_an_answer() -> None:
    assert not wants_reply(MessageFactory.build(text="hello all"), ON, member_count=3)
    assert wants_reply(MessageFactory.build(text="@Assistant what now?"), ON, member_count=3)
    assert wants_reply(MessageFactory.build(text="what do you think, @assistant"), ON, member_count=3)
    assert not wants_reply(MessageFactory.build(text="mail me at bob@assistant.example"), ON, member_count=3)


def test_a_disabled_assistant_and_its_own_messages_never_trigger() -> None:
    assert not wants_reply(MessageFactory.build(text="@assistant hi"), AssistantSettings(enabled=False), 1)
    assert not wants_reply(MessageFactory.build(text="@assistant", role=MessageRole.ASSISTANT), ON, 1)


def test_the_reply_id_is_the_same_for_the_same_trigger() -> None:
    trigger = uuid.uuid4()
    assert reply_id_for(trigger) == reply_id_for(trigger) != reply_id_for(uuid.uuid4())
    assert answer_client_msg_id(reply_id_for(trigger)) == f"reply:{reply_id_for(trigger)}"


def test_recent_messages_fit_the_budget_oldest_first_and_keep_the_trigger() -> None:
    newest_first = [ctx(5, "x" * 40), ctx(4, "y" * 40), ctx(3, "z" * 400), ctx(2, "w")]

    kept = recent_within_budget(newest_first, max_messages=10, budget=40)

    assert [c.message.seq for c in kept] == [4, 5]
    alone = recent_within_budget([ctx(9, "q" * 1000)], max_messages=10, budget=10)
    assert [c.message.seq for c in alone] == [9]
    assert len(recent_within_budget(newest_first, max_messages=2, budget=10_000)) == 2


def test_turns_alternate_start_with_the_user_and_name_the_people() -> None:
    recent = [
        ctx(1, "old answer", MessageRole.ASSISTANT),
        ctx(2, "hi", author="Ann"),
        ctx(3, "hello", author="Bob"),
        ctx(4, "hey there", MessageRole.ASSISTANT),
        ctx(5, "@assistant why?", author="Ann"),
    ]

    turns = to_turns(recent)

    assert [t.role for t in turns] == ["user", "assistant", "user"]
    assert turns[0].text == "Ann: hi\n\nBob: hello"
    assert turns[-1].text == "Ann: @assistant why?"


def test_recalled_messages_go_into_the_system_prompt_with_their_seq() -> None:
    assert system_prompt("Be brief.", []) == "Be brief."
    prompt = system_prompt("Be brief.", [ctx(2, "the code is 42", author="Bob")])
    assert prompt.startswith("Be brief.") and "[#2] Bob: the code is 42" in prompt


def test_cost_comes_from_the_price_table() -> None:
    prices = parse_prices("m1=3/15, m2=1/5")
    assert prices["m1"] == Price(input=3, output=15)
    assert cost_of(Usage(input_tokens=1_000_000, output_tokens=100_000), prices["m1"]) == pytest.approx(4.5)
    assert cost_of(Usage(input_tokens=10, output_tokens=10), None) == 0.0
    with pytest.raises(ValueError):
        parse_prices("m1=cheap")
