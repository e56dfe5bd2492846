"""Settings fail fast at start-up: a value that would misbehave later is refused with its name."""

from __future__ import annotations

import pytest

from infrastructure.settings import Settings, SettingsError


def test_posts_go_through_one_transaction_at_a_time_unless_configured() -> None:
    assert Settings.from_env({}, signing=False).database.post_transactions == 1
    assert Settings.from_env({"PARLEY_POST_TRANSACTIONS": "4"}, signing=False).database.post_transactions == 4


@pytest.mark.parametrize("value", ["0", "11"], ids=["none", "more than the pool"])
def test_transactions_in_flight_outside_the_write_pool_are_refused(value: str) -> None:
    with pytest.raises(SettingsError, match="PARLEY_POST_TRANSACTIONS"):
        Settings.from_env({"PARLEY_POST_TRANSACTIONS": value, "DATABASE_POOL_SIZE": "10"}, signing=False)
