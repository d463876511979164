"""A sandbox's `/mnt/data` as the executor reaches it: `/proc/<pid>/root/mnt/data`.

The sandbox's user owns the directory and may plant symbolic links there that, followed from
the host, would lead to the host's files. So every access walks the path one component at a
time from a descriptor of the directory, with O_NOFOLLOW, and a non-directory in the way of a
write is removed first: nothing the executor reads or writes can lead out of the sandbox.
"""

import contextlib
import os
import stat
from pathlib import Path


class DataDir:
    """Reads, writes and lists the files of one sandbox's working directory."""

    def __init__(self, path: Path, uid: int | None):
        self.path = path
        self.uid = uid
        """The owner of the files the executor writes (the kernel's user), None: unchanged."""

    def _open(self, relative: str, flags: int, mode: int = 0o644) -> int:
        parts = [p for p in relative.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts):
            raise OSError(f"not a path inside /mnt/data: {relative!r}")
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for part in parts[:-1]:
                if flags & os.O_CREAT:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o755, dir_fd=fd)
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = inner
            if flags & os.O_CREAT:
                with contextlib.suppress(FileNotFoundError):
                    found = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
                    if not stat.S_ISDIR(found.st_mode):
                        os.unlink(parts[-1], dir_fd=fd)  # a link the sandbox planted, say
            return os.open(parts[-1], flags | os.O_NOFOLLOW, mode, dir_fd=fd)
        finally:
            os.close(fd)

    def put(self, relative: str, content: bytes) -> None:
        """Write a file into `/mnt/data`, owned by the kernel's user."""
        fd = self._open(relative, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            if self.uid is not None:
                os.fchown(fd, self.uid, self.uid)
            with os.fdopen(fd, "wb", closefd=False) as out:
                out.write(content)
        finally:
            os.close(fd)

    def read(self, relative: str, limit: int) -> bytes | None:
        """A regular file's bytes (None when it is not one, or is larger than `limit`)."""
        try:
            fd = self._open(relative, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
                return None
            with os.fdopen(fd, "rb", closefd=False) as source:
                return source.read(limit + 1)[:limit]
        finally:
            os.close(fd)

    def listing(self, *, depth: int = 4, limit: int = 1000) -> dict[str, tuple[int, int]]:
        """Regular files under `/mnt/data` (path: (size, mtime_ns)), symlinks not followed."""
        found: dict[str, tuple[int, int]] = {}

        def walk(fd: int, prefix: str, level: int) -> None:
            with os.scandir(fd) as entries:
                for entry in entries:
                    if len(found) >= limit:
                        return
                    if entry.is_file(follow_symlinks=False):
                        info = entry.stat(follow_symlinks=False)
                        found[prefix + entry.name] = (info.st_size, info.st_mtime_ns)
                    elif entry.is_dir(follow_symlinks=False) and level < depth:
                        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                        try:
                            inner = os.open(entry.name, flags, dir_fd=fd)
                        except OSError:
                            continue
                        try:
                            walk(inner, f"{prefix}{entry.name}/", level + 1)
                        finally:
                            os.close(inner)

        try:
            top = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return found
        try:
            walk(top, "", 1)
        finally:
            os.close(top)
        return found
