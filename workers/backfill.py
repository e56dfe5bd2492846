"""`parley embeddings backfill`: embed every message that has no vector yet.

For existing data (messages posted before the worker ran, or during a worker outage). It walks the
messages without a vector oldest first (the partial index ``ix_messages_unembedded``), one model call
per batch. Safe to rerun, to interrupt, and to run beside workers: a vector is written only where none
is stored (``infrastructure/embeddings/store.py``), so nothing is embedded twice into the table.
Progress: a bar on a terminal, a log line per ~5 % otherwise.
"""

from __future__ import annotations

import logging
import sys
import time

from infrastructure.bootstrap import bootstrap
from infrastructure.embeddings.store import count_unembedded, embed_messages, unembedded_page
from infrastructure.settings import Settings

log = logging.getLogger("parley.backfill")


class Progress:
    def __init__(self, total: int, *, bar: bool) -> None:
        self.total = max(total, 1)
        self.done = 0
        self._bar = bar
        self._started = time.monotonic()
        self._next_log = 0.0

    def advance(self, count: int) -> None:
        self.done += count
        rate = self.done / max(time.monotonic() - self._started, 1e-6)
        share = min(self.done / self.total, 1.0)
        if self._bar:
            filled = int(share * 30)
            sys.stderr.write(f"\rembedding [{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} {rate:.0f}/s")
            sys.stderr.flush()
        elif share >= self._next_log or self.done >= self.total:
            log.info("backfill: %d/%d messages (%.0f%%, %.0f/s)", self.done, self.total, share * 100, rate)
            self._next_log = share + 0.05

    def finish(self) -> None:
        if self._bar:
            sys.stderr.write("\n")


async def main(settings: Settings, *, batch_size: int = 64, progress: str = "auto") -> int:
    services = await bootstrap(settings)
    try:
        await services.embeddings.ready()
        total = await count_unembedded(services.pg)
        bar = progress == "bar" or (progress == "auto" and sys.stderr.isatty())
        meter = Progress(total, bar=bar)
        written = 0
        after = None
        while True:
            ids, after = await unembedded_page(services.pg, limit=batch_size, after=after)
            if not ids:
                break
            written += len(await embed_messages(services.pg, services.embeddings, ids))
            meter.advance(len(ids))
        meter.finish()
        left = await count_unembedded(services.pg)
        print(f"backfill done: {written} messages embedded, {left} left without a vector")
        return 0
    finally:
        await services.close()
