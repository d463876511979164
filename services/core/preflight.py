"""What `threadbus up` checks before it starts anything, and how it says what is wrong.

Every problem is one line that names the cause and the setting to change, printed before the
banner; `up` then exits with status 1 instead of starting services that would crash.
"""

import os
import signal
import socket
import time
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg
from aiokafka.errors import KafkaError

from services.core import db

UP_PID = "up.pid"
"""The running `threadbus up`'s pid, in its data directory."""


class StartupFailure(Exception):
    """A reason `threadbus up` cannot start; its message is the one line to print."""


def port_taken(host: str, port: int) -> bool:
    """Something listens on (or holds) host:port, so a server there could not bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def check_ports(wanted: Iterable[tuple[str, str, int, str]]) -> None:
    """`wanted` is (what, host, port, setting); raises for the first port already taken."""
    for what, host, port, setting in wanted:
        if port_taken(host, port):
            raise StartupFailure(
                f"port {port} on {host} ({what}) is already in use by another program;"
                f" set {setting} to a free port"
            )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _pid_in(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def claim_data_dir(data_dir: Path) -> None:
    """Refuse a data directory another running `threadbus up` uses; else record this one's pid
    (`release_data_dir` removes it)."""
    pid_file = data_dir / UP_PID
    pid = _pid_in(pid_file)
    if pid is not None and pid != os.getpid() and _alive(pid) and "up" in _cmdline(pid):
        raise StartupFailure(
            f"another `threadbus up` (pid {pid}) is running on {data_dir};"
            " stop it, or set THREADBUS_DATA_DIR to another directory"
        )
    pid_file.write_text(f"{os.getpid()}\n")


def release_data_dir(data_dir: Path) -> None:
    """Forget this process's claim on the data directory."""
    pid_file = data_dir / UP_PID
    if _pid_in(pid_file) == os.getpid():
        pid_file.unlink(missing_ok=True)


def stop_stale_postgres(pgdata: Path, timeout: float = 30) -> int | None:
    """Stop an embedded Postgres that a killed `threadbus up` left running on `pgdata` (it runs
    in its own session, so it outlives a SIGKILLed parent); returns its pid, None if none ran.

    Called only after `claim_data_dir`: no live `up` owns the directory, so the server is
    nobody's. A fast shutdown (SIGINT) keeps its data consistent.
    """
    pid = _pid_in(pgdata / "postmaster.pid")
    if pid is None or not _alive(pid) or "postgres" not in _cmdline(pid):
        return None
    os.kill(pid, signal.SIGINT)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _alive(pid):
        raise StartupFailure(
            f"an embedded Postgres left running by an earlier run (pid {pid}) holds {pgdata}"
            f" and did not stop in {timeout:.0f} s; stop it (kill {pid})"
        )
    return pid


def where(url: str) -> str:
    """Where a database URL points, for a message: never its user or password.

    host:port; a Unix-domain socket's directory (a percent-encoded host, or `?host=`) as the
    path it is; several hosts as written. A password with an unencoded `/`, `?` or `#` ends the
    URL's authority early (its start would read as host and port), so such a URL is not named.
    """
    try:
        parts = urlsplit(url)
        if "@" in url and "@" not in parts.netloc:
            return "the URL's host (percent-encode any / ? # in its password)"
        query = parse_qs(parts.query)
        host = unquote(parts.hostname or "") or query.get("host", ["localhost"])[0]
        port = parts.port or query.get("port", ["5432"])[0]
    except ValueError:  # several hosts (h1:5432,h2:5432), or an IPv6 address left open
        return unquote(url.partition("://")[2].partition("/")[0].rpartition("@")[2])
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def unreachable(exc: BaseException, database_url: str, bootstrap: str) -> StartupFailure | None:
    """The one line for a failure to reach Postgres or Kafka at start-up (None: not that)."""
    if isinstance(exc, KafkaError):
        return StartupFailure(
            f"cannot reach the Kafka broker at {bootstrap} ({type(exc).__name__}: {exc});"
            " check THREADBUS_KAFKA_BOOTSTRAP_SERVERS, or unset it for the embedded broker"
        )
    if isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):  # a wrong password too
        return StartupFailure(
            f"Postgres at {where(database_url)} refused the login ({exc});"
            " check the user and password in THREADBUS_DATABASE_URL"
        )
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return StartupFailure(
            f"Postgres at {where(database_url)} has no such database ({exc});"
            " create it, or check the database name in THREADBUS_DATABASE_URL"
        )
    if isinstance(exc, db.ERRORS):
        detail = str(exc) or type(exc).__name__
        return StartupFailure(
            f"cannot reach Postgres at {where(database_url)} ({detail});"
            " check THREADBUS_DATABASE_URL, or unset it for the embedded Postgres"
        )
    return None
