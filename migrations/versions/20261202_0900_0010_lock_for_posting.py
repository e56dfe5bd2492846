"""``parley_lock_for_posting``: a post batch's locks and reads in one round trip.

A post locks its conversations, then reads the senders' memberships and the messages already stored
under its ``client_msg_id``s. The reads must come *after* the locks: a statement that waited for a
lock still reads other tables from the snapshot it started with, so a membership removed or a racing
duplicate committed while it waited would be missed. As three statements that was three round trips
of a post's six (with BEGIN, the write and COMMIT); at low load, where every post is a batch of one,
round trips are what the sender's ack waits on.

In a ``VOLATILE`` PL/pgSQL function each statement takes a fresh snapshot (READ COMMITTED), so the
reads after the lock see everything committed before the lock was granted, exactly as separate
statements did, in one round trip. The rows come back in one shape, told apart by ``kind``
(``conversation``, ``member``, ``sent``; ``id`` is the conversation's or the message's, ``user_id``
the member or the sender); columns that do not apply to a kind are NULL. The column
types are the tables' own: a migration that changes one of those columns replaces this function too.

``plan_cache_mode = force_custom_plan``: PL/pgSQL caches each statement's plan, and after five calls
settles on a generic plan, which cannot see that the arrays hold one or a few keys; on small or young
tables those generic plans were sequential scans of ``participants`` and ``conversations`` on every
post (measured in ``pg_stat_user_tables`` under ``bench/fanout.py``). Planned per call, as the separate
statements were, every lookup goes through its index.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 09:00:00+00:00
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_FUNCTION = """
CREATE FUNCTION parley_lock_for_posting(
    conversation_ids uuid[],
    member_conversations uuid[], member_users uuid[],
    sent_conversations uuid[], sent_senders uuid[], sent_client_ids text[],
    reply_conversations uuid[], reply_client_ids text[]
) RETURNS TABLE (
    kind text,
    conversation_id uuid,
    id uuid,
    user_id uuid,
    role text,
    title text,
    owner_id uuid,
    last_seq bigint,
    assistant_enabled boolean,
    assistant_model text,
    assistant_system_prompt text,
    assistant_provider text,
    assistant_temperature double precision,
    created_at timestamptz,
    updated_at timestamptz,
    db_now timestamptz,
    seq bigint,
    text text,
    client_msg_id text
) LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_custom_plan AS $$
#variable_conflict use_column
BEGIN
    -- In id order, as every batch takes them: batches on other connections never deadlock.
    RETURN QUERY
        SELECT 'conversation', c.id, c.id, NULL::uuid, NULL::text, c.title, c.owner_id, c.last_seq,
               c.assistant_enabled, c.assistant_model, c.assistant_system_prompt, c.assistant_provider,
               c.assistant_temperature, c.created_at, c.updated_at, clock_timestamp(),
               NULL::bigint, NULL::text, NULL::text
        FROM conversations c WHERE c.id = ANY(conversation_ids) ORDER BY c.id FOR UPDATE;
    -- A fresh snapshot from here on: everything committed before the locks were granted.
    RETURN QUERY
        SELECT 'member', p.conversation_id, NULL::uuid, p.user_id, p.role, NULL::text, NULL::uuid,
               NULL::bigint, NULL::boolean, NULL::text, NULL::text, NULL::text, NULL::double precision,
               NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, NULL::bigint, NULL::text, NULL::text
        FROM unnest(member_conversations, member_users) AS k(conversation_id, user_id)
        JOIN participants p ON p.conversation_id = k.conversation_id AND p.user_id = k.user_id;
    -- Users' sends through the unique index; the assistant's (NULL sender) through its partial one.
    RETURN QUERY
        SELECT 'sent', m.conversation_id, m.id, m.sender_id, m.role, NULL::text, NULL::uuid, NULL::bigint,
               NULL::boolean, NULL::text, NULL::text, NULL::text, NULL::double precision,
               m.created_at, NULL::timestamptz, NULL::timestamptz, m.seq, m.text, m.client_msg_id
        FROM unnest(sent_conversations, sent_senders, sent_client_ids) AS k(conversation_id, sender_id, client_msg_id)
        JOIN messages m ON m.conversation_id = k.conversation_id AND m.sender_id = k.sender_id
                       AND m.client_msg_id = k.client_msg_id
        UNION ALL
        SELECT 'sent', m.conversation_id, m.id, m.sender_id, m.role, NULL::text, NULL::uuid, NULL::bigint,
               NULL::boolean, NULL::text, NULL::text, NULL::text, NULL::double precision,
               m.created_at, NULL::timestamptz, NULL::timestamptz, m.seq, m.text, m.client_msg_id
        FROM unnest(reply_conversations, reply_client_ids) AS k(conversation_id, client_msg_id)
        JOIN messages m ON m.conversation_id = k.conversation_id AND m.sender_id IS NULL
                       AND m.client_msg_id = k.client_msg_id;
END
$$
"""


def upgrade() -> None:
    op.execute(_FUNCTION)


def downgrade() -> None:
    op.execute("DROP FUNCTION parley_lock_for_posting(uuid[], uuid[], uuid[], uuid[], uuid[], text[], uuid[], text[])")
