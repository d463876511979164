"""`threadbus up` as a new user meets it when something is wrong: one line naming the cause and
the setting to change, before any banner; a crashing service reported and backed off; a stop
that ends in bounded time even with the broker gone."""

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from services.core.embedded import free_port
from services.core.preflight import port_taken
from tests.e2e.test_up import healthy, start_up, stop_up
from tests.system import wait_until

BANNER = "Threadbus is up."


def _ports() -> dict[str, int]:
    return {"api": free_port(), "pg": free_port(), "kafka": free_port(), "health": free_port()}


def _pids_under(path: Path) -> list[int]:
    found = subprocess.run(["pgrep", "-f", str(path)], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"  # a zombie has ended
    except OSError:
        return False


@pytest.fixture
def leftovers(tmp_path: Path) -> Iterator[None]:
    """Whatever a test started under its directory is gone afterwards (killed if need be)."""
    yield
    for pid in _pids_under(tmp_path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _healthy_up(
    tmp_path: Path, **extra: str
) -> tuple[subprocess.Popen[bytes], dict[str, int], Path]:
    """`up` on fresh ports, once its API answers: the process, its ports and its log."""
    ports, log = _ports(), tmp_path / "up.log"
    proc = start_up(tmp_path / "data", ports, log, **extra)
    wait_until(lambda: healthy(ports["api"]), timeout=90, interval=0.3)
    return proc, ports, log


def _fails_with(proc: subprocess.Popen[bytes], log: Path, timeout: float = 90) -> str:
    """`up` exits with status 1 and prints no banner; returns what it printed."""
    assert proc.wait(timeout) == 1
    printed = log.read_text()
    assert BANNER not in printed
    return printed


def _up_beside(tmp_path: Path, ports: dict[str, int], squatted: tuple[str, int]) -> str:
    """`up` while another program listens on `squatted`: it fails; returns what it printed."""
    log = tmp_path / "up.log"
    with socket.socket() as squatter:
        squatter.bind(squatted)
        squatter.listen()
        return _fails_with(start_up(tmp_path / "data", ports, log), log)


@pytest.mark.slow
@pytest.mark.usefixtures("leftovers")
def test_a_taken_api_port_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    ports = _ports()
    started = time.monotonic()
    printed = _up_beside(tmp_path, ports, ("127.0.0.1", ports["api"]))
    took = time.monotonic() - started
    lines = [line for line in printed.splitlines() if "already in use" in line]
    assert lines == [
        f"threadbus up: port {ports['api']} on 127.0.0.1 (the API) is already in use by another"
        " program; set THREADBUS_API_PORT to a free port"
    ]
    assert took < 20, f"{took:.1f} s"
    assert not (tmp_path / "data" / "postgres").exists()  # nothing was started
    assert _pids_under(tmp_path) == []


@pytest.mark.slow
@pytest.mark.usefixtures("leftovers")
def test_a_taken_probe_port_names_the_probe_setting(tmp_path: Path) -> None:
    ports = _ports()
    printed = _up_beside(tmp_path, ports, ("0.0.0.0", ports["health"]))  # the run-poller's
    assert f"port {ports['health']} on 0.0.0.0 (the run_poller probes)" in printed
    assert "set THREADBUS_HEALTH_PORT_BASE to a free port" in printed


def _unreachable_urls(where: Path, port: int, other: int) -> dict[str, tuple[str, str]]:
    """Database URLs nothing answers at, each with its password `s3cret-pw` (or one that
    starts with it) and how a start-up error must name where it points."""
    socket_dir = str(where / "No Server")  # a Unix-domain socket's directory
    login = "threadbus:s3cret-pw"
    return {
        "tcp": (f"postgresql://{login}@127.0.0.1:{port}/threadbus", f"127.0.0.1:{port}"),
        "socket": (
            f"postgresql://{login}@{quote(socket_dir, safe='')}:{port}/threadbus",
            f"{socket_dir}:{port}",
        ),
        "socket as a parameter": (
            f"postgresql://{login}@/threadbus?host={quote(socket_dir)}&port={port}",
            f"{socket_dir}:{port}",
        ),
        "several hosts": (
            f"postgresql://{login}@127.0.0.1:{port},127.0.0.1:{other}/threadbus",
            f"127.0.0.1:{port},127.0.0.1:{other}",
        ),
        # The unencoded / ends the URL's authority early: its start would read as host and port.
        "a password with a slash": (
            f"postgresql://threadbus:{port}/s3cret-pw@127.0.0.1:{port}/threadbus",
            "the URL's host (percent-encode any / ? # in its password)",
        ),
    }


@pytest.mark.slow
@pytest.mark.usefixtures("leftovers")
@pytest.mark.parametrize(
    "form", ["tcp", "socket", "socket as a parameter", "several hosts", "a password with a slash"]
)
def test_an_unreachable_database_is_named_without_its_password(tmp_path: Path, form: str) -> None:
    ports = _ports()
    log = tmp_path / "up.log"
    url, named = _unreachable_urls(tmp_path, free_port(), free_port())[form]
    printed = _fails_with(start_up(tmp_path / "data", ports, log, THREADBUS_DATABASE_URL=url), log)
    line = next(line for line in printed.splitlines() if line.startswith("threadbus up:"))
    assert line.startswith(f"threadbus up: cannot reach Postgres at {named} (")
    assert line.endswith("check THREADBUS_DATABASE_URL, or unset it for the embedded Postgres")
    assert "s3cret-pw" not in printed
    assert "Traceback" not in printed
    assert _pids_under(tmp_path) == []  # the embedded broker it started is stopped again


@pytest.mark.slow
@pytest.mark.usefixtures("leftovers")
def test_an_unreachable_broker_is_named(tmp_path: Path) -> None:
    ports = _ports()
    log = tmp_path / "up.log"
    closed = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    proc = start_up(tmp_path / "data", ports, log, THREADBUS_KAFKA_BOOTSTRAP_SERVERS=closed)
    printed = _fails_with(proc, log)
    took = time.monotonic() - started
    line = next(line for line in printed.splitlines() if line.startswith("threadbus up:"))
    assert line.startswith(f"threadbus up: cannot reach the Kafka broker at {closed} (")
    assert "check THREADBUS_KAFKA_BOOTSTRAP_SERVERS" in line
    assert "Traceback" not in printed
    assert took < 60, f"{took:.1f} s"
    assert _pids_under(tmp_path) == []  # the embedded Postgres it started is stopped again


@pytest.mark.slow
@pytest.mark.usefixtures("leftovers")
def test_a_postgres_left_by_a_killed_up_is_stopped_and_up_starts(tmp_path: Path) -> None:
    first, ports, log = _healthy_up(tmp_path)
    pid_file = tmp_path / "data" / "postgres" / "postmaster.pid"
    postgres = int(pid_file.read_text().split()[0])
    first.kill()  # SIGKILL: no clean-up runs
    first.wait()
    # The services and the broker stop with it (their ports come free); the Postgres, in its
    # own session, stays.
    held = [ports["api"], ports["kafka"], *(ports["health"] + n for n in range(5))]
    wait_until(lambda: not any(port_taken("127.0.0.1", port) for port in held), timeout=40)
    assert _alive(postgres), "the fault was not injected: no Postgres was left running"

    second = start_up(tmp_path / "data", ports, log)
    try:
        wait_until(lambda: healthy(ports["api"]), timeout=90, interval=0.3)
        printed = log.read_text()
        assert f"stopped an embedded Postgres (pid {postgres}) that an earlier, killed run" in (
            printed
        )
        assert not _alive(postgres)
        assert printed.count(BANNER) == 2
    finally:
        assert stop_up(second) == 0


@pytest.mark.slow
@pytest.mark.usefixtures("leftovers")
def test_a_service_that_keeps_crashing_is_reported_and_backed_off(tmp_path: Path) -> None:
    # Only the file-indexer reads this setting, and 0 is out of its range: it exits at start.
    proc, ports, log = _healthy_up(tmp_path, THREADBUS_EMBED_BATCH="0")
    try:
        wait_until(lambda: "file_indexer keeps crashing" in log.read_text(), timeout=60)
        time.sleep(20)
        printed = log.read_text()
        exited = r"^(\S+ \S+) (?:WARNING|ERROR) up threadbus\.up: file_indexer (?:exited|keeps)"
        exits = re.findall(exited, printed, flags=re.MULTILINE)
        # Backed off (0, 1, 2, 4, 8, 16 s...): a handful of restarts in half a minute, where
        # a restart every half second made one each start-up time (about 3 s here).
        assert 3 <= len(exits) <= 7, exits
        assert "exit status 1" in printed
        assert healthy(ports["api"])  # the rest of the system stays up
    finally:
        assert stop_up(proc) == 0


@pytest.mark.slow
@pytest.mark.usefixtures("leftovers")
def test_a_stop_is_bounded_when_the_broker_is_gone(tmp_path: Path) -> None:
    proc, ports, _ = _healthy_up(tmp_path)
    broker = subprocess.run(["pgrep", "-f", f"listener-url=tcp://127.0.0.1:{ports['kafka']}"],
                            capture_output=True, text=True).stdout.split()  # fmt: skip
    assert len(broker) == 1
    os.kill(int(broker[0]), signal.SIGKILL)
    time.sleep(2)
    started = time.monotonic()
    assert stop_up(proc) == 0
    took = time.monotonic() - started
    assert took < 40, f"stopping took {took:.1f} s"
    time.sleep(0.5)
    assert _pids_under(tmp_path) == [], "processes outlived threadbus up"


@pytest.mark.slow
@pytest.mark.usefixtures("leftovers")
def test_a_second_up_on_the_same_data_directory_is_refused(tmp_path: Path) -> None:
    first, ports, _ = _healthy_up(tmp_path)
    try:
        second_log = tmp_path / "second.log"
        printed = _fails_with(start_up(tmp_path / "data", _ports(), second_log), second_log)
        assert (
            f"threadbus up: another `threadbus up` (pid {first.pid}) is running on"
            f" {tmp_path / 'data'}; stop it, or set THREADBUS_DATA_DIR to another directory"
        ) in printed
        assert healthy(ports["api"])  # the first one was left alone
    finally:
        assert stop_up(first) == 0
    assert not (tmp_path / "data" / "up.pid").exists()
