"""Table definitions (SQLAlchemy Core). Alembic migrations are the only way the schema changes;
``tests/integration/test_migrations.py`` checks these definitions and the migrated schema agree."""

from __future__ import annotations

import sqlalchemy as sa
from pgvector.sqlalchemy import Vector
from sqlalchemy.dialects import postgresql as pg

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

_now = sa.text("now()")

#: Width of ``messages.embedding``; an embedding provider of another dimension is refused at start.
EMBEDDING_DIMENSION = 384

users = sa.Table(
    "users",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("email", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("password_hash", sa.Text, nullable=False),
    sa.Column("role", sa.Text, nullable=False, server_default="user"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.CheckConstraint("role IN ('user', 'admin')", name="role"),
    sa.Index("uq_users_lower_email", sa.text("lower(email)"), unique=True),
)

conversations = sa.Table(
    "conversations",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("owner_id", pg.UUID(as_uuid=True), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    # The per-conversation sequence: bumped under the row lock by every post.
    sa.Column("last_seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("assistant_enabled", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("assistant_model", sa.Text),
    sa.Column("assistant_system_prompt", sa.Text),
    # NULL: the server's default (LLM_PROVIDER, LLM_TEMPERATURE).
    sa.Column("assistant_provider", sa.Text),
    sa.Column("assistant_temperature", sa.Float),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
)

participants = sa.Table(
    "participants",
    metadata,
    sa.Column(
        "conversation_id",
        pg.UUID(as_uuid=True),
        sa.ForeignKey("conversations.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("user_id", pg.UUID(as_uuid=True), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("role", sa.Text, nullable=False, server_default="member"),
    sa.Column("last_read_seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.CheckConstraint("role IN ('owner', 'member')", name="role"),
    # "my conversations" looks members up by user.
    sa.Index("ix_participants_user_id", "user_id"),
)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column(
        "conversation_id", pg.UUID(as_uuid=True), sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False
    ),
    sa.Column("seq", sa.BigInteger, nullable=False),
    # NULL for the assistant and system messages.
    sa.Column("sender_id", pg.UUID(as_uuid=True), sa.ForeignKey("users.id", ondelete="SET NULL")),
    sa.Column("role", sa.Text, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("client_msg_id", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.Column(
        "search",
        pg.TSVECTOR,
        sa.Computed("to_tsvector('simple', text)", persisted=True),
    ),
    # all-MiniLM-L6-v2 sentence vector (unit length), written once by the worker or backfill; NULL until then.
    sa.Column("embedding", Vector(EMBEDDING_DIMENSION)),
    sa.CheckConstraint("role IN ('user', 'assistant', 'system')", name="role"),
    sa.CheckConstraint("seq > 0", name="seq_positive"),
    # History pages and replay read by (conversation, seq): this unique index serves both.
    sa.UniqueConstraint("conversation_id", "seq"),
    # Idempotent sends. NULL sender/client ids never collide (NULLs are distinct), which is what we want.
    sa.UniqueConstraint("conversation_id", "sender_id", "client_msg_id"),
    sa.Index("ix_messages_search", "search", postgresql_using="gin"),
    # One answer per assistant reply: its client id is ``reply:{reply_id}`` and its sender is NULL, which the
    # constraint above never compares; the writer also checks under the conversation's row lock.
    sa.Index(
        "uq_messages_assistant_reply",
        "conversation_id",
        "client_msg_id",
        unique=True,
        postgresql_where=sa.text("sender_id IS NULL AND client_msg_id IS NOT NULL"),
    ),
    # Semantic search and retrieval: approximate nearest neighbours by cosine distance (``<=>``).
    sa.Index(
        "ix_messages_embedding",
        "embedding",
        postgresql_using="hnsw",
        postgresql_with={"m": 16, "ef_construction": 64},
        postgresql_ops={"embedding": "vector_cosine_ops"},
    ),
    # Messages still waiting for their vector (backfill and worker catch-up find them without a scan).
    sa.Index("ix_messages_unembedded", "created_at", postgresql_where=sa.text("embedding IS NULL")),
)

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    sa.Column("event_type", sa.Text, nullable=False),
    sa.Column("shard", sa.Integer, nullable=False),
    # The event encoded once by domain.events.encode; relayed to Redis byte for byte.
    sa.Column("payload", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    # The conversation's publish key (infrastructure/db/outbox.py); NULL in rows older than the keys.
    sa.Column("lock_key", sa.Integer),
    # The relay claims the oldest rows of the shards it owns.
    sa.Index("ix_outbox_shard_id", "shard", "id"),
    # A key's holder publishes the rows of its keys that nobody published,
    sa.Index("ix_outbox_lock_key_id", "lock_key", "id", postgresql_where=sa.text("lock_key IS NOT NULL")),
    # and the keyless rows of its shards, without reading the keyed ones (migration 0013).
    sa.Index("ix_outbox_keyless_shard_id", "shard", "id", postgresql_where=sa.text("lock_key IS NULL")),
)

refresh_tokens = sa.Table(
    "refresh_tokens",
    metadata,
    # sha256 of the opaque token; the token itself is never stored.
    sa.Column("token_hash", sa.LargeBinary, primary_key=True),
    sa.Column("user_id", pg.UUID(as_uuid=True), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    # All tokens descended from one login; reuse of a rotated token revokes the whole family.
    sa.Column("family_id", pg.UUID(as_uuid=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("used_at", sa.DateTime(timezone=True)),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.Index("ix_refresh_tokens_family_id", "family_id"),
)

revoked_tokens = sa.Table(
    "revoked_tokens",
    metadata,
    # Access-token jtis refused after logout; the record of truth (Redis only caches it).
    sa.Column("jti", sa.Text, primary_key=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)


# -- read models (flow 4): written only by the projector, `parley projections rebuild` and the read-cursor
# fast path; rebuilt from the tables above at any time. docs/analytics.md describes each for analysts.

#: Conversations are never joined to these tables by foreign key: read models may briefly hold a row the
#: write side already deleted (the projector removes it when the deletion event arrives).
read_conversation_list = sa.Table(
    "read_conversation_list",
    metadata,
    sa.Column("user_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("conversation_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("title", sa.Text, nullable=False),
    # The last message projected into this row (0: none yet) and its preview.
    sa.Column("last_seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("last_preview", sa.Text),
    sa.Column("last_sender_id", pg.UUID(as_uuid=True)),
    sa.Column("last_role", sa.Text),
    sa.Column("last_message_at", sa.DateTime(timezone=True)),
    sa.Column("read_seq", sa.BigInteger, nullable=False, server_default="0"),
    # Messages after read_seq up to last_seq not sent by this user.
    sa.Column("unread_count", sa.Integer, nullable=False, server_default="0"),
    # Last activity: the last message's time, else the conversation's creation. The list's sort key.
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # A user's list page: most recent activity first, keyset on (updated_at, conversation_id).
    sa.Index(
        "ix_read_conversation_list_user_id_updated_at_conversation_id", "user_id", "updated_at", "conversation_id"
    ),
    # The projector updates every member's row of a conversation at once.
    sa.Index("ix_read_conversation_list_conversation_id", "conversation_id"),
    # GET /api/unread reads only the rows with something unread.
    sa.Index("ix_read_conversation_list_unread", "user_id", postgresql_where=sa.text("unread_count > 0")),
)

#: Sum of a user's unread_count, kept by statement triggers on read_conversation_list (migration 0007).
read_unread_totals = sa.Table(
    "read_unread_totals",
    metadata,
    sa.Column("user_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("total", sa.BigInteger, nullable=False, server_default="0"),
)

#: What the projector applied per conversation, written in the same transaction as the change it made:
#: a message at or below applied_seq is a duplicate, one above applied_seq + 1 reveals a gap.
projection_state = sa.Table(
    "projection_state",
    metadata,
    sa.Column("conversation_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("applied_seq", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
)

#: Messages per UTC day, conversation and sender (actor_id = the nil UUID for assistant/system messages).
#: The analyst views stats_conversation_daily and stats_user_daily aggregate it.
stats_daily_activity = sa.Table(
    "stats_daily_activity",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("conversation_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("actor_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("messages", sa.BigInteger, nullable=False, server_default="0"),
    sa.Index("ix_stats_daily_activity_actor_id_day", "actor_id", "day"),
)

#: LLM calls per UTC day, conversation, triggering user (nil UUID: none), provider and model.
stats_llm_usage_daily = sa.Table(
    "stats_llm_usage_daily",
    metadata,
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("conversation_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("user_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("provider", sa.Text, primary_key=True),
    sa.Column("model", sa.Text, primary_key=True),
    sa.Column("calls", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("input_tokens", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("output_tokens", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("cost_usd", sa.Numeric(18, 6), nullable=False, server_default="0"),
)

#: Usage events already counted (their effect is additive, so they are deduplicated by event id).
projected_usage_events = sa.Table(
    "projected_usage_events",
    metadata,
    sa.Column("event_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("projected_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
)

used_ws_tickets = sa.Table(
    "used_ws_tickets",
    metadata,
    # Signed single-use WS tickets already redeemed (the record: Redis losing data cannot un-use one).
    # Rows are pruned once expired; a ticket past its expiry is refused by its signature check anyway.
    sa.Column("jti", sa.Text, primary_key=True),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)

assistant_usage = sa.Table(
    "assistant_usage",
    metadata,
    # One row per provider call: a reply retried after a crash is a second call (attempt 2).
    sa.Column("reply_id", pg.UUID(as_uuid=True), primary_key=True),
    sa.Column("attempt", sa.Integer, primary_key=True),
    sa.Column(
        "conversation_id", pg.UUID(as_uuid=True), sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False
    ),
    # The person whose message triggered the answer (budgets are per user and day).
    sa.Column("user_id", pg.UUID(as_uuid=True), sa.ForeignKey("users.id", ondelete="SET NULL")),
    sa.Column("provider", sa.Text, nullable=False),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("input_tokens", sa.Integer, nullable=False, server_default="0"),
    sa.Column("output_tokens", sa.Integer, nullable=False, server_default="0"),
    sa.Column("cost_usd", sa.Numeric(14, 6), nullable=False, server_default="0"),
    sa.Column("ttft_ms", sa.Integer),
    sa.Column("duration_ms", sa.Integer, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=_now),
    sa.CheckConstraint("status IN ('done', 'cancelled', 'error')", name="status"),
    # Daily budgets sum a user's tokens since midnight.
    sa.Index("ix_assistant_usage_user_id_created_at", "user_id", "created_at"),
)
