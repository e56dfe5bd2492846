"""When a person's message asks the assistant something (``domain.assistant.wants_reply``), queue the
reply job. Called by the worker's dispatcher for every ``message_posted`` event of the ``assistant``
consumer group.

The job id comes from the trigger message, so the event delivered twice (a relay re-publish, a
consumer retry, a re-XADD) queues one job: arq refuses an id it already holds (queued, running, or
its result kept). Past that, the job itself finds an answer already stored and writes nothing.
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from arq.connections import ArqRedis
from arq.worker import func

from domain import events
from domain.assistant import reply_id_for, wants_reply
from infrastructure.bootstrap import Services
from infrastructure.db import assistant as db
from infrastructure.redis import keys, replies
from infrastructure.settings import LLMSettings
from workers.assistant import generate_reply

log = logging.getLogger("parley.assistant")

#: arq runs a job again after a crash (kill -9) once this many tries have not finished it; later
#: tries only close the reply with an error.
MAX_TRIES = 3
#: A job's own timeout beyond the provider's total timeout: storing the answer and usage (milliseconds).
#: Short on purpose: after a crash arq retries the job only once this timeout + 10 s has passed.
JOB_MARGIN_SECONDS = 5


def reply_job(settings: LLMSettings) -> Any:
    """The arq function entry for ``WorkerSettings.functions``."""
    return func(
        generate_reply,
        name="generate_reply",
        timeout=settings.total_timeout + JOB_MARGIN_SECONDS,
        max_tries=MAX_TRIES,
    )


async def on_message_posted(event: events.MessagePosted, services: Services, queue: ArqRedis) -> UUID | None:
    """Queue an answer if this message asks for one; returns the reply id (None: no answer wanted)."""
    message = event.message
    info = await db.conversation_assistant(services.pg, message.conversation_id)
    if info is None or not wants_reply(message, info.assistant, info.member_count):
        return None
    reply_id = reply_id_for(message.id)
    await replies.announce(services.redis, reply_id, message.conversation_id, message.sender_id)
    job = await queue.enqueue_job(
        "generate_reply",
        str(message.id),
        str(message.conversation_id),
        message.seq,
        None if message.sender_id is None else str(message.sender_id),
        _job_id=keys.reply_job_id(message.id),
    )
    if job is None:
        log.debug("reply %s already queued or done", reply_id)
    return reply_id
