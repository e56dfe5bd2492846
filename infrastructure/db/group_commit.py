"""Group commit, flow 1: the posts of one process coalesced into shared transactions.

Every post used to be a transaction of its own (five round trips, a WAL flush, and most of an API
node's CPU at load). Here a post waits for a free slot (``max_in_flight`` transactions at once); posts
that arrive while every slot is busy go together into the next transaction (up to ``max_batch``),
through ``domain.handlers.post_messages``: conversations locked in id order, seqs assigned per
conversation in arrival order, one statement for all the writes, one commit. A post alone on an idle
node starts at once (no timer, no added latency); under load the batches grow by themselves, which is
what keeps the cost per message falling as the rate rises.

Transactions in flight at once never share a conversation: the posts of a conversation that an
unfinished transaction holds wait for the next one. Two would only queue on the row lock in
PostgreSQL, each holding a connection and paying its own commit, where one later, bigger batch pays
one (a hot conversation gets one transaction at a time, as full as the backlog). It also keeps each
conversation's posts in arrival order across batches.

Each caller still gets its own answer, only after the commit that made its message durable: its
``PostResult``, or its own ``DomainError`` (not a member, no such conversation) while the rest of the
batch commits. Bad input never reaches a batch (``prepare_post`` runs first, in the caller). If a whole
batch fails (the database went away, a bug), its posts are tried again one by one, so one poisoned
post cannot fail its neighbours and each caller gets the error of its own post.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from uuid import UUID

from prometheus_client import Histogram

from domain import commands, handlers
from domain.limits import Limits
from infrastructure.db.unit_of_work import SqlUnitOfWork

#: Posts per transaction at most (a bigger backlog is split over the next free slots).
MAX_BATCH = 256

BATCH_SIZE = Histogram(
    "parley_post_batch_size", "Posts per group-commit transaction", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
# Where a post's time goes on the node: waiting for a transaction (queueing: more posts than one
# transaction at a time carries) or in it (PostgreSQL: round trips, lock waits, the commit's flush).
_STEP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
QUEUE_SECONDS = Histogram(
    "parley_post_queue_seconds", "From a post's arrival to the start of its transaction", buckets=_STEP_BUCKETS
)
TRANSACTION_SECONDS = Histogram(
    "parley_post_transaction_seconds",
    "One group-commit transaction, from taking a connection to the commit",
    buckets=_STEP_BUCKETS,
)


@dataclass(slots=True)
class _Pending:
    cmd: commands.PostMessage
    done: asyncio.Future[handlers.PostResult]
    arrived: float = field(default_factory=time.perf_counter)


class GroupCommit:
    def __init__(
        self,
        new_uow: Callable[[], SqlUnitOfWork],
        limits: Limits,
        *,
        max_in_flight: int,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._new_uow = new_uow
        self._limits = limits
        self._max_in_flight = max_in_flight
        self._max_batch = max_batch
        self._waiting: list[_Pending] = []
        self._running: set[asyncio.Task[None]] = set()
        #: Conversations written by a transaction in flight: their posts wait for the next batch.
        self._busy: set[UUID] = set()

    async def post(self, cmd: commands.PostMessage) -> handlers.PostResult:
        """Post and return once the message is committed (or the original, for a repeated client id).
        Raises the post's own ``DomainError`` (bad input before anything is queued)."""
        pending = _Pending(handlers.prepare_post(cmd, self._limits), asyncio.get_running_loop().create_future())
        self._waiting.append(pending)
        self._start_batches()
        # A caller that goes away (socket closed) cancels only this future, not the transaction its post
        # is in (``_answer`` skips it). No ``asyncio.shield``: it would cost every post a turn of the loop.
        return await pending.done

    async def close(self) -> None:
        """Let the transactions in flight finish (their callers are answered)."""
        while self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    def _start_batches(self) -> None:
        while self._waiting and len(self._running) < self._max_in_flight:
            batch: list[_Pending] = []
            left: list[_Pending] = []
            for pending in self._waiting:
                if pending.cmd.conversation_id in self._busy or len(batch) >= self._max_batch:
                    left.append(pending)
                else:
                    batch.append(pending)
            if not batch:
                return  # every waiting post's conversation is in flight
            self._waiting = left
            BATCH_SIZE.observe(len(batch))
            now = time.perf_counter()
            for pending in batch:
                QUEUE_SECONDS.observe(now - pending.arrived)
            conversations = {p.cmd.conversation_id for p in batch}
            self._busy |= conversations
            task = asyncio.create_task(self._commit(batch))
            self._running.add(task)
            task.add_done_callback(functools.partial(self._finished, conversations))

    def _finished(self, conversations: set[UUID], task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._busy -= conversations
        self._start_batches()

    async def _commit(self, batch: list[_Pending]) -> None:
        uow = self._new_uow()
        started = time.perf_counter()
        try:
            outcomes = await handlers.post_messages([p.cmd for p in batch], uow, uow.clock)
            TRANSACTION_SECONDS.observe(time.perf_counter() - started)
        except asyncio.CancelledError:
            for pending in batch:  # shut down mid-transaction: nobody was acked
                # (the commit may or may not have happened: a retry with the same client_msg_id is safe)
                _answer(pending, ConnectionError("the server is shutting down; send it again"))
            raise
        except Exception as exc:
            if len(batch) == 1:
                _answer(batch[0], exc)
                return
            for pending in batch:  # one at a time: each caller gets the outcome of its own post
                await self._commit([pending])
            return
        for pending, outcome in zip(batch, outcomes, strict=True):
            _answer(pending, outcome)


def _answer(pending: _Pending, outcome: handlers.PostResult | BaseException) -> None:
    if pending.done.done():
        return
    if isinstance(outcome, BaseException):
        pending.done.set_exception(outcome)
    else:
        pending.done.set_result(outcome)
