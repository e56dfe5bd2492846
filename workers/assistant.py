"""Flow 5, the assistant's answer: one arq job per trigger message (``generate_reply``).

The job id and the reply id are derived from the trigger message, so a re-delivered event never starts
a second job, and a job that arq runs again after a crash (``job_try`` 2, 3 …) is a new *attempt* at
the same reply: its deltas carry the attempt number, and the final message is written through the
normal write path with the client id ``reply:{reply_id}``, which the write path stores once. A job
that finds the answer already stored only closes the reply stream.

Each delta goes to the reply streams (``infrastructure/redis/replies.py``) in a round trip that also
reports a cancel request; a watcher catches cancels while the provider is silent. Cancelling closes
the provider stream, which closes its connection. Every call records its usage (one row per attempt,
with its event for the read side) and Prometheus metrics.
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import msgspec
from prometheus_client import Counter, Histogram

from domain import commands, events, handlers
from domain.assistant import (
    Usage,
    answer_client_msg_id,
    cost_of,
    estimate_tokens,
    reply_id_for,
)
from domain.errors import DomainError
from domain.values import Message, MessageRole
from infrastructure.bootstrap import Services
from infrastructure.db import assistant as db
from infrastructure.llm.base import LLMError, LLMRequest
from infrastructure.llm.registry import Choice, Providers, choose
from infrastructure.redis import replies
from infrastructure.redis.pipeline_sink import PipelineSink
from infrastructure.redis.replies import ReplyError, ReplyWriter
from workers.assistant_context import Recall, build_request, conversation_recall, no_recall
from workers.assistant_stream import Outcome, ReplyPump

log = logging.getLogger("parley.assistant")

REPLIES = Counter(
    "parley_assistant_replies_total", "Assistant provider calls by outcome", ["provider", "model", "status"]
)
TOKENS = Counter("parley_assistant_tokens_total", "Assistant tokens", ["provider", "model", "kind"])
COST = Counter("parley_assistant_cost_usd_total", "Assistant cost in US dollars (price table)", ["provider", "model"])
TTFT = Histogram(
    "parley_assistant_ttft_seconds",
    "Time from the provider call to its first token",
    ["provider"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32),
)
DURATION = Histogram(
    "parley_assistant_reply_seconds",
    "Duration of a provider call",
    ["provider"],
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120),
)


class Trigger(msgspec.Struct, frozen=True, kw_only=True):
    message_id: UUID
    conversation_id: UUID
    seq: int
    user_id: UUID | None


class Assistant:
    """Everything a reply job needs, built once per worker process (``setup``)."""

    def __init__(self, services: Services, providers: Providers, recall: Recall = no_recall) -> None:
        self.services = services
        self.providers = providers
        self.recall = recall
        #: One Redis round trip for the deltas of every answer this process is streaming at that moment.
        self.sink = PipelineSink(services.redis)

    async def aclose(self) -> None:
        await self.providers.aclose()
        await self.sink.close()

    async def answer(self, trigger: Trigger, *, attempt: int) -> str:
        """Answer ``trigger`` (attempt ``attempt``); returns what happened, for arq's result and logs."""
        pool, redis = self.services.pg, self.services.redis
        reply_id = reply_id_for(trigger.message_id)
        writer = ReplyWriter(redis, reply_id, trigger.conversation_id, attempt, sink=self.sink)
        existing = await db.stored_answer(pool, trigger.conversation_id, answer_client_msg_id(reply_id))
        if existing is not None:  # an earlier attempt wrote it and died before closing the stream
            await writer.end(writer.ending(message_id=existing.id, seq=existing.seq))
            return "already answered"
        info = await db.conversation_assistant(pool, trigger.conversation_id)
        if info is None or not info.assistant.enabled:
            return "conversation gone or assistant off"
        if await replies.cancel_requested(redis, reply_id):
            await writer.end(writer.ending(cancelled=True))
            return "cancelled before it started"
        refusal = await self._over_budget(trigger.user_id)
        if refusal is not None:
            await writer.end(writer.ending(error=refusal))
            return "refused: budget"
        choice = choose(info.assistant, self.services.settings.llm)
        return await self._generate(trigger, choice, writer)

    async def _generate(self, trigger: Trigger, choice: Choice, writer: ReplyWriter) -> str:
        request = await build_request(
            self.services.pg,
            self.recall,
            self.services.settings.llm,
            choice,
            conversation_id=trigger.conversation_id,
            trigger_seq=trigger.seq,
        )
        await writer.start()
        started = time.monotonic()
        outcome = Outcome()
        try:
            provider = self.providers.get(choice.provider)
        except LLMError as exc:
            outcome.error = exc
        else:
            outcome = await ReplyPump(provider.stream(request), writer).run()
        message = await self._persist(trigger, writer.reply_id, outcome)
        usage = _usage(outcome, request)
        error = None if outcome.error is None else ReplyError(code=outcome.error.code, message=outcome.error.message)
        await writer.end(
            writer.ending(
                cancelled=outcome.cancelled,
                usage=usage,
                error=error,
                message_id=None if message is None else message.id,
                seq=None if message is None else message.seq,
            )
        )
        await self._record(trigger, writer, choice, outcome, usage, started)
        return outcome.status.value

    async def _persist(self, trigger: Trigger, reply_id: UUID, out: Outcome) -> Message | None:
        """The answer, through the write path (seq, history, read side, search). A cancelled answer keeps
        what was shown; a failed one is not stored."""
        if out.error is not None or not out.text.strip() or (out.finished is None and not out.cancelled):
            return None
        cmd = commands.PostMessage(
            conversation_id=trigger.conversation_id,
            sender_id=None,
            client_msg_id=answer_client_msg_id(reply_id),
            text=out.text,
            role=MessageRole.ASSISTANT,
        )
        try:
            result = await handlers.post_message(
                cmd, self.services.uow(), self.services.clock, self.services.settings.limits
            )
        except DomainError as exc:  # e.g. the conversation was deleted meanwhile
            log.warning("answer %s not stored: %s", reply_id, exc.message)
            out.error = LLMError(exc.code, f"the answer could not be stored: {exc.message}")
            return None
        return result.message

    async def _over_budget(self, user_id: UUID | None) -> ReplyError | None:
        budget = self.services.settings.llm.daily_token_budget
        if budget <= 0 or user_id is None:
            return None
        midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        spent = await db.tokens_spent_since(self.services.pg, user_id, midnight)
        if spent < budget:
            return None
        return ReplyError(
            code="BUDGET_EXCEEDED",
            message=f"your daily assistant budget of {budget} tokens is spent; it renews at midnight UTC",
        )

    async def _record(
        self, trigger: Trigger, writer: ReplyWriter, choice: Choice, out: Outcome, usage: Usage, started: float
    ) -> None:
        model = out.finished.model if out.finished and out.finished.model else choice.model
        cost = cost_of(usage, self.providers.prices.get(model) or self.providers.prices.get(choice.model))
        ttft = None if out.first_token_at is None else out.first_token_at - started
        duration = time.monotonic() - started
        event = events.AssistantUsageRecorded(
            event_id=uuid.uuid4(),
            occurred_at=datetime.now(UTC),
            conversation_id=trigger.conversation_id,
            reply_id=writer.reply_id,
            attempt=writer.attempt,
            user_id=trigger.user_id,
            provider=choice.provider,
            model=model,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cost=cost,
            ttft_ms=None if ttft is None else round(ttft * 1000),
            duration_ms=round(duration * 1000),
            status=out.status.value,
        )
        error = None if out.error is None else f"{out.error.code}: {out.error.message}"
        try:
            await db.record_usage(
                self.services.pg, event, error=error, shard_count=self.services.settings.redis.shard_count
            )
        except asyncpg.ForeignKeyViolationError:  # the conversation was deleted meanwhile: nothing to count
            log.info("usage of reply %s not recorded: its conversation is gone", writer.reply_id)
        REPLIES.labels(choice.provider, model, out.status.value).inc()
        TOKENS.labels(choice.provider, model, "input").inc(usage.input_tokens)
        TOKENS.labels(choice.provider, model, "output").inc(usage.output_tokens)
        COST.labels(choice.provider, model).inc(cost)
        DURATION.labels(choice.provider).observe(duration)
        if ttft is not None:
            TTFT.labels(choice.provider).observe(ttft)


