"""Failpoints: named places in the code where a crash test makes the real process die on the spot.

``PARLEY_FAILPOINTS=after-commit`` (comma-separated names) arms them, read once at import; unset (as
in every deployment) each check is one lookup in an empty set. A hit is SIGKILL of the process itself:
no ``finally``, no goodbye, exactly what a crashed machine does, at exactly the place the test wants
(``tests/e2e/test_crashes.py``), instead of a kill whose timing decides what it tests.

Names:
- ``after-commit``: a transaction of the unit of work has committed (its outbox rows are durable) and
  nothing of it is published nor answered yet (``infrastructure/db/unit_of_work.py``).
"""

from __future__ import annotations

import os
import signal

ARMED = frozenset(name.strip() for name in os.environ.get("PARLEY_FAILPOINTS", "").split(",") if name.strip())


def hit(name: str) -> None:
    if name in ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
