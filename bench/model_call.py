"""What one streamed model call costs the run-poller, by HTTP transport under the `openai` SDK.

The scripted model runs in a process of its own; this process makes `--calls` calls one after
another through `services.core.model.ModelClient` (the run-poller's client) and measures its own
CPU, first with the SDK's default httpx transport, then with its aiohttp transport (the
run-poller's), alternating `--rounds` times so drift shows.

    .venv/bin/python -m bench.model_call --calls 2000 --rounds 3
"""

import argparse
import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator

import openai

from services.core import eventloop
from services.core.embedded import free_port, wait_for_port
from services.core.model import ModelClient

REQUEST = {"model": "bench", "messages": [{"role": "user", "content": "hello there"}]}


@contextlib.contextmanager
def model_server() -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.model_server", "--port", str(port)],
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, 20, server, "the scripted model")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.terminate()
        server.wait(timeout=10)


async def per_call(base_url: str, transport: str, calls: int) -> tuple[float, float]:
    """CPU and wall milliseconds per call, after 100 calls of warm-up."""
    client = ModelClient(base_url=base_url, api_key="bench")
    if transport == "httpx":  # what the SDK does when no http_client is given
        await client.close()
        client._client = openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0)
    try:
        for _ in range(100):
            await client.complete(REQUEST)
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(calls):
            completion = await client.complete(REQUEST)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        if not completion.text:
            raise RuntimeError("the scripted model answered nothing")
    finally:
        await client.close()
    return 1000 * cpu / calls, 1000 * wall / calls


async def measure(calls: int, rounds: int) -> None:
    with model_server() as base_url:
        print(f"{calls} streamed calls a round, one after another, to {base_url}")
        for n in range(rounds):
            for transport in ("httpx", "aiohttp"):
                cpu, wall = await per_call(base_url, transport, calls)
                print(f"round {n + 1}: {transport:8} CPU {cpu:.3f} ms a call, wall {wall:.3f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    eventloop.run(measure(args.calls, args.rounds))


if __name__ == "__main__":
    main()
