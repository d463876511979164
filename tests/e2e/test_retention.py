"""Retention: the message-archiver prunes the bookkeeping tables past their age, nothing newer."""

import uuid

from openai import OpenAI

from tests.fakes.model_server import ScriptedModelServer
from tests.system import System, wait_until

AGES = {  # table: (insert of one row aged $1 days, how a row is told apart, default days)
    "processed_events": (
        "INSERT INTO processed_events (consumer, event_id, processed_at)"
        " VALUES ('retention-test', $2, now() - make_interval(secs => $1 * 86400))",
        "SELECT event_id AS id FROM processed_events WHERE consumer = 'retention-test'", 7),
    "archive": (
        "INSERT INTO archive (thread_id, event_id, type, event, archived_at)"
        " VALUES ('thread_retention', $2, 't', '{}', now() - make_interval(secs => $1 * 86400))",
        "SELECT event_id AS id FROM archive WHERE thread_id = 'thread_retention'", 30),
    "outbox_dead": (
        "INSERT INTO outbox_dead (id, topic, key, payload, reason, failed_at)"
        " VALUES (-(floor(random() * 1e12)::bigint), 'retention-test', $2, '{}', 'test',"
        " now() - make_interval(secs => $1 * 86400))",
        "SELECT key AS id FROM outbox_dead WHERE topic = 'retention-test'", 30),
    "workers": (
        "INSERT INTO workers (owner, service, heartbeat_at)"
        " VALUES ($2, 'retention-test', now() - make_interval(secs => $1 * 86400))",
        "SELECT owner AS id FROM workers WHERE service = 'retention-test'", 1),
}  # fmt: skip


def test_the_archiver_prunes_what_is_past_its_retention_and_keeps_the_rest(
    system: System, client: OpenAI, model: ScriptedModelServer
) -> None:
    kept, pruned = {}, {}
    for table, (insert, _, days) in AGES.items():
        kept[table], pruned[table] = f"new-{uuid.uuid4().hex}", f"old-{uuid.uuid4().hex}"
        system.sql(insert, days - 0.5, kept[table])  # younger than the default retention
        system.sql(insert, days + 1, pruned[table])  # older
    # run_streams rows belong to runs: age the row of a real run.
    model.script("an old run", reply="long ago")
    assistant = client.beta.assistants.create(model="gpt-4o")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "an old run"}])
    old = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    wait_until(lambda: system.sql("SELECT 1 FROM run_streams WHERE run_id = $1", old.id))
    system.sql(
        "UPDATE run_streams SET recorded_at = now() - interval '8 days' WHERE run_id = $1", old.id
    )
    archiver = system.spawn(
        "message_archiver", label="archiver_retention", THREADBUS_RETENTION_INTERVAL_SECONDS="0.5"
    )
    try:
        for table, (_, select, _) in AGES.items():
            ids = wait_until(
                lambda select=select, table=table: (
                    (found := {r["id"] for r in system.sql(select)})
                    and pruned[table] not in found
                    and found
                ),
                timeout=30,
            )
            assert ids == {kept[table]}, table
        assert not system.sql("SELECT 1 FROM run_streams WHERE run_id = $1", old.id)
        assert "retention pruned" in system.log("archiver_retention")
    finally:
        archiver.kill()
