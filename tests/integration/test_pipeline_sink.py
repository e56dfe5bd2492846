"""Many tasks' pipelines merged into shared round trips: each task gets exactly its own results."""

from __future__ import annotations

import asyncio
from typing import Any

from infrastructure.bootstrap import Services
from infrastructure.redis.pipeline_sink import PipelineSink


async def test_concurrent_tasks_get_their_own_results_in_order(services: Services) -> None:
    sink = PipelineSink(services.redis)

    async def task(n: int) -> list[Any]:
        def build(pipe: Any) -> None:
            for _ in range(3):
                pipe.incr(f"sink-test:{n}")
            pipe.get(f"sink-test:{n}")

        return await sink.execute(build)

    results = await asyncio.gather(*(task(n) for n in range(50)))
    await sink.close()

    assert all(r == [1, 2, 3, b"3"] for r in results)


async def test_a_failing_command_is_returned_to_its_task_only(services: Services) -> None:
    sink = PipelineSink(services.redis)
    await services.redis.set("sink-test:text", "not a number")

    def bad(pipe: Any) -> None:
        pipe.incr("sink-test:text")

    def good(pipe: Any) -> None:
        pipe.incr("sink-test:fine")

    failed, fine = await asyncio.gather(sink.execute(bad), sink.execute(good))
    await sink.close()

    assert isinstance(failed[0], Exception) and fine == [1]
