"""Kafka topic names and consumer groups: the one place they are spelled."""

from typing import Final

INBOUND: Final = "threadbus.inbound"
"""User messages, tool outputs and cancels published by other systems (CloudEvents)."""
EVENTS: Final = "threadbus.events"
"""Assistants stream events (`thread.run.*`, `thread.message.*`, ...) and `error` events."""
DLQ: Final = "threadbus.dlq"
"""Inbound events that failed validation, with the reason."""
RUNS: Final = "threadbus.runs"
"""Wake-ups for the run-poller: a run is ready to be driven."""
TOOL_CALLS: Final = "threadbus.tool_calls"
"""Server-side tool calls for the tool-executor."""
TOOL_RESULTS: Final = "threadbus.tool_results"
"""Results of server-side tool calls, back to the run-poller."""

INGEST: Final = "threadbus.ingest"
"""Files to index into vector stores (key = vector store id), for the file-indexer."""

ALL: Final = (INBOUND, EVENTS, DLQ, RUNS, TOOL_CALLS, TOOL_RESULTS, INGEST)

GROUP_RUN_STARTER: Final = "run-starter"
GROUP_RUN_POLLER: Final = "run-poller"
GROUP_RUN_POLLER_RESULTS: Final = "run-poller-results"
"""The run-poller's second consumer (tool results): a group of its own, so that the two
consumers of one process never rebalance each other."""
GROUP_TOOL_EXECUTOR: Final = "tool-executor"
GROUP_MESSAGE_ARCHIVER: Final = "message-archiver"
GROUP_FILE_INDEXER: Final = "file-indexer"
