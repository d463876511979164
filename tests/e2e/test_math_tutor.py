"""User story: the Assistants overview's Math Tutor, through the official SDK over HTTP."""

from concurrent.futures import ThreadPoolExecutor

from openai import OpenAI

from tests.fakes.model_server import ScriptedModelServer

INSTRUCTIONS = "You are a personal math tutor. Answer questions briefly, in a sentence or less."
QUESTION = "I need to solve the equation `3x + 11 = 14`. Can you help me?"
ANSWER = "Subtract 11 from both sides, then divide by 3: x = 1."
FOLLOW_UP = "Could you explain this to me?"
EXPLANATION = "Undo each operation in reverse order to isolate x."


def test_math_tutor_answers_in_a_thread(client: OpenAI, model: ScriptedModelServer) -> None:
    model.script("3x + 11 = 14", reply=ANSWER)
    model.script(FOLLOW_UP, reply=EXPLANATION)
    assistant = client.beta.assistants.create(
        name="Math Tutor", instructions=INSTRUCTIONS, model="gpt-4o"
    )
    assert assistant.id.startswith("asst_")
    assert client.beta.assistants.retrieve(assistant.id).instructions == INSTRUCTIONS

    thread = client.beta.threads.create()
    client.beta.threads.messages.create(thread_id=thread.id, role="user", content=QUESTION)
    run = client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "queued"
    assert run.instructions == INSTRUCTIONS
    assert run.expires_at is not None

    run = client.beta.threads.runs.poll(run.id, thread_id=thread.id)
    assert run.status == "completed"
    assert run.completed_at is not None
    assert run.started_at is not None
    assert run.expires_at is None
    assert run.usage is not None
    assert run.usage.total_tokens == run.usage.prompt_tokens + run.usage.completion_tokens > 0

    messages = client.beta.threads.messages.list(thread_id=thread.id)
    assert [m.role for m in messages.data] == ["assistant", "user"]
    reply = messages.data[0]
    assert reply.content[0].type == "text"
    assert reply.content[0].text.value == ANSWER
    assert (reply.run_id, reply.assistant_id, reply.status) == (run.id, assistant.id, "completed")

    # The model saw the instructions first, then the question.
    sent = [r for r in model.requests if "3x + 11" in str(r["messages"])][-1]
    assert sent["model"] == "gpt-4o"
    assert sent["messages"][0] == {"role": "system", "content": INSTRUCTIONS}
    assert sent["messages"][-1] == {"role": "user", "content": QUESTION}

    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id)
    assert len(steps.data) == 1
    step = steps.data[0]
    assert step.type == "message_creation"
    assert step.status == "completed"
    assert step.step_details.type == "message_creation"
    assert step.step_details.message_creation.message_id == reply.id
    assert step.usage is not None

    follow_up = client.beta.threads.messages.create(
        thread_id=thread.id, role="user", content=FOLLOW_UP
    )
    second = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id
    )
    assert second.status == "completed"
    newer = client.beta.threads.messages.list(thread_id=thread.id, order="asc", after=follow_up.id)
    assert [m.content[0].text.value for m in newer.data] == [EXPLANATION]  # type: ignore[union-attr]
    assert newer.data[0].run_id == second.id

    # The second turn carried the whole conversation.
    sent = [r for r in model.requests if FOLLOW_UP in str(r["messages"])][-1]
    assert [m["role"] for m in sent["messages"]] == ["system", "user", "assistant", "user"]
    assert sent["messages"][2]["content"] == ANSWER

    runs = client.beta.threads.runs.list(thread_id=thread.id)
    assert [r.id for r in runs.data] == [second.id, run.id]


def test_three_threads_run_concurrently(client: OpenAI) -> None:
    assistant = client.beta.assistants.create(
        name="Math Tutor", instructions=INSTRUCTIONS, model="gpt-4o"
    )

    def converse(n: int) -> tuple[str, str]:
        thread = client.beta.threads.create(
            messages=[{"role": "user", "content": f"What is {n} + {n}?"}]
        )
        run = client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id
        )
        reply = client.beta.threads.messages.list(thread_id=thread.id, limit=1).data[0]
        return run.status, reply.content[0].text.value  # type: ignore[union-attr]

    with ThreadPoolExecutor(3) as pool:
        results = list(pool.map(converse, [1, 2, 3]))
    assert results == [("completed", f"Echo: What is {n} + {n}?") for n in (1, 2, 3)]
