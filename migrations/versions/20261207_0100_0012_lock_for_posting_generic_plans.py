"""``parley_lock_for_posting`` keeps its plans: generic plans, with sequential scans ruled out.

Revision 0010 made the function plan every statement on every call (``plan_cache_mode =
force_custom_plan``), because PL/pgSQL's generic plans, on small or young tables, were sequential
scans of ``participants`` and ``conversations``: a generic plan cannot see that the arrays hold one
or a few keys. Planning per call was then most of what a post cost PostgreSQL: ``perf record
--call-graph dwarf`` of the backends under ``bench/fanout.py`` at 200 msg/s put a quarter of their
CPU in ``BuildCachedPlan`` under the function.

Every statement in the function looks rows up by key (primary keys and unique indexes, through
arrays of one to a few hundred keys), so an index scan is the right plan at every table size. With
``enable_seqscan = off`` for the function's duration, the generic plans are index scans (bitmap on
``conversations``, nested loops into ``pk_participants`` and the two unique indexes on ``messages``,
checked with ``EXPLAIN EXECUTE`` on empty and on populated tables), and they are planned once per
connection. Measured on one connection, 3,000 calls alternated (BEGIN, the function for one post,
unlock, COMMIT): PostgreSQL backend CPU 913-920 -> 373-400 us per transaction, wall 1.56-1.60 ->
0.90-0.99 ms.

The settings are the function's own (``ALTER FUNCTION ... SET``): nothing else in the session is
affected, and the nested ``parley_take_publish_keys`` sees them while it runs.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 01:00:00+00:00
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_SIGNATURE = "parley_lock_for_posting(uuid[], uuid[], uuid[], uuid[], uuid[], text[], uuid[], text[], integer[], integer, integer)"


def upgrade() -> None:
    op.execute(f"ALTER FUNCTION {_SIGNATURE} RESET ALL")
    op.execute(f"ALTER FUNCTION {_SIGNATURE} SET plan_cache_mode = force_generic_plan")
    op.execute(f"ALTER FUNCTION {_SIGNATURE} SET enable_seqscan = off")


def downgrade() -> None:
    op.execute(f"ALTER FUNCTION {_SIGNATURE} RESET ALL")
    op.execute(f"ALTER FUNCTION {_SIGNATURE} SET plan_cache_mode = force_custom_plan")
