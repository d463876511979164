"""Where file bytes live: Postgres by default (nothing else to run), or an S3-compatible bucket.

Every service and replica reaches the same store, so a file uploaded through one API process is
read by another, by the file-indexer and by the tool-executor. Bytes move in parts: an upload is
written as it arrives and a download is sent as it is read, never held whole in memory.
"""

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Protocol

import asyncpg

from services.core.settings import CoreSettings

PART_BYTES = 1024 * 1024
"""Size of one stored part in Postgres (and of a read)."""


class BlobStore(Protocol):
    """Stores bytes under a key."""

    async def put(self, key: str, parts: AsyncIterator[bytes]) -> int:
        """Store the parts in order under `key`; returns the size in bytes."""
        ...

    def get(self, key: str) -> AsyncIterator[bytes]:
        """The bytes under `key`, in parts."""
        ...

    async def delete(self, key: str) -> None:
        """Forget `key` (no error if it is gone)."""
        ...


async def read_all(store: BlobStore, key: str) -> bytes:
    """All the bytes under `key` (for parsing; callers bound the size first)."""
    return b"".join([part async for part in store.get(key)])


async def rechunk(source: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    """The same bytes in parts of exactly `size` (the last may be shorter)."""
    buffer = bytearray()
    async for piece in source:
        buffer += piece
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


class PostgresBlobs:
    """Parts of 1 MiB in the `blob_parts` table."""

    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool

    async def put(self, key: str, parts: AsyncIterator[bytes]) -> int:
        """Write each part as it arrives (one short statement each); undone if the source fails."""
        total = 0
        index = 0
        try:
            async for part in rechunk(parts, PART_BYTES):
                async with self._pool.acquire() as conn:
                    await conn.execute(
                        "INSERT INTO blob_parts (key, part, data) VALUES ($1, $2, $3)",
                        key,
                        index,
                        part,
                    )
                total += len(part)
                index += 1
        except BaseException:
            await asyncio.shield(self.delete(key))
            raise
        return total

    async def get(self, key: str) -> AsyncIterator[bytes]:
        """Read part by part."""
        index = 0
        while True:
            async with self._pool.acquire() as conn:
                data = await conn.fetchval(
                    "SELECT data FROM blob_parts WHERE key = $1 AND part = $2", key, index
                )
            if data is None:
                return
            yield bytes(data)
            index += 1

    async def delete(self, key: str) -> None:
        """Delete every part."""
        async with self._pool.acquire() as conn:
            await conn.execute("DELETE FROM blob_parts WHERE key = $1", key)


class S3Blobs:
    """An S3-compatible bucket (AWS S3, MinIO, Ceph, R2), through boto3 in worker threads.

    Credentials come from the usual AWS settings (`AWS_ACCESS_KEY_ID`, ...). Uploads are
    multipart, 8 MiB a part, so no upload is held whole in memory.
    """

    UPLOAD_PART_BYTES = 8 * 1024 * 1024

    def __init__(self, bucket: str, *, endpoint_url: str | None, prefix: str, region: str | None):
        import boto3  # an optional dependency: pip install 'threadbus[s3]'

        self._bucket = bucket
        self._prefix = prefix
        self._s3: Any = boto3.client("s3", endpoint_url=endpoint_url or None, region_name=region)

    def _key(self, key: str) -> str:
        return f"{self._prefix}{key}"

    async def put(self, key: str, parts: AsyncIterator[bytes]) -> int:
        """A multipart upload, aborted if the source fails."""
        name = self._key(key)
        upload = await asyncio.to_thread(
            self._s3.create_multipart_upload, Bucket=self._bucket, Key=name
        )
        upload_id = upload["UploadId"]
        done: list[dict[str, Any]] = []
        total = 0
        try:
            async for part in rechunk(parts, self.UPLOAD_PART_BYTES):
                answer = await asyncio.to_thread(
                    self._s3.upload_part, Bucket=self._bucket, Key=name, UploadId=upload_id,
                    PartNumber=len(done) + 1, Body=part,
                )  # fmt: skip
                done.append({"ETag": answer["ETag"], "PartNumber": len(done) + 1})
                total += len(part)
            if not done:  # S3 wants at least one part
                answer = await asyncio.to_thread(
                    self._s3.upload_part, Bucket=self._bucket, Key=name, UploadId=upload_id,
                    PartNumber=1, Body=b"",
                )  # fmt: skip
                done.append({"ETag": answer["ETag"], "PartNumber": 1})
            await asyncio.to_thread(
                self._s3.complete_multipart_upload, Bucket=self._bucket, Key=name,
                UploadId=upload_id, MultipartUpload={"Parts": done},
            )  # fmt: skip
        except BaseException:
            await asyncio.shield(
                asyncio.to_thread(
                    self._s3.abort_multipart_upload,
                    Bucket=self._bucket,
                    Key=name,
                    UploadId=upload_id,
                )
            )
            raise
        return total

    async def get(self, key: str) -> AsyncIterator[bytes]:
        """Stream the object's body."""
        answer = await asyncio.to_thread(
            self._s3.get_object, Bucket=self._bucket, Key=self._key(key)
        )
        body = answer["Body"]
        try:
            while part := await asyncio.to_thread(body.read, PART_BYTES):
                yield part
        finally:
            body.close()

    async def delete(self, key: str) -> None:
        """Delete the object."""
        await asyncio.to_thread(self._s3.delete_object, Bucket=self._bucket, Key=self._key(key))


def open_store(settings: CoreSettings, pool: asyncpg.Pool) -> BlobStore:
    """The store the settings name (`THREADBUS_BLOB_STORE`: `postgres` or `s3`)."""
    if settings.blob_store == "s3":
        return S3Blobs(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            prefix=settings.s3_prefix,
            region=settings.s3_region,
        )
    return PostgresBlobs(pool)
