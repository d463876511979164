"""The code_interpreter tool: the model's Python runs in its thread's sandboxed kernel.

Before a cell runs, `/mnt/data` holds the thread's files: those given to the assistant, the
thread and its messages (`tool_resources`, `attachments`), and, in a new session, those the
code wrote in earlier ones. After it, what the code wrote comes back as files (`purpose`
`assistants_output`) and displayed images as `image` outputs; the step records the logs.
"""

import logging
import re
from dataclasses import dataclass
from typing import Any

import asyncpg

from schemas.events import ExecuteToolCall
from services.core import blobs as blob_store
from services.core.blobs import BlobStore
from services.core.ids import new_id
from services.core.store import files, toolcalls
from services.tool_executor.file_search import Answer
from services.tool_executor.sandbox import Execution, Sandbox, SandboxError
from services.tool_executor.sessions import Sessions

log = logging.getLogger(__name__)

_GIVEN = """
    WITH given AS (
        SELECT 0 AS source, x.rank, x.file_id FROM runs AS r
        JOIN threads AS t ON t.id = r.thread_id
        LEFT JOIN assistants AS a ON a.id = r.assistant_id,
        LATERAL jsonb_array_elements_text(
            coalesce(a.tool_resources #> '{code_interpreter,file_ids}', '[]')
            || coalesce(t.tool_resources #> '{code_interpreter,file_ids}', '[]')
        ) WITH ORDINALITY AS x (file_id, rank)
        WHERE r.id = $1
      UNION ALL
        SELECT 1, m.seq, a ->> 'file_id'
        FROM messages AS m, jsonb_array_elements(m.attachments) AS a
        WHERE m.thread_id = $2 AND m.attachments <> '[]'
          AND a -> 'tools' @> '[{"type": "code_interpreter"}]'
    )
    SELECT DISTINCT ON (f.id) f.id, f.filename, f.blob_key, f.bytes, g.source, g.rank
    FROM given AS g JOIN files AS f ON f.id = g.file_id JOIN threads AS t ON t.id = $2
    WHERE f.project_id = t.project_id AND NOT f.id = ANY($3::text[])
      AND (f.expires_at IS NULL OR f.expires_at > epoch_now())
    ORDER BY f.id, g.source, g.rank
"""
"""The files given to the run's assistant and thread, then those attached to the thread's
messages for code_interpreter, except those already in place; only the thread's project's
files (one round trip per call)."""


@dataclass(frozen=True)
class Options:
    """How calls run."""

    timeout_seconds: float = 60.0
    max_model_chars: int = 8_000
    max_log_chars: int = 32_000
    max_files_per_call: int = 20
    max_file_bytes: int = 100_000_000


def safe_name(filename: str, file_id: str) -> str:
    """A file's name in `/mnt/data`: its last path component, or its id when that is unusable."""
    name = re.split(r"[/\\]", filename)[-1].strip()
    return name if name and name not in (".", "..") else file_id


