"""Any OpenAI-compatible embeddings endpoint (``POST {base_url}/embeddings``) over httpx.

Works with OpenAI itself, vLLM, llama.cpp's server, text-embeddings-inference, LocalAI, Ollama's
``/v1``. The dimension is learnt at ``load`` by embedding one probe text (then checked against the
database column by ``Embedder``). Vectors are L2-normalised here: cosine distance in the database
assumes unit vectors, and not every server normalises.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import httpx
import msgspec

from infrastructure.embeddings.provider import EmbeddingsUnavailable, Vector
from infrastructure.settings import EmbeddingSettings

#: Connect fast, read within a few seconds: the SDK defaults (minutes) would hold a search hostage.
TIMEOUT = httpx.Timeout(10.0, connect=3.0)


class _Item(msgspec.Struct):
    index: int
    embedding: list[float]


class _Response(msgspec.Struct):
    data: list[_Item]


class OpenAICompatibleProvider:
    def __init__(self, settings: EmbeddingSettings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        if not settings.base_url:
            raise EmbeddingsUnavailable("EMBEDDINGS_PROVIDER=openai needs EMBEDDINGS_BASE_URL")
        self._model = settings.model
        self.name = f"openai:{settings.model}@{settings.base_url}"
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self._client = httpx.AsyncClient(
            base_url=settings.base_url.rstrip("/") + "/", headers=headers, timeout=TIMEOUT, transport=transport
        )
        self._dimension = 0

    @property
    def dimension(self) -> int:
        return self._dimension

    async def load(self) -> None:
        self._dimension = len((await self.embed(["dimension probe"]))[0])

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        if not texts:
            return []
        try:
            response = await self._client.post("embeddings", json={"model": self._model, "input": list(texts)})
        except httpx.HTTPError as exc:
            raise EmbeddingsUnavailable(f"embedding endpoint unreachable: {type(exc).__name__}") from exc
        if response.status_code != 200:
            raise EmbeddingsUnavailable(f"embedding endpoint answered {response.status_code}")
        try:
            items = msgspec.json.decode(response.content, type=_Response).data
        except msgspec.DecodeError as exc:
            raise EmbeddingsUnavailable("embedding endpoint sent an unexpected body") from exc
        if sorted(item.index for item in items) != list(range(len(texts))):
            raise EmbeddingsUnavailable("embedding endpoint returned a different number of vectors")
        return [_normalise(item.embedding) for item in sorted(items, key=lambda item: item.index)]

    async def close(self) -> None:
        await self._client.aclose()


def _normalise(vector: list[float]) -> Vector:
    norm = math.sqrt(sum(value * value for value in vector))
    if not norm or not math.isfinite(norm):
        raise EmbeddingsUnavailable("embedding endpoint returned a zero or non-finite vector")
    return [value / norm for value in vector]
