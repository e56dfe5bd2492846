"""The outbox's keyless rows get an index of their own: a key holder's commit reads its leftovers, not the backlog.

Every commit statement of a key holder (a post batch on an API node that publishes its own commits)
also reads the rows it has to publish before its own (``outbox.LEFTOVERS_SQL``): the rows of the keys
it holds that nobody published, and the keyless rows of those keys' shards. The unit of work plans it
generically and without sequential scans (its BEGIN). The keyed branch has ``ix_outbox_lock_key_id``
(revision 0011). The keyless branch (``lock_key IS NULL AND shard = ANY(...)``) had only
``ix_outbox_shard_id``, the relay's, which holds every row of a shard, keyed ones included, and can
only drop the keyed ones after reading them. With the statistics of an empty outbox or of a full one,
the generic plan did not even take that index: it read the whole outbox, every shard, in id order
through ``pk_outbox`` (no sort) and filtered every row; with no statistics yet, every row of the
shards through ``ix_outbox_shard_id``.

That costs nothing while the outbox is empty, as it is in steady state. It is at its worst right after
a Redis outage: during the outage the nodes leave publishing to the relay and the outbox fills with
keyed rows; once Redis answers again, every post read that whole backlog, once per commit, while the
relay drained it, exactly when the system has to catch up.

``ix_outbox_keyless_shard_id`` holds only keyless rows, and the plan becomes a ``BitmapOr`` of the two
partial indexes: each branch reads only the rows it returns. Keyless rows are those written before
revision 0011, or by a process of an older release during a rolling upgrade; every row written since
carries a key, so the index is empty in steady state and a keyed insert does not touch it. The relay's
claim (every row of its shards, keyed or not) keeps ``ix_outbox_shard_id``: the partial index cannot
serve it.

Measured on this machine's PostgreSQL 16 (two cores, shared with a running benchmark): 50,000 keyed rows
of other keys in the holder's shard, 2 of its key, 3 keyless; ``LEFTOVERS_SQL`` as a prepared statement
under the unit of work's settings, 200 executions per variant alternated in blocks, two runs: rows read
50,005 -> 5; per call (wall, from the client over a Unix socket) mean 13.0-18.2 ms -> 0.30-0.31 ms, p50
13.4-17.6 ms -> 0.17-0.27 ms. With the backlog in the other shards only, the same: 50,005 rows read
without the index (the whole outbox), 5 with it. ``tests/integration/test_outbox_leftovers_plan.py``
fails without the index.

A plain ``CREATE INDEX`` (Alembic runs each revision in a transaction) holds back the outbox's inserts
while it reads the table: milliseconds on a steady-state outbox.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 03:00:00+00:00
"""

from __future__ import annotations

from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("CREATE INDEX ix_outbox_keyless_shard_id ON outbox (shard, id) WHERE lock_key IS NULL")


def downgrade() -> None:
    op.execute("DROP INDEX ix_outbox_keyless_shard_id")