def _usage(out: Outcome, request: LLMRequest) -> Usage:
    """The provider's figures; estimated when it ended before reporting them (cancel, error)."""
    if out.finished is not None:
        return out.finished.usage
    prompt = request.system + "".join(t.text for t in request.turns)
    return Usage(input_tokens=estimate_tokens(prompt), output_tokens=len(out.parts))


async def generate_reply(
    ctx: dict[str, Any], message_id: str, conversation_id: str, seq: int, user_id: str | None
) -> str:
    """The arq job. ``ctx["assistant"]`` is built by ``setup`` at worker start."""
    assistant: Assistant = ctx["assistant"]
    trigger = Trigger(
        message_id=UUID(message_id),
        conversation_id=UUID(conversation_id),
        seq=seq,
        user_id=UUID(user_id) if user_id else None,
    )
    return await assistant.answer(trigger, attempt=int(ctx.get("job_try", 1)))


async def setup(ctx: dict[str, Any], services: Services, recall: Recall | None = None) -> None:
    """Build the assistant for a worker process; recall defaults to the search's retrieval function."""
    ctx["assistant"] = Assistant(services, Providers(services.settings.llm), recall or conversation_recall(services))


async def teardown(ctx: dict[str, Any]) -> None:
    assistant: Assistant | None = ctx.get("assistant")
    if assistant is not None:
        await assistant.aclose()
