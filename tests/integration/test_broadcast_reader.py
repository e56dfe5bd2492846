"""The broadcast reader of the WS nodes' live streams (signals, list changes, replies): it starts at the
stream's end, sees every entry added after that once and in order, including one added while no read is
blocked, and keeps going after Redis errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from infrastructure.bootstrap import Services
from infrastructure.redis.broadcast import BroadcastReader

STREAM = "parley:test:broadcast"


@pytest.fixture
async def reader(services: Services) -> AsyncIterator[tuple[BroadcastReader, list[bytes], asyncio.Event]]:
    await services.redis.delete(STREAM)
    await services.redis.xadd(STREAM, {"x": b"before-start"})
    seen: list[bytes] = []
    stop = asyncio.Event()
    yield BroadcastReader(services.redis, STREAM, b"x", seen.append), seen, stop
    stop.set()
    await services.redis.delete(STREAM)


async def _until(condition: Callable[[], bool], timeout: float = 5) -> None:
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


async def test_every_entry_after_the_start_is_routed_once_in_order_even_between_two_reads(
    services: Services, reader: tuple[BroadcastReader, list[bytes], asyncio.Event]
) -> None:
    broadcast, seen, stop = reader
    task = asyncio.create_task(broadcast.run(stop))
    await asyncio.sleep(1.3)  # at least one blocking read came back empty: "$" would now skip entries
    for i in range(5):
        await services.redis.xadd(STREAM, {"x": f"m{i}".encode()})

    await _until(lambda: len(seen) >= 5)
    stop.set()
    await task

    assert seen == [b"m0", b"m1", b"m2", b"m3", b"m4"]  # not "before-start": it starts at the end


async def test_a_restarted_reader_goes_on_from_the_last_entry_it_routed(
    services: Services, reader: tuple[BroadcastReader, list[bytes], asyncio.Event]
) -> None:
    broadcast, seen, stop = reader
    task = asyncio.create_task(broadcast.run(stop))
    await asyncio.sleep(0.1)
    await services.redis.xadd(STREAM, {"x": b"first"})
    await _until(lambda: seen == [b"first"])
    stop.set()
    await task
    await services.redis.xadd(STREAM, {"x": b"while-stopped"})

    again = asyncio.Event()
    task = asyncio.create_task(broadcast.run(again))
    await _until(lambda: len(seen) == 2)
    again.set()
    await task

    assert seen == [b"first", b"while-stopped"]
