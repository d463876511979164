"""The escape suite: each attempt is code the model issues through a real run.

Every attempt must be contained, the run must complete with the error text the model reads,
and the tool-executor must keep serving another thread (a bystander, on another partition, so
on another consumer) while the attempt runs.
"""

import glob
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import pytest
from openai import OpenAI

from tests.e2e.code_interpreter_runs import CodeRun, code_assistant, run_code
from tests.fakes.model_server import ScriptedModelServer
from tests.system import System, partition_of


@dataclass
class Bystander:
    """Runs `print` cells on its own thread, one after another, until stopped."""

    completed: int = 0
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)


@contextmanager
def bystander_running(
    client: OpenAI, model: ScriptedModelServer, assistant_id: str, avoid: str
) -> Iterator[Bystander]:
    """A thread on another partition than `avoid` keeps being served during the block."""
    thread = client.beta.threads.create()
    while partition_of(thread.id) == partition_of(avoid):
        thread = client.beta.threads.create()
    state = Bystander()

    def loop() -> None:
        while not state.stop.is_set():
            token = secrets.token_hex(4)
            try:
                done = run_code(client, model, assistant_id, thread.id, f"print('alive {token}')",
                                answer_on=f"alive {token}")  # fmt: skip
            except Exception as exc:
                state.failures.append(repr(exc))
                return
            if done.run.status == "completed" and f"alive {token}" in done.logs:
                state.completed += 1
            else:
                state.failures.append(f"{done.run.status}: {done.logs!r}")

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    try:
        yield state
    finally:
        state.stop.set()
        worker.join(timeout=60)


@dataclass
class Attack:
    """An assistant, the attacking thread, and `run(code, answer_on)`, which runs one attempt
    through a real run with a bystander alongside and checks the run completed."""

    assistant_id: str
    thread_id: str
    run: Callable[[str, str], CodeRun]


@pytest.fixture
def attack(client: OpenAI, model: ScriptedModelServer) -> Iterator[Attack]:
    """Attempts on one thread; afterwards, every bystander was served without a failure."""
    assistant_id = code_assistant(client)
    thread = client.beta.threads.create()
    seen: list[Bystander] = []

    def run(code: str, answer_on: str) -> CodeRun:
        with bystander_running(client, model, assistant_id, thread.id) as bystander:
            done = run_code(client, model, assistant_id, thread.id, code, answer_on=answer_on,
                            reply="Contained.")  # fmt: skip
            deadline = time.monotonic() + 30
            while bystander.completed == 0 and not bystander.failures:
                assert time.monotonic() < deadline, "the bystander thread was not served"
                time.sleep(0.05)
        seen.append(bystander)
        assert done.run.status == "completed", done.run.last_error
        assert done.reply.content[0].text.value == "Contained.", done.logs
        return done

    yield Attack(assistant_id, thread.id, run)
    for bystander in seen:
        assert bystander.failures == []
        assert bystander.completed >= 1


def test_no_tcp_connection_and_no_name_resolution(attack: Attack, system: System) -> None:
    run = attack.run
    database = urlparse(system.infra.database_url)
    broker_host, broker_port = system.infra.bootstrap.split(",")[0].rsplit(":", 1)
    code = (
        "import socket\n"
        f"targets = [('1.1.1.1', 443), ('{database.hostname}', {database.port}),"
        f" ('{broker_host}', {broker_port}), ('{system.api_url.split('/')[2].split(':')[0]}',"
        f" {system.api_port})]\n"
        "for host, port in targets:\n"
        "    try:\n"
        "        socket.create_connection((host, port), timeout=3)\n"
        "        print('CONNECTED', host, port)\n"
        "    except OSError as exc:\n"
        "        print('blocked', port, exc.strerror)\n"
        "try:\n"
        "    print('RESOLVED', socket.getaddrinfo('example.com', 443))\n"
        "except socket.gaierror as exc:\n"
        "    print('no name resolution:', exc)\n"
    )
    done = run(code, "no name resolution")
    assert "CONNECTED" not in done.logs
    assert "RESOLVED" not in done.logs
    assert done.logs.count("blocked") == 4
    assert "Network is unreachable" in done.logs


def test_no_postgres_socket_and_no_broker(attack: Attack, system: System) -> None:
    run = attack.run
    port = urlparse(system.infra.database_url).port
    sockets = glob.glob(f"/tmp/**/.s.PGSQL.{port}", recursive=True) + glob.glob(
        f"/var/run/postgresql/.s.PGSQL.{port}"
    )
    paths = sockets or [f"/tmp/.s.PGSQL.{port}"]
    code = (
        "import socket\n"
        f"for path in {paths!r}:\n"
        "    s = socket.socket(socket.AF_UNIX)\n"
        "    try:\n"
        "        s.connect(path)\n"
        "        print('CONNECTED', path)\n"
        "    except OSError as exc:\n"
        "        print('no socket:', type(exc).__name__)\n"
    )
    done = run(code, "no socket")
    assert "CONNECTED" not in done.logs