def clip(text: str, limit: int) -> str:
    """At most `limit` characters: the head and the tail, with what was left out said."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n... [{len(text) - 2 * half} characters left out] ...\n{text[-half:]}"


class CodeInterpreter:
    """Answers code_interpreter calls."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        blobs: BlobStore,
        sessions: Sessions | None,
        options: Options,
        *,
        unavailable: str = "",
    ):
        self._pool = pool
        self._blobs = blobs
        self._sessions = sessions
        self._options = options
        self._unavailable = unavailable

    async def __call__(self, order: ExecuteToolCall) -> Answer:
        """Run the call's code in the thread's kernel; every failure is text the model reads."""
        code = toolcalls.code_of(order.arguments)
        if self._sessions is None:
            unavailable = f"the code interpreter is not available here: {self._unavailable}"
            return _failure(f"Error: {unavailable}")
        if not code.strip():
            return _failure('Error: code_interpreter needs {"code": "<Python source>"}.')
        async with self._sessions.lock(order.thread_id):
            return await self._run(order, code, self._sessions)

    async def _run(self, order: ExecuteToolCall, code: str, sessions: Sessions) -> Answer:
        notes: list[str] = []
        try:
            sandbox, fresh = await sessions.get(order.thread_id)
        except SandboxError as exc:
            log.error("no kernel for thread %s: %s", order.thread_id, exc)
            return _failure(f"Error: the Python session could not start: {exc}")
        if fresh and await self._had_session(order):
            notes.append(
                "Note: this is a new Python session (the previous one ended), so variables"
                " from earlier calls are gone; the files in /mnt/data were restored."
            )
        notes += await self._place_files(order, sandbox, restore=fresh)
        before = sandbox.files.listing()
        execution = await sandbox.execute(code, seconds=self._options.timeout_seconds)
        written: list[tuple[str, str]] = []
        if execution.lost:
            await sessions.discard(order.thread_id)
        else:
            written = await self._collect(order, sandbox, before, notes)
        shown = execution.images[: self._options.max_files_per_call]
        if len(execution.images) > len(shown):
            notes.append(f"Note: only {len(shown)} of the {len(execution.images)} images shown"
                         " were kept.")  # fmt: skip
        images = [await self._store_image(order, png, i) for i, png in enumerate(shown)]
        return self._answer(execution, images, written, notes)

    async def _had_session(self, order: ExecuteToolCall) -> bool:
        async with self._pool.acquire() as conn:
            earlier = await conn.fetchval(
                "SELECT 1 FROM tool_calls WHERE thread_id = $1 AND type = 'code_interpreter'"
                " AND output IS NOT NULL AND id <> $2 LIMIT 1",
                order.thread_id,
                order.tool_call_id,
            )
        return bool(earlier)

    async def _place_files(
        self, order: ExecuteToolCall, sandbox: Sandbox, *, restore: bool
    ) -> list[str]:
        """Put the thread's given files (and in a new session, its written ones) in /mnt/data."""
        placed: dict[str, str] = sandbox.placed  # file id -> path
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(_GIVEN, order.run_id, order.thread_id, list(placed))
            written = []
            if restore:
                written = await conn.fetch(
                    "SELECT s.path, f.id, f.blob_key, f.bytes FROM sandbox_files AS s"
                    " JOIN files AS f ON f.id = s.file_id WHERE s.thread_id = $1"
                    " AND (f.expires_at IS NULL OR f.expires_at > epoch_now()) ORDER BY s.path",
                    order.thread_id,
                )
        notes = []
        taken = set(placed.values())
        for row in sorted(rows, key=lambda r: (r["source"], r["rank"])):
            file_id = row["id"]
            path = safe_name(row["filename"], file_id)
            if path in taken:
                path = f"{file_id}-{path}"
            if error := await self._copy_in(sandbox, path, row["blob_key"], row["bytes"]):
                notes.append(f"Note: /mnt/data/{path} could not be provided: {error}.")
                continue
            placed[file_id] = path
            taken.add(path)
        for row in written:
            if error := await self._copy_in(sandbox, row["path"], row["blob_key"], row["bytes"]):
                notes.append(f"Note: /mnt/data/{row['path']} could not be restored: {error}.")
        return notes

    async def _copy_in(self, sandbox: Sandbox, path: str, key: str, size: int) -> str | None:
        if size > self._options.max_file_bytes:
            return f"it is larger than the sandbox's {self._options.max_file_bytes} byte limit"
        try:
            content = await blob_store.read_all(self._blobs, key)
        except Exception as exc:  # the blob store's own errors: the model is told, the call goes on
            log.warning("could not read %s for the sandbox: %s", key, exc)
            return "its content could not be read"
        try:
            sandbox.files.put(path, content)
        except OSError as exc:
            return exc.strerror or str(exc)
        return None

    async def _collect(
        self,
        order: ExecuteToolCall,
        sandbox: Sandbox,
        before: dict[str, tuple[int, int]],
        notes: list[str],
    ) -> list[tuple[str, str]]:
        """Store what the cell wrote or changed as files; returns (path, file id) pairs."""
        after = sandbox.files.listing()
        changed = [p for p, seen in after.items() if before.get(p) != seen]
        limit = self._options.max_files_per_call
        if len(changed) > limit:
            notes.append(f"Note: only {limit} of the {len(changed)} files written were saved.")
        saved: list[tuple[str, str]] = []
        unnamed = [p for p in changed if not _printable(p)]
        if unnamed:
            notes.append(f"Note: {len(unnamed)} file(s) with names that are not UTF-8 text were"
                         " not saved.")  # fmt: skip
        for path in sorted(p for p in changed if _printable(p))[:limit]:
            content = sandbox.files.read(path, self._options.max_file_bytes)
            if content is None:
                continue
            file_id = await self._store(path.rsplit("/", 1)[-1], content)
            async with self._pool.acquire() as conn:
                await conn.execute(
                    "INSERT INTO sandbox_files (thread_id, path, file_id) VALUES ($1, $2, $3)"
                    " ON CONFLICT (thread_id, path) DO UPDATE SET file_id = EXCLUDED.file_id,"
                    " created_at = epoch_now()",
                    order.thread_id,
                    path,
                    file_id,
                )
            saved.append((path, file_id))
        return saved

    async def _store(self, filename: str, content: bytes) -> str:
        file_id = new_id("file")

        async def parts() -> Any:
            for start in range(0, len(content), 1 << 20):
                yield content[start : start + (1 << 20)]

        size = await self._blobs.put(file_id, parts())
        async with self._pool.acquire() as conn:
            await files.create(
                conn, file_id=file_id, filename=filename, purpose="assistants_output",
                size=size, blob_key=file_id,
            )  # fmt: skip
        return file_id

    async def _store_image(self, order: ExecuteToolCall, png: bytes, index: int) -> str:
        return await self._store(f"{order.tool_call_id}-image-{index}.png", png)

    def _answer(
        self,
        execution: Execution,
        images: list[str],
        written: list[tuple[str, str]],
        notes: list[str],
    ) -> Answer:
        logs = execution.logs
        if execution.lost and execution.timed_out:
            logs += (
                f"Error: the code ran longer than {self._options.timeout_seconds:g} s and did not"
                " stop when interrupted; the Python session was restarted (variables are gone,"
                " files written before this call are kept).\n"
            )
        elif execution.timed_out:
            logs += (
                f"Error: the code ran longer than {self._options.timeout_seconds:g} s and was"
                " interrupted.\n"
            )
        elif execution.lost:
            logs += (
                "Error: the Python session crashed (out of memory, or the process exited);"
                " it will be restarted on the next call (variables are gone, files written"
                " before this call are kept).\n"
            )
        logs = text_of(logs)
        details = _details([clip(logs, self._options.max_log_chars)] if logs else [], images)
        lines = [clip(logs, self._options.max_model_chars).rstrip("\n")] if logs else []
        if images:
            lines.append(f"[{len(images)} image(s) displayed to the user]")
        if written:
            names = ", ".join(f"sandbox:/mnt/data/{path}" for path, _ in written)
            lines.append(f"Files written (link them as shown): {names}")
        lines += [text_of(n) for n in notes]
        text = "\n".join(lines) if lines else "(the code ran and printed nothing)"
        return Answer(text, execution.timed_out or execution.lost, details)


def text_of(text: str) -> str:
    """Text Postgres can store: no NUL, no lone surrogates (both can come out of a cell)."""
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def _printable(path: str) -> bool:
    """A file name that is valid UTF-8 (not surrogate-escaped bytes) and has no NUL."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in path


def _failure(text: str) -> Answer:
    """A call that did not run: the model reads `text`, and the step shows it as the logs."""
    return Answer(text, True, _details([f"{text}\n"], []))


def _details(logs: list[str], images: list[str]) -> dict[str, Any]:
    outputs: list[dict[str, Any]] = [{"type": "logs", "logs": text} for text in logs]
    outputs += [{"type": "image", "image": {"file_id": file_id}} for file_id in images]
    return {"outputs": outputs}
