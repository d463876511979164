"""One sandboxed Jupyter kernel: bubblewrap namespaces, rlimits, and private tmpfs scratch space.

The kernel runs in new mount, PID, network, IPC and UTS namespaces. Its file system is the
host's `/usr` and the interpreter's directories, read-only, plus three size-capped tmpfs
mounts that only it can write: `/mnt/data` (its working directory), `/tmp` and `/run/kernel`
(the IPC sockets of the Jupyter protocol). Nothing of the host is writable, so a full disk or
a runaway file is the sandbox's own problem. The executor reaches the sockets and the files
through `/proc/<sandbox pid>/root`, which only the sandbox's parent may follow.

The kernel runs as an unprivileged user with no capabilities: when the executor is root,
bubblewrap sets up the namespaces and `setpriv` drops to a user id of the sandbox's own (so
RLIMIT_NPROC counts this sandbox's processes alone); otherwise a user namespace maps the
executor's user to `nobody`. Memory, processes and file size are capped with rlimits.
"""

import asyncio
import base64
import contextlib
import json
import logging
import os
import re
import secrets
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client.asynchronous.client import AsyncKernelClient

from services.tool_executor.bwrap import DATA, SOCKETS, Limits, command
from services.tool_executor.datadir import DataDir

log = logging.getLogger(__name__)

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
PORTS = {"shell_port": 1, "iopub_port": 2, "stdin_port": 3, "control_port": 4, "hb_port": 5}


REAP = (
    "exec('import os\\nwhile True:\\n try:\\n  if os.waitpid(-1, os.WNOHANG)[0] == 0: break"
    "\\n except ChildProcessError: break', {})"
)
"""Run silently in the kernel after its strays were killed: wait for every dead child."""


class SandboxError(Exception):
    """The sandbox could not be started or stopped answering."""


@dataclass
class Execution:
    """What one cell did: its logs in the order they came, the images it displayed."""

    logs: str = ""
    images: list[bytes] = field(default_factory=list)
    error: str | None = None
    timed_out: bool = False
    lost: bool = False


def _children(pid: int) -> list[int]:
    found = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                children = Path(f"/proc/{pid}/task/{task}/children").read_text()
                found += [int(c) for c in children.split()]
    return found