def test_no_shadow_and_no_executor_environment(attack: Attack, system: System) -> None:
    run = attack.run
    proc = system.services["tool_executor"].proc
    assert proc is not None
    executor_pid = proc.pid
    assert b"test-key" in Path(f"/proc/{executor_pid}/environ").read_bytes()  # it is there
    code = (
        "import os, glob\n"
        "try:\n"
        "    print('SHADOW', open('/etc/shadow').read()[:20])\n"
        "except OSError as exc:\n"
        "    print('shadow refused:', type(exc).__name__)\n"
        "names = ('OPENAI', 'THREADBUS', 'DATABASE')\n"
        "leaks = [k for k in os.environ if any(s in k for s in names)]\n"
        f"for path in glob.glob('/proc/*/environ') + ['/proc/{executor_pid}/environ']:\n"
        "    try:\n"
        "        data = open(path, 'rb').read()\n"
        "    except OSError:\n"
        "        continue\n"
        "    if b'test-key' in data or b'postgresql://' in data:\n"
        "        leaks.append(path)\n"
        "print('leaks:', leaks)\n"
        "print('pids:', sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))\n"
    )
    done = run(code, "leaks: []")
    assert "SHADOW" not in done.logs
    assert "shadow refused" in done.logs
    pids = done.logs.split("pids: ")[1].splitlines()[0]
    assert str(executor_pid) not in pids.strip("[]").split(", ")


