"""Streaming latency: from the model's first token to the client's first `thread.message.delta`.

The token goes model → run-poller → outbox → relay → Kafka → the API's stream reader → SSE.
For each of `--runs` streamed runs (official SDK, `runs.stream`), the scripted model stamps
when it sends the first chunk and the client stamps when the first delta arrives; both live in
this process, so one monotonic clock measures the whole path.

    .venv/bin/python -m bench.first_delta --runs 50
"""

import argparse
import time
import warnings

from openai import OpenAI

from bench.harness import percentile, running
from tests.system import API_KEY

warnings.filterwarnings("ignore", category=DeprecationWarning)  # the SDK's Assistants notice


def main() -> None:
    """Start the system, stream runs one after another, print p50/p99."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="streamed runs to measure")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (data and logs)")
    args = parser.parse_args()
    with running(keep=args.keep) as bench:
        client = OpenAI(base_url=bench.system.api_url, api_key=API_KEY)
        latencies: list[float] = []
        for n in range(args.runs + 1):
            text = f"latency probe {n}"
            bench.model.script(text, reply="a b c d e f g h", chunk_delay_s=0.01)
            thread = client.beta.threads.create(messages=[{"role": "user", "content": text}])
            first_delta = None
            with client.beta.threads.runs.stream(
                thread_id=thread.id, assistant_id=bench.assistant_id
            ) as stream:
                for event in stream:
                    if event.event == "thread.message.delta" and first_delta is None:
                        first_delta = time.monotonic()
            assert first_delta is not None
            if n:  # the first run warms connections and consumers up
                latencies.append((first_delta - bench.model.first_token_at[text]) * 1000)
        print(f"runs: {len(latencies)} (sequential, one streamed run at a time)")
        for name, p in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100)):
            print(f"first token -> first delta {name}: {percentile(latencies, p):.0f} ms")


if __name__ == "__main__":
    main()
