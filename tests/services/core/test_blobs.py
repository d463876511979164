"""The blob stores, against real servers: Postgres, and an S3-compatible server (moto's)."""

import os
from collections.abc import AsyncIterator, Iterator

import pytest

from services.core import db
from services.core.blobs import PART_BYTES, BlobStore, PostgresBlobs, S3Blobs, read_all
from services.core.embedded import free_port
from tests.system import Infrastructure

PAYLOAD = bytes(range(256)) * (3 * PART_BYTES // 256 + 17)  # a little over three parts


async def _parts(data: bytes, size: int = 300_000) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def _failing() -> AsyncIterator[bytes]:
    yield b"x" * PART_BYTES * 2
    raise OSError("the client went away")


async def _round_trip(store: BlobStore, payload: bytes = PAYLOAD) -> None:
    assert await store.put("k1", _parts(payload)) == len(payload)
    assert await read_all(store, "k1") == payload
    parts = [part async for part in store.get("k1")]
    assert len(parts) > 1  # streamed in parts, not in one piece
    assert await store.put("empty", _parts(b"")) == 0
    assert await read_all(store, "empty") == b""
    with pytest.raises(OSError, match="went away"):
        await store.put("k2", _failing())
    await store.delete("k1")


async def test_postgres_blobs_round_trip(infra: Infrastructure) -> None:
    pool = await db.create_pool(infra.database_url, size=2)
    try:
        store = PostgresBlobs(pool)
        await _round_trip(store)
        async with pool.acquire() as conn:
            left = await conn.fetchval(
                "SELECT count(*) FROM blob_parts WHERE key = ANY($1::text[])", ["k1", "k2"]
            )
        assert left == 0  # deleted, and a failed upload leaves nothing behind
    finally:
        await pool.close()


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    """moto's S3-compatible server on a free loopback port, with a bucket."""
    server_module = pytest.importorskip("moto.server", reason="moto[server] is a test extra")
    boto3 = pytest.importorskip("boto3")
    port = free_port()
    server = server_module.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    url = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=url, region_name="us-east-1").create_bucket(
        Bucket="threadbus-test"
    )
    yield url
    server.stop()


async def test_s3_blobs_round_trip(s3_endpoint: str) -> None:
    store = S3Blobs(
        "threadbus-test", endpoint_url=s3_endpoint, prefix="threadbus/", region="us-east-1"
    )
    await _round_trip(store, PAYLOAD * 3)  # more than one multipart part (8 MiB each)
    with pytest.raises(Exception, match="NoSuchKey"):
        await read_all(store, "k1")
