"""The embedding provider interface, and the one per-process instance everything shares.

A provider turns texts into unit-length vectors. Two exist: the local model (``local.py``, default)
and any OpenAI-compatible ``/v1/embeddings`` endpoint (``remote.py``). ``Embedder`` wraps the
configured one: it loads it once per process on first use (the worker at start, the API at the first
semantic search), checks its dimension against the ``messages.embedding`` column, and turns every
failure into ``Unavailable`` (HTTP 503 ``UNAVAILABLE``) so callers never get wrong results.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Protocol

from domain.errors import Unavailable
from infrastructure.db.tables import EMBEDDING_DIMENSION
from infrastructure.settings import EmbeddingSettings

log = logging.getLogger("parley.embeddings")

Vector = list[float]

#: After a failed load, callers get ``Unavailable`` at once for this long before the next attempt.
RETRY_LOAD_SECONDS = 30.0


class EmbeddingsUnavailable(Unavailable):
    """No provider is configured, the model is missing, or the endpoint failed."""


class EmbeddingProvider(Protocol):
    """What a provider must do. ``load`` is called once before any ``embed``."""

    #: Human-readable identity, e.g. ``local:numpy:all-MiniLM-L6-v2`` (logs, metrics, bench output).
    name: str

    @property
    def dimension(self) -> int:
        """Length of every vector; known after ``load``."""

    async def load(self) -> None:
        """Load weights / probe the endpoint. Raises ``EmbeddingsUnavailable`` when it cannot."""

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        """One unit-length vector per text, same order. Raises ``EmbeddingsUnavailable`` on failure."""

    async def close(self) -> None: ...


def build_provider(settings: EmbeddingSettings) -> EmbeddingProvider | None:
    """The configured provider (not loaded yet), or None for ``EMBEDDINGS_PROVIDER=none``."""
    if settings.provider == "none":
        return None
    if settings.provider == "openai":
        from infrastructure.embeddings.remote import OpenAICompatibleProvider

        return OpenAICompatibleProvider(settings)
    from infrastructure.embeddings.local import LocalProvider

    return LocalProvider(settings)


class Embedder:
    """The process's provider, loaded once, dimension-checked, failures mapped to ``Unavailable``."""

    def __init__(self, settings: EmbeddingSettings, provider: EmbeddingProvider | None = None) -> None:
        self._settings = settings
        self._provider = provider if provider is not None else build_provider(settings)
        self._loaded = False
        self._failed_at: float | None = None
        self._error = ""
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self._provider.name if self._provider is not None else "none"

    @property
    def configured(self) -> bool:
        return self._provider is not None

    async def ready(self) -> EmbeddingProvider:
        """The loaded provider; loads it on first call. Raises ``EmbeddingsUnavailable``."""
        provider = self._provider
        if provider is None:
            raise EmbeddingsUnavailable("semantic search is unavailable: no embedding provider is configured")
        if not self._loaded:
            async with self._lock:
                await self._load_once(provider)
        return provider

    async def _load_once(self, provider: EmbeddingProvider) -> None:
        if self._loaded:  # another caller loaded it while we waited for the lock
            return
        if self._failed_at is not None and time.monotonic() - self._failed_at < RETRY_LOAD_SECONDS:
            raise EmbeddingsUnavailable(self._error)
        try:
            await provider.load()
            if provider.dimension != EMBEDDING_DIMENSION:
                raise EmbeddingsUnavailable(
                    f"embedding provider {provider.name} gives {provider.dimension}-dimensional vectors; "
                    f"the database column holds {EMBEDDING_DIMENSION}"
                )
        except EmbeddingsUnavailable as exc:
            self._failed_at, self._error = time.monotonic(), exc.message
            log.error("embeddings unavailable: %s", exc.message)
            raise
        self._loaded = True
        log.info("embedding provider %s loaded (dimension %d)", provider.name, provider.dimension)

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        provider = await self.ready()
        return await provider.embed(texts)

    async def embed_one(self, text: str) -> Vector:
        return (await self.embed([text]))[0]

    async def close(self) -> None:
        if self._provider is not None:
            await self._provider.close()


def to_pgvector(vector: Sequence[float]) -> str:
    """pgvector's text input form (``'[0.1,0.2,…]'``), passed as a parameter and cast with ``::vector``."""
    return "[" + ",".join(f"{value:.8g}" for value in vector) + "]"
