"""JSON Schemas of every event, and an AsyncAPI document of the topics, built from the models.

Pure functions: `scripts/schemas` writes the result to `schemas/json/`, and a test fails when
the committed files differ from what the models say.
"""

from typing import Any

from pydantic import TypeAdapter

from schemas import events, topics

_DOCUMENTS: dict[str, Any] = {
    "inbound.schema.json": events.InboundEvent,
    "outbound.schema.json": events.OutboundEvent,
    "process_run.schema.json": events.ProcessRun,
    "execute_tool_call.schema.json": events.ExecuteToolCall,
    "tool_call_result.schema.json": events.ToolCallResult,
    "dead_letter.schema.json": events.DeadLetter,
}

_CHANNELS: dict[str, tuple[str, str, str]] = {
    # topic: (schema file, who publishes, description)
    topics.INBOUND: ("inbound.schema.json", "other systems",
                     "User messages, tool outputs and cancels; key = thread id."),
    topics.EVENTS: ("outbound.schema.json", "api, run-starter, run-poller",
                    "Assistants stream events with full objects; key = thread id."),
    topics.DLQ: ("dead_letter.schema.json", "every consumer",
                 "Records that were rejected or kept failing, with the reason."),
    topics.RUNS: ("process_run.schema.json", "api, run-starter, run-poller",
                  "Wake-ups for the run-poller; key = thread id."),
    topics.TOOL_CALLS: ("execute_tool_call.schema.json", "run-poller",
                        "Server-side tool calls; key = thread id."),
    topics.TOOL_RESULTS: ("tool_call_result.schema.json", "tool-executor",
                          "Results of server-side tool calls; key = thread id."),
}  # fmt: skip


def _schema(target: Any, title: str) -> dict[str, Any]:
    schema = TypeAdapter(target).json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": title, **schema}


def asyncapi() -> dict[str, Any]:
    """An AsyncAPI 3.0 document of Threadbus's topics."""
    channels = {}
    for topic, (schema_file, publisher, description) in _CHANNELS.items():
        channels[topic] = {
            "address": topic,
            "description": f"{description} Published by {publisher}.",
            "messages": {"event": {"payload": {"$ref": f"./{schema_file}"}}},
        }
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "Threadbus", "version": "0.1.0",
                 "description": "Event contract of Threadbus (generated; do not edit)."},
        "defaultContentType": "application/json",
        "channels": channels,
    }  # fmt: skip


def documents() -> dict[str, dict[str, Any]]:
    """File name -> JSON document, for everything in `schemas/json/`."""
    docs = {name: _schema(target, name.split(".")[0]) for name, target in _DOCUMENTS.items()}
    docs["asyncapi.json"] = asyncapi()
    return docs
