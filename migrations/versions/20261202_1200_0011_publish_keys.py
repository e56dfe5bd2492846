"""Publish keys: the API node publishes its own commits from memory, in order, without a second transaction.

A node used to publish what it committed in a second transaction: lock the shards (waiting for the
other node, which held them for its own publish), take the oldest rows of those shards out of the
outbox, XADD, commit. Three more round trips and the wait on every delivery. Now each outbox row
carries its conversation's **publish key** (``lock_key``, a 32-bit hash of the conversation id), and
a node that writes to a conversation first takes that key as a *session* advisory lock
(``pg_advisory_lock(KEY_NAMESPACE, key)``), before the conversation's row lock, and keeps it past its
COMMIT: it XADDs the rows it committed straight from memory, then deletes them and lets the key go in
one statement. Whoever writes the conversation next waits for the key, so the events of one
conversation reach its stream in commit order, whichever node wrote them.

Rows of a key that nobody is publishing (written by a worker or the CLI, or left by a node that died
or could not reach Redis) are published first by the next holder of the key (its commit statement
reads them ``FOR UPDATE``: a previous holder's delete that has not committed yet is waited out, then
skipped), or by the relay, which takes a key only with ``pg_try_advisory_xact_lock`` and skips every
row of a key it cannot take.

Why keys before row locks cannot deadlock: a transaction takes all its keys, in ascending order,
before its first conversation row lock, and never waits for a key while holding a row lock; a holder
past its COMMIT holds no row lock and waits for nothing but Redis and its own delete. A key held by a
node that stopped (SIGSTOP, a hung event loop) is a lease: ``idle_session_timeout`` is set while the
keys are held, so PostgreSQL ends that session and frees its keys after ``lease_ms``; the rows are the
relay's then. ``idle_in_transaction_session_timeout`` bounds the transaction itself the same way.

``parley_lock_for_posting`` takes the keys in the round trip that already locks a post batch's
conversations (three new parameters; an empty ``lock_keys`` takes none, as in the worker).

Rows written before this migration (or by a process of the previous release during a rolling
upgrade) have no key: the relay publishes them as before, and a key holder publishes the keyless rows
of its shards ahead of its own, so a conversation's older events still come first.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 12:00:00+00:00
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_OLD_SIGNATURE = "parley_lock_for_posting(uuid[], uuid[], uuid[], uuid[], uuid[], text[], uuid[], text[])"
_NEW_SIGNATURE = "parley_lock_for_posting(uuid[], uuid[], uuid[], uuid[], uuid[], text[], uuid[], text[], integer[], integer, integer)"

#: Takes publish keys as session locks, ascending, and sets their lease (the session's idle timeout, and
#: the idle-in-transaction timeout of the transaction it runs in); nothing for an empty array. Called by
#: ``parley_lock_for_posting`` and, for keys taken outside it, by ``outbox.TAKE_KEYS_SQL``.
_TAKE_KEYS = """
CREATE FUNCTION parley_take_publish_keys(lock_keys integer[], lock_namespace integer, lease_ms integer)
RETURNS integer LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    publish_key integer;
BEGIN
    IF cardinality(lock_keys) > 0 THEN
        PERFORM set_config('idle_session_timeout', lease_ms::text, false);
        PERFORM set_config('idle_in_transaction_session_timeout', lease_ms::text, true);
        FOREACH publish_key IN ARRAY ARRAY(SELECT DISTINCT x FROM unnest(lock_keys) AS x ORDER BY x) LOOP
            PERFORM pg_advisory_lock(lock_namespace, publish_key);
        END LOOP;
    END IF;
    RETURN cardinality(lock_keys);
END
$$
"""

_FUNCTION = """
CREATE FUNCTION parley_lock_for_posting(
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
) LANGUAGE plpgsql VOLATILE SET plan_cache_mode = force_custom_plan AS $$
#variable_conflict use_column
BEGIN
    -- The publish keys first (a node that publishes its own commits; an empty array otherwise), before
    -- any row lock: see the migration's docstring for why this cannot deadlock.
    PERFORM parley_take_publish_keys(lock_keys, lock_namespace, lease_ms);
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
    op.execute("ALTER TABLE outbox ADD COLUMN lock_key integer")
    op.execute("CREATE INDEX ix_outbox_lock_key_id ON outbox (lock_key, id) WHERE lock_key IS NOT NULL")
    op.execute(f"DROP FUNCTION {_OLD_SIGNATURE}")
    op.execute(_TAKE_KEYS)
    op.execute(_FUNCTION)


def downgrade() -> None:
    # The previous revision's function, from its own file (one text of it in the repository).
    path = Path(__file__).with_name("20261202_0900_0010_lock_for_posting.py")
    spec = importlib.util.spec_from_file_location("parley_migration_0010", path)
    assert spec is not None and spec.loader is not None
    previous = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(previous)
    op.execute(f"DROP FUNCTION {_NEW_SIGNATURE}")
    op.execute("DROP FUNCTION parley_take_publish_keys(integer[], integer, integer)")
    op.execute(previous._FUNCTION)
    op.execute("DROP INDEX ix_outbox_lock_key_id")
    op.execute("ALTER TABLE outbox DROP COLUMN lock_key")
