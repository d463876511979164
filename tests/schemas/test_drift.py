"""The committed JSON Schemas are what the pydantic models generate."""

import json
from pathlib import Path

import pytest

from schemas import events
from schemas.jsonschema import documents

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas" / "json"


def test_committed_schemas_match_the_models() -> None:
    generated = documents()
    committed = {p.name: json.loads(p.read_text()) for p in SCHEMA_DIR.glob("*.json")}
    assert sorted(committed) == sorted(generated), "run scripts/schemas"
    for name, doc in generated.items():
        assert committed[name] == doc, f"{name} drifted from the models: run scripts/schemas"


def test_field_docs_reach_the_schema() -> None:
    inbound = documents()["inbound.schema.json"]
    text = json.dumps(inbound)
    assert "the idempotency key" in text
    assert "a new id creates the thread" in text


@pytest.mark.parametrize("event_type", ["threadbus.user_message", "threadbus.cancel_run"])
def test_inbound_union_is_discriminated_by_type(event_type: str) -> None:
    mapping = documents()["inbound.schema.json"]["discriminator"]["mapping"]
    assert event_type in mapping
    assert events.INBOUND.json_schema()["discriminator"]["propertyName"] == "type"
