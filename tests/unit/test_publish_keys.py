"""The publish key of a conversation (infrastructure/db/outbox.py): every process of every version must
compute the same one, or two nodes could publish one conversation at once."""

from __future__ import annotations

from uuid import UUID, uuid4

from infrastructure.db.outbox import lock_key


def test_a_publish_key_is_a_stable_postgres_integer_that_spreads_conversations() -> None:
    ids = [uuid4() for _ in range(5000)]

    keys = [lock_key(cid) for cid in ids]

    assert all(-(2**31) <= k < 2**31 for k in keys)  # PostgreSQL's integer: the advisory lock's second key
    assert keys == [lock_key(cid) for cid in ids]
    assert len(set(keys)) > 4990  # 32 bits: a shared key among 5,000 conversations is rare
    # Pinned values: a change here would let a node of the new version and one of the old publish the
    # same conversation at once during a rolling upgrade.
    assert lock_key(UUID("12345678-1234-5678-1234-56781234567b")) == -256176086
    assert lock_key(UUID("ffffffff-ffff-4fff-8000-000000000011")) == -861345666
