"""`threadbus ingest FOLDER`: upload a folder's files into a vector store, with a progress bar.

It is a client of the public API (the official SDK), so it works against any deployment.
"""

import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TextIO

from openai import OpenAI

BATCH = 500
SKIPPED = {".DS_Store"}


def files_of(folder: Path, pattern: str) -> list[Path]:
    """The files to ingest: every match of `pattern` below the folder, hidden ones left out."""
    return sorted(
        p
        for p in folder.rglob(pattern)
        if p.is_file()
        and p.name not in SKIPPED
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


class Progress:
    """A bar on a terminal (redrawn in place), a line per change elsewhere."""

    def __init__(self, total: int, out: TextIO, width: int = 30):
        self._total = max(total, 1)
        self._out = out
        self._width = width
        self._last = ""

    def show(self, label: str, done: int, failed: int = 0) -> None:
        """Draw `done` of the total."""
        filled = int(self._width * done / self._total)
        bar = "#" * filled + "." * (self._width - filled)
        extra = f", {failed} failed" if failed else ""
        line = f"{label:<9} [{bar}] {done}/{self._total}{extra}"
        if line == self._last:
            return
        self._last = line
        if self._out.isatty():
            self._out.write("\r" + line)
        else:
            self._out.write(line + "\n")
        self._out.flush()

    def end(self) -> None:
        """Finish the bar's line."""
        if self._out.isatty():
            self._out.write("\n")
        self._last = ""


def ingest(
    folder: Path,
    *,
    base_url: str,
    api_key: str,
    store_id: str | None,
    name: str | None,
    pattern: str = "*",
    workers: int = 4,
    poll_seconds: float = 1.0,
    out: TextIO = sys.stderr,
) -> tuple[str, int]:
    """Upload and index; returns the store id and how many files failed to index."""
    paths = files_of(folder, pattern)
    if not paths:
        raise SystemExit(f"threadbus ingest: no files match {pattern!r} in {folder}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        client = OpenAI(base_url=base_url, api_key=api_key, max_retries=3)
    with client:
        if store_id is None:
            store_id = client.vector_stores.create(name=name or folder.resolve().name).id
        else:
            client.vector_stores.retrieve(store_id)
        bar = Progress(len(paths), out)
        uploaded: list[str] = []

        def upload(path: Path) -> str:
            with path.open("rb") as handle:
                return client.files.create(file=(path.name, handle), purpose="assistants").id

        with ThreadPoolExecutor(workers) as pool:
            for file_id in pool.map(upload, paths):
                uploaded.append(file_id)
                bar.show("uploaded", len(uploaded))
        bar.end()
        batches = [
            client.vector_stores.file_batches.create(
                vector_store_id=store_id, file_ids=uploaded[start : start + BATCH]
            ).id
            for start in range(0, len(uploaded), BATCH)
        ]
        while True:
            counts = [
                client.vector_stores.file_batches.retrieve(b, vector_store_id=store_id).file_counts
                for b in batches
            ]
            finished = sum(c.completed + c.failed + c.cancelled for c in counts)
            failed = sum(c.failed for c in counts)
            bar.show("indexed", finished, failed)
            if sum(c.in_progress for c in counts) == 0:
                break
            time.sleep(poll_seconds)
        bar.end()
    return store_id, failed