class CappedText:
    """Appended text kept up to `limit` characters: the first half and the latest half."""

    def __init__(self, limit: int):
        self._half = max(1, limit // 2)
        self._head = ""
        self._tail = ""
        self._dropped = 0

    def append(self, text: str) -> None:
        """Add text; what falls between the head and the tail is counted, not kept."""
        if len(self._head) < self._half:
            room = self._half - len(self._head)
            self._head += text[:room]
            text = text[room:]
        self._tail += text
        if len(self._tail) > self._half:
            self._dropped += len(self._tail) - self._half
            self._tail = self._tail[-self._half :]

    def text(self) -> str:
        """The kept text, with the amount left out said where it was."""
        if not self._dropped:
            return self._head + self._tail
        gap = f"\n[... {self._dropped} characters of output left out ...]\n"
        return self._head + gap + self._tail


def _read_info(fd: int) -> dict[str, Any] | None:
    """bubblewrap's `--info-fd` JSON, which may arrive in several writes; None at EOF first."""
    raw = b""
    while chunk := os.read(fd, 65536):
        raw += chunk
        try:
            info: dict[str, Any] = json.loads(raw)
        except ValueError:
            continue  # more to come
        return info
    return None


def _state(pid: int) -> str | None:
    """A process's state letter (R, S, Z, ...), None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in _children(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


class Sandbox:
    """A started kernel in its sandbox; `execute` runs one cell, `close` ends it."""

    def __init__(
        self,
        proc: asyncio.subprocess.Process,
        init_pid: int,
        client: AsyncKernelClient,
        output: deque[str],
        uid: int | None,
    ):
        self._proc = proc
        self.uid = uid
        self.init_pid = init_pid
        self._client = client
        self._output = output
        self.kernel_pid: int | None = None
        self.last_used = time.monotonic()
        self.files = DataDir(self.root / DATA.lstrip("/"), uid)
        self.placed: dict[str, str] = {}
        """Given files already in /mnt/data: file id -> path."""

    @property
    def root(self) -> Path:
        """The sandbox's file system, as the executor reaches it."""
        return Path(f"/proc/{self.init_pid}/root")

    @property
    def alive(self) -> bool:
        """The sandbox's processes are still running."""
        return self._proc.returncode is None and self.files.path.is_dir()

    @classmethod
    async def start(cls, python: str, limits: Limits, *, ready_seconds: float = 30.0) -> "Sandbox":
        """Start a kernel and wait until it answers; raises SandboxError with its output."""
        info: dict[str, Any] = {
            **PORTS, "ip": f"{SOCKETS}/k", "transport": "ipc", "key": secrets.token_hex(32),
            "signature_scheme": "hmac-sha256", "kernel_name": "python3",
        }  # fmt: skip
        conn_read, conn_write = os.pipe()
        os.write(conn_write, json.dumps(info).encode())
        os.close(conn_write)
        info_read, info_write = os.pipe()
        # As root: a user id of its own, so no other process shares its RLIMIT_NPROC count.
        uid = 2_000_000 + secrets.randbelow(1_000_000) if os.geteuid() == 0 else None
        try:
            proc = await asyncio.create_subprocess_exec(
                *command(python, limits, conn_read, info_write, uid),
                pass_fds=(conn_read, info_write),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            os.close(info_read)
            raise SandboxError(f"bubblewrap could not be started: {exc}") from exc
        finally:
            os.close(conn_read)
            os.close(info_write)
        output: deque[str] = deque(maxlen=40)
        drain = asyncio.create_task(_drain(proc, output))
        try:
            started = await asyncio.to_thread(_read_info, info_read)
        finally:
            os.close(info_read)
        if started is None:
            await proc.wait()
            await drain
            raise SandboxError("the sandbox did not start: " + " | ".join(output))
        init_pid = int(started["child-pid"])
        client = AsyncKernelClient()
        reach: dict[str, Any] = {**info, "ip": f"/proc/{init_pid}/root{SOCKETS}/k"}
        client.load_connection_info(reach)  # type: ignore[arg-type]
        sandbox = cls(proc, init_pid, client, output, uid)
        sandbox._drain = drain  # type: ignore[attr-defined]
        try:
            deadline = time.monotonic() + ready_seconds
            while not (sandbox.root / SOCKETS.lstrip("/") / "k-1").exists():
                if proc.returncode is not None or time.monotonic() > deadline:
                    raise SandboxError("the kernel did not start: " + " | ".join(output))
                await asyncio.sleep(0.01)
            client.start_channels()
            await client.wait_for_ready(timeout=max(1.0, deadline - time.monotonic()))
            sandbox.kernel_pid = next(iter(_children(init_pid)), None)
        except BaseException as exc:
            await sandbox.close()
            if isinstance(exc, SandboxError):
                raise
            if isinstance(exc, Exception):
                raise SandboxError(f"the kernel did not start: {exc}") from exc
            raise
        return sandbox

    async def execute(
        self,
        code: str,
        *,
        seconds: float,
        grace: float = 3.0,
        max_log_chars: int = 1_000_000,
        max_images: int = 50,
    ) -> Execution:
        """Run one cell; a cell over `seconds` is interrupted, one that ignores that is killed.

        What the cell prints is kept up to `max_log_chars` (its start and its end) and at most
        `max_images` images, so a cell that floods its output cannot exhaust the executor.
        """
        self.last_used = time.monotonic()
        result = Execution()
        logs = CappedText(max_log_chars)
        msg_id = self._client.execute(code, store_history=True, allow_stdin=False)
        deadline = time.monotonic() + seconds
        interrupted_at: float | None = None
        try:
            while True:
                now = time.monotonic()
                if interrupted_at is None and now >= deadline:
                    result.timed_out = True
                    interrupted_at = now
                    self._interrupt()
                if interrupted_at is not None and now >= interrupted_at + grace:
                    result.lost = True
                    break
                if not self.alive:
                    result.lost = True
                    break
                limit = (interrupted_at + grace if interrupted_at else deadline) - now
                try:
                    msg = await self._client.get_iopub_msg(timeout=max(0.01, min(limit, 0.5)))
                except Exception:  # queue.Empty: nothing yet
                    continue
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = msg["msg_type"], msg["content"]
                if kind == "status" and content.get("execution_state") == "idle":
                    break
                if kind == "stream":
                    logs.append(content.get("text", ""))
                elif kind in ("execute_result", "display_data"):
                    data = content.get("data", {})
                    if "image/png" in data:
                        if len(result.images) < max_images:
                            result.images.append(base64.b64decode(data["image/png"]))
                    elif "text/plain" in data:
                        logs.append(str(data["text/plain"]) + "\n")
                elif kind == "error":
                    result.error = f"{content.get('ename')}: {content.get('evalue')}"
                    logs.append(ANSI.sub("", "\n".join(content.get("traceback", []))) + "\n")
        finally:
            self.last_used = time.monotonic()
        result.logs = logs.text()
        if not result.lost:
            await self.reap()
        return result

    def _interrupt(self) -> None:
        """SIGINT to the kernel (KeyboardInterrupt in the cell), as `interrupt_mode=signal`."""
        if self.kernel_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.kernel_pid, signal.SIGINT)

    async def reap(self) -> None:
        """End every process in the sandbox but the kernel: nothing outlives its cell."""
        keep = {self.init_pid, self.kernel_pid}
        killed = False
        for _ in range(50):
            strays = [p for p in _descendants(self.init_pid) if p not in keep]
            if not strays:
                break
            killed = True
            for pid in strays:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if all(_state(p) in ("Z", None) for p in strays):
                break
        if killed:
            await self._collect_zombies()

    async def _collect_zombies(self) -> None:
        """Have the kernel wait for its killed children, which would otherwise stay zombies
        and count against its process limit (in a throwaway namespace, out of history)."""
        msg_id = self._client.execute(REAP, silent=True, store_history=False)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                reply = await self._client.get_shell_msg(timeout=1)
            except Exception:  # queue.Empty
                continue
            if reply.get("parent_header", {}).get("msg_id") == msg_id:
                return

    def memory_bytes(self) -> int:
        """Proportional memory (Pss) of the sandbox's processes; its tmpfs files come on top."""
        total = 0
        for pid in [self.init_pid, *_descendants(self.init_pid)]:
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
        return total

    async def close(self) -> None:
        """Kill the sandbox (its PID namespace ends with it) and release the client."""
        with contextlib.suppress(Exception):
            self._client.stop_channels()
        if self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.init_pid, signal.SIGKILL)
        await self._proc.wait()
        drain = getattr(self, "_drain", None)
        if drain is not None:
            await drain


async def _drain(proc: asyncio.subprocess.Process, output: deque[str]) -> None:
    """Keep the sandbox's last lines of output, for the error when it fails to start."""
    assert proc.stdout is not None
    async for line in proc.stdout:
        text = line.decode(errors="replace").rstrip()
        if text:
            output.append(text)
            log.debug("sandbox: %s", text)
