"""User story: an operator points Threadbus at an OpenAI-compatible embeddings endpoint."""

import signal
import warnings

import pytest
from openai import OpenAI

from tests.fakes.model_server import ScriptedModelServer
from tests.system import API_KEY, System, answers, wait_until


@pytest.mark.slow
def test_indexing_and_search_use_the_configured_endpoint(
    system: System, model: ScriptedModelServer
) -> None:
    endpoint = {
        "THREADBUS_EMBEDDINGS_BASE_URL": model.base_url,
        "THREADBUS_EMBEDDINGS_MODEL": "text-embedding-3-small",
        "THREADBUS_EMBEDDINGS_DIMENSIONS": "384",
    }
    port = system.api_port + 2000
    local_indexer = system.services["file_indexer"]
    assert local_indexer.proc is not None
    local_indexer.proc.send_signal(signal.SIGSTOP)  # only the configured indexer takes work
    indexer = system.spawn("file_indexer", label="file_indexer-remote", **endpoint)
    api = system.spawn("api", label="api-remote", THREADBUS_API_PORT=str(port), **endpoint)
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/healthz"), timeout=60)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            client = OpenAI(
                base_url=f"http://127.0.0.1:{port}/v1",
                api_key=API_KEY,
                _strict_response_validation=True,
            )
        text = "Lighthouses guide ships along the rocky coast of Brittany."
        made = client.files.create(file=("coast.txt", text.encode()), purpose="assistants")
        store = client.vector_stores.create(name="remote")
        done = client.vector_stores.files.create_and_poll(
            vector_store_id=store.id, file_id=made.id, poll_interval_ms=100
        )
        assert done.status == "completed", done.last_error
        assert text in model.embedded  # the chunk went to the endpoint, not the local model
        hits = client.vector_stores.search(store.id, query="rocky coast lighthouses")
        assert hits.data[0].file_id == made.id
        assert "rocky coast lighthouses" in model.embedded  # and so did the query
        client.close()
    finally:
        api.stop()
        indexer.kill()
        local_indexer.proc.send_signal(signal.SIGCONT)
