"""``parley_lock_for_posting`` keeps its plans: generic plans, each lookup one index probe per key.

Revision 0010 made the function plan every statement on every call (``plan_cache_mode =
force_custom_plan``), because PL/pgSQL's generic plans, on small or young tables, were sequential
scans of ``participants`` and ``conversations``: a generic plan cannot see that the arrays hold one
or a few keys. Planning per call was then most of what a post cost PostgreSQL: ``perf record
--call-graph dwarf`` of the backends under ``bench/fanout.py`` at 200 msg/s put a quarter of their
CPU in ``BuildCachedPlan`` under the function.

Every statement in the function looks rows up by key (primary keys and unique indexes, through
arrays of one to a few hundred keys), so an index probe per key is the right plan at every table
size, and this revision makes it the only plan, so that plans can be kept:

- ``enable_seqscan = off`` for the function's duration: the conversations are locked through a
  bitmap scan of ``pk_conversations``, never a sequential scan, however small the table;
- the member, earlier-send and earlier-reply lookups probe their index once per key of the arrays
  (``LATERAL (... OFFSET 0)``: the subquery is not flattened into a join, so its only plan is an
  index scan parameterized by the key). As joins, generic plans could scan a small index whole for
  every post, as they did with ``uq_messages_assistant_reply`` while it held few rows (checked with
  ``EXPLAIN EXECUTE`` of generic plans on an empty and on a populated database);
- ``plan_cache_mode = force_generic_plan``: planned once per connection.

Alone on one connection, 3,000 calls per variant alternated (BEGIN, the function for one post,
unlock, COMMIT): PostgreSQL backend CPU 913-920 -> 373-400 us per transaction, wall 1.56-1.60 ->
0.90-0.99 ms. The settings are the function's own (``SET`` clauses): nothing else in the session is
affected, and the nested ``parley_take_publish_keys`` sees them while it runs. The rows returned are
the same as revision 0011's, in the same order.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 01:00:00+00:00
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_SIGNATURE = "parley_lock_for_posting(uuid[], uuid[], uuid[], uuid[], uuid[], text[], uuid[], text[], integer[], integer, integer)"

_FUNCTION = """
CREATE OR REPLACE FUNCTION parley_lock_for_posting(
    conversation_ids uuid[],
    member_conversations uuid[], member_users uuid[],
    sent_conversations uuid[], sent_senders uuid[], sent_client_ids text[],
    reply_conversations uuid[], reply_client_ids text[],
    lock_keys integer[], lock_namespace integer, lease_ms integer
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
) LANGUAGE plpgsql VOLATILE
  SET plan_cache_mode = force_generic_plan
  SET enable_seqscan = off
AS $$
#variable_conflict use_column
BEGIN
    -- The publish keys first (a node that publishes its own commits; an empty array otherwise), before
    -- any row lock: see migration 0011's docstring for why this cannot deadlock.
    PERFORM parley_take_publish_keys(lock_keys, lock_namespace, lease_ms);
    -- In id order, as every batch takes them: batches on other connections never deadlock.
    RETURN QUERY
        SELECT 'conversation', c.id, c.id, NULL::uuid, NULL::text, c.title, c.owner_id, c.last_seq,
               c.assistant_enabled, c.assistant_model, c.assistant_system_prompt, c.assistant_provider,
               c.assistant_temperature, c.created_at, c.updated_at, clock_timestamp(),
               NULL::bigint, NULL::text, NULL::text
        FROM conversations c WHERE c.id = ANY(conversation_ids) ORDER BY c.id FOR UPDATE;
    -- A fresh snapshot from here on: everything committed before the locks were granted. Each lookup
    -- probes its index once per key (OFFSET 0 keeps the subquery from becoming a join).
    RETURN QUERY
        SELECT 'member', k.conversation_id, NULL::uuid, k.user_id, p.role, NULL::text, NULL::uuid,
               NULL::bigint, NULL::boolean, NULL::text, NULL::text, NULL::text, NULL::double precision,
               NULL::timestamptz, NULL::timestamptz, NULL::timestamptz, NULL::bigint, NULL::text, NULL::text
        FROM unnest(member_conversations, member_users) AS k(conversation_id, user_id)
        CROSS JOIN LATERAL (
            SELECT p.role FROM participants p
            WHERE p.conversation_id = k.conversation_id AND p.user_id = k.user_id OFFSET 0
        ) p;
    -- Users' sends through the unique index; the assistant's (NULL sender) through its partial one.
    RETURN QUERY
        SELECT 'sent', m.conversation_id, m.id, m.sender_id, m.role, NULL::text, NULL::uuid, NULL::bigint,
               NULL::boolean, NULL::text, NULL::text, NULL::text, NULL::double precision,
               m.created_at, NULL::timestamptz, NULL::timestamptz, m.seq, m.text, m.client_msg_id
        FROM unnest(sent_conversations, sent_senders, sent_client_ids) AS k(conversation_id, sender_id, client_msg_id)
        CROSS JOIN LATERAL (
            SELECT m.conversation_id, m.id, m.sender_id, m.role, m.created_at, m.seq, m.text, m.client_msg_id
            FROM messages m
            WHERE m.conversation_id = k.conversation_id AND m.sender_id = k.sender_id
              AND m.client_msg_id = k.client_msg_id OFFSET 0
        ) m
        UNION ALL
        SELECT 'sent', m.conversation_id, m.id, m.sender_id, m.role, NULL::text, NULL::uuid, NULL::bigint,
               NULL::boolean, NULL::text, NULL::text, NULL::text, NULL::double precision,
               m.created_at, NULL::timestamptz, NULL::timestamptz, m.seq, m.text, m.client_msg_id
        FROM unnest(reply_conversations, reply_client_ids) AS k(conversation_id, client_msg_id)
        CROSS JOIN LATERAL (
            SELECT m.conversation_id, m.id, m.sender_id, m.role, m.created_at, m.seq, m.text, m.client_msg_id
            FROM messages m
            WHERE m.conversation_id = k.conversation_id AND m.sender_id IS NULL
              AND m.client_msg_id = k.client_msg_id OFFSET 0
        ) m;
END
$$
"""


def upgrade() -> None:
    op.execute(_FUNCTION)


def downgrade() -> None:
    # The previous revision's function, from its own file (one text of it in the repository).
    path = Path(__file__).with_name("20261202_1200_0011_publish_keys.py")
    spec = importlib.util.spec_from_file_location("parley_migration_0011", path)
    assert spec is not None and spec.loader is not None
    previous = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(previous)
    op.execute(f"DROP FUNCTION {_SIGNATURE}")
    op.execute(previous._FUNCTION)
