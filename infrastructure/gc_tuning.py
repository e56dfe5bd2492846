"""The garbage collector of a long-running server process (API nodes).

CPython's cyclic collector runs a young collection every 700 net allocations, and now and then a full
one that walks every object the process holds. An API node holds hundreds of thousands of objects that
live as long as it does (modules, the app, the routes, SQLAlchemy's and Litestar's metadata), and at
1,000 msg/s it allocates fast: a full collection then paused the event loop for up to 237 ms, which no
socket is served during (``gc.callbacks`` timed in each node of ``bench.fanout --rate 1000``).
``settle`` runs once the process has started: what is alive then stays alive, so it goes into the
permanent generation (``gc.freeze``) and no collection walks it again; young collections run after
``YOUNG_THRESHOLD`` allocations, so fewer of them walk more objects each. Cycles are still collected.

Measured in the same benchmark (per node, over the 20 s of load, alternated runs at 500 and 1,000
msg/s): without it 190 to 345 young, 17 to 32 middle and 2 or 3 full collections, 0.6 to 0.9 s spent
collecting, the longest pause 177 to 224 ms; with it 21 to 24 young, 1 or 2 middle and no full one,
0.16 to 0.23 s, the longest pause 31 to 61 ms. Delivery p99 at 500 msg/s went from 142 and 151 ms to
41 and 55 ms (``docs/perf/README.md``).
"""

from __future__ import annotations

import gc

#: Net allocations between young collections (CPython's default is 700).
YOUNG_THRESHOLD = 10_000


def settle() -> None:
    """Freeze what the started process holds and space out young collections. Only in a process that
    serves one app for its whole life (``parley api``): objects frozen here that later form garbage
    cycles are never collected, which a test process building app after app would accumulate."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