def _kernel_holding(name: str) -> int:
    """The host pid of the sandbox whose /mnt/data holds `name` (found from outside)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit() and os.path.exists(f"/proc/{entry}/root/mnt/data/{name}"):
            return int(entry)
    raise AssertionError(f"no sandbox holds {name}")


def test_no_view_of_another_threads_files(
    attack: Attack, client: OpenAI, model: ScriptedModelServer
) -> None:
    assistant_id, run = attack.assistant_id, attack.run
    other = client.beta.threads.create()
    secret = f"secret-{secrets.token_hex(4)}.txt"
    run_code(client, model, assistant_id, other.id,
             f"open('/mnt/data/{secret}', 'w').write('private')\nprint('written')",
             answer_on="written")  # fmt: skip
    host_pid = _kernel_holding(secret)
    code = (
        "import os\n"
        "print('mine:', os.listdir('/mnt/data'))\n"
        "for top in ('/mnt', '/tmp', '/run', '/root', '/home', '/work', '/var', '/srv'):\n"
        "    for folder, _, names in os.walk(top):\n"
        f"        if '{secret}' in names:\n"
        "            print('FOUND', folder)\n"
        "try:\n"
        f"    print('READ', open('/proc/{host_pid}/root/mnt/data/{secret}').read())\n"
        "except OSError as exc:\n"
        "    print('other thread refused:', type(exc).__name__)\n"
    )
    done = run(code, "other thread refused")
    assert secret not in done.logs.replace(f"/proc/{host_pid}/root/mnt/data/{secret}", "")
    assert "READ" not in done.logs


def test_no_write_outside_mnt_data(attack: Attack) -> None:
    run = attack.run
    venv = Path(sys.prefix)
    targets = ["/usr/evil", "/etc/evil", "/evil", "/mnt/evil", "/bin/evil", f"{venv}/evil",
               f"{Path.cwd()}/evil"]  # fmt: skip
    code = (
        f"for path in {targets!r}:\n"
        "    try:\n"
        "        open(path, 'w').write('x')\n"
        "        print('WROTE', path)\n"
        "    except OSError as exc:\n"
        "        print('refused', exc.strerror)\n"
    )
    done = run(code, "refused")
    assert "WROTE" not in done.logs
    assert done.logs.count("refused") == len(targets)
    assert not any(os.path.exists(t) for t in targets)


def test_a_fork_bomb_is_stopped(attack: Attack) -> None:
    run = attack.run
    code = (
        "import os, time\n"
        "parent = os.getpid()\n"
        "while True:\n"
        "    try:\n"
        "        os.fork()\n"
        "    except OSError as exc:\n"
        "        if os.getpid() == parent:\n"
        "            print('fork refused:', exc.strerror)\n"
        "            break\n"
        "        time.sleep(2)\n"
        "        os._exit(0)\n"
    )
    done = run(code, "fork refused")
    assert "Resource temporarily unavailable" in done.logs
    # The bomb's children live on for the 2 s each sleeps once its own fork is refused, so a
    # count that runs sooner (CI once ran it within that time) sees one of them still ending:
    # the count waits up to 3 s of the cell's 4 for the table to settle, then says what it saw.
    count = (
        "import os, time\n"
        "for _ in range(30):\n"
        "    seen = len([p for p in os.listdir('/proc') if p.isdigit()])\n"
        "    if seen <= 2:\n"
        "        break\n"
        "    time.sleep(0.1)\n"
        "print('processes', seen)\n"
    )
    after = run(count, "processes")
    assert "processes 2" in after.logs  # the sandbox's init and the kernel: the bomb is gone


def test_a_memory_bomb_is_stopped(attack: Attack) -> None:
    # `bytes(n)` takes its address space without writing it. With `bytearray(n)` every block
    # was zero-filled, 2 GB of writes before the limit: on a loaded 2-core machine that ran
    # past the suite's 4 s cell limit, the cell was interrupted instead of refused, and the
    # test measured the machine's speed rather than the memory limit.
    run = attack.run
    code = (
        "blocks = []\n"
        "try:\n"
        "    while True:\n"
        "        blocks.append(bytes(100_000_000))\n"
        "except MemoryError:\n"
        "    print('memory refused after', len(blocks) * 100, 'MB')\n"
        "del blocks\n"
    )
    done = run(code, "memory refused")
    megabytes = int(done.logs.split("memory refused after ")[1].split()[0])
    assert megabytes <= 2000


def test_filling_the_disk_is_stopped(attack: Attack) -> None:
    run = attack.run
    code = (
        "import os\n"
        "try:\n"
        "    open('/mnt/data/huge.bin', 'wb').write(b'x' * 20_000_000)\n"
        "except OSError as exc:\n"
        "    print('one file refused:', exc.strerror)\n"
        "os.remove('/mnt/data/huge.bin')\n"
        "written = 0\n"
        "try:\n"
        "    for i in range(100):\n"
        "        with open(f'/mnt/data/fill-{i}', 'wb') as f:\n"
        "            f.write(b'x' * 8_000_000)\n"
        "            written += 8\n"
        "except OSError as exc:\n"
        "    print('disk refused after', written, 'MB:', exc.strerror)\n"
        "for name in os.listdir('/mnt/data'):\n"
        "    os.remove('/mnt/data/' + name)\n"
        "try:\n"
        "    open('/tmp/fill', 'wb').write(b'x' * 200_000_000)\n"
        "except OSError as exc:\n"
        "    print('tmp refused:', exc.strerror)\n"
    )
    done = run(code, "tmp refused")
    assert "one file refused: File too large" in done.logs
    assert "No space left on device" in done.logs
    megabytes = int(done.logs.split("disk refused after ")[1].split()[0])
    assert megabytes <= 40


def test_an_infinite_loop_is_interrupted(attack: Attack) -> None:
    run = attack.run
    done = run("while True:\n    pass", "was interrupted")
    assert "KeyboardInterrupt" in done.logs
    stubborn = (
        "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass\n"
    )
    done = run(stubborn, "did not stop when interrupted")
    assert "the Python session was restarted" in done.logs
    after = run("print('fresh', 6 * 7)", "fresh 42")
    assert "fresh 42" in after.logs


def test_no_process_outlives_its_cell(attack: Attack) -> None:
    run = attack.run
    marker = str(600 + secrets.randbelow(300))
    code = (
        "import os, subprocess, time\n"
        f"subprocess.Popen(['sleep', '{marker}'])\n"
        "if os.fork() == 0:\n"
        "    while True:\n"
        "        time.sleep(1)\n"
        "print('spawned')\n"
    )
    run(code, "spawned")
    check = (
        "import subprocess\n"
        "print(subprocess.run(['ps', '-eo', 'args'], capture_output=True, text=True).stdout)"
    )
    after = run(check, "ps -eo args")
    assert f"sleep {marker}" not in after.logs
    host = subprocess.run(["pgrep", "-f", f"sleep {marker}"], capture_output=True, text=True)
    assert host.stdout.strip() == ""


def test_an_output_flood_is_capped(attack: Attack, system: System) -> None:
    """A cell printing as fast as it can: the executor keeps a bounded part of it. How the
    cell ends depends on the machine: interrupted at the time limit, or stopped by the
    kernel's own memory limit (its output buffer), as on the machine this was written on."""
    proc = system.services["tool_executor"].proc
    assert proc is not None
    done = attack.run("while True:\n    print('x' * 10_000)", "characters left out")
    assert "characters left out" in done.logs
    assert len(done.logs) < 40_000  # what the step keeps
    status = Path(f"/proc/{proc.pid}/status").read_text()
    rss_kib = int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])
    assert rss_kib < 1_000_000  # the executor did not keep the flood
    after = attack.run("print('still', 'here')", "still here")
    assert "still here" in after.logs
