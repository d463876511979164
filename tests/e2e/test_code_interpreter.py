"""User story: the code_interpreter tool through the official SDK, as the seed's walkthrough
used it; each cell runs in the thread's sandboxed kernel in the tool-executor."""

import csv
import io
import json

import pytest
from openai import AssistantEventHandler, OpenAI
from openai.types.beta.threads.runs import CodeInterpreterToolCall, ToolCall, ToolCallDelta

from tests.e2e.code_interpreter_runs import code_assistant, finished, run_code
from tests.fakes.model_server import ScriptedModelServer
from tests.system import System

FIB = (
    "def fib(n):\n"
    "    a, b = 0, 1\n"
    "    out = []\n"
    "    for _ in range(n):\n"
    "        out.append(a)\n"
    "        a, b = b, a + b\n"
    "    return out\n"
    "\n"
    "print(fib(20))\n"
)


def test_seed_fibonacci_walkthrough(client: OpenAI, model: ScriptedModelServer) -> None:
    question = "Generate the first 20 fibbonaci numbers with code."
    model.script(
        question,
        tool_calls=[{"name": "code_interpreter", "arguments": json.dumps({"code": FIB})}],
    )
    model.script("4181", reply="The first 20 Fibonacci numbers end with 2584 and 4181.")
    assistant = client.beta.assistants.create(
        name="Math Tutor",
        instructions="You are a personal math tutor. Write and run code to answer math questions.",
        tools=[{"type": "code_interpreter"}],
        model="gpt-4o",
    )
    thread = client.beta.threads.create()
    client.beta.threads.messages.create(thread.id, role="user", content=question)
    run = client.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id=assistant.id)
    assert run.status == "completed", run.last_error

    steps = client.beta.threads.runs.steps.list(run_id=run.id, thread_id=thread.id, order="asc")
    assert [s.type for s in steps.data] == ["tool_calls", "message_creation"]
    details = steps.data[0].step_details
    assert details.type == "tool_calls"
    call = details.tool_calls[0]
    assert isinstance(call, CodeInterpreterToolCall)
    assert call.code_interpreter.input == FIB
    logs = [o for o in call.code_interpreter.outputs if o.type == "logs"]
    assert len(logs) == 1
    assert "4181" in (logs[0].logs or "")
    assert "[0, 1, 1, 2, 3, 5, 8" in (logs[0].logs or "")
    reply = client.beta.threads.messages.list(thread.id, order="desc", limit=1).data[0]
    assert reply.content[0].type == "text"
    assert "4181" in reply.content[0].text.value

    # The model saw the cell's output as the tool's answer.
    followup = model.requests[-1]["messages"]
    assert followup[-1]["role"] == "tool"
    assert "4181" in followup[-1]["content"]
    offered = [t["function"]["name"] for t in model.requests[-1]["tools"]]
    assert offered == ["code_interpreter"]


def test_a_plot_comes_back_as_an_image_file(client: OpenAI, model: ScriptedModelServer) -> None:
    assistant_id = code_assistant(client)
    thread = client.beta.threads.create()
    code = (
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3], [1, 4, 9])\n"
        "plt.title('squares')\n"
        "plt.show()\n"
        "print('plotted')\n"
    )
    done = run_code(client, model, assistant_id, thread.id, code, answer_on="plotted",
                    reply="Here is the plot of the squares.")  # fmt: skip
    assert done.run.status == "completed", done.run.last_error
    images = [o for o in done.call.code_interpreter.outputs if o.type == "image"]
    assert len(images) == 1
    image_id = images[0].image.file_id
    assert [p.type for p in done.reply.content] == ["image_file", "text"]
    assert done.reply.content[0].image_file.file_id == image_id
    assert done.reply.content[1].text.value == "Here is the plot of the squares."
    png = client.files.content(image_id).read()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 1000
    assert client.files.retrieve(image_id).purpose == "assistants_output"


def test_a_csv_is_transformed_and_returned_as_a_file_path(
    client: OpenAI, model: ScriptedModelServer
) -> None:
    prices = client.files.create(file=("prices.csv", b"item,price\napple,3\npear,5\n"),
                                 purpose="assistants")  # fmt: skip
    rates = client.files.create(file=("rates.json", b'{"rate": 2}'), purpose="assistants")
    resources = {"code_interpreter": {"file_ids": [rates.id]}}
    assistant_id = code_assistant(client, tool_resources=resources)
    thread = client.beta.threads.create()
    code = (
        "import json, pandas as pd\n"
        "rate = json.load(open('/mnt/data/rates.json'))['rate']\n"
        "df = pd.read_csv('/mnt/data/prices.csv')\n"
        "df['price'] = df['price'] * rate\n"
        "df.to_csv('/mnt/data/doubled.csv', index=False)\n"
        "print(df.to_string(index=False))\n"
    )
    reply = "Prices doubled: [doubled.csv](sandbox:/mnt/data/doubled.csv)."
    attach = [{"file_id": prices.id, "tools": [{"type": "code_interpreter"}]}]
    done = run_code(client, model, assistant_id, thread.id, code, answer_on="pear", reply=reply,
                    attachments=attach)  # fmt: skip
    assert done.run.status == "completed", done.run.last_error
    assert "apple" in done.logs
    assert "10" in done.logs
    text = done.reply.content[0].text
    assert text.value == reply
    [annotation] = text.annotations
    assert annotation.type == "file_path"
    assert annotation.text == "sandbox:/mnt/data/doubled.csv"
    assert text.value[annotation.start_index : annotation.end_index] == annotation.text
    output = client.files.retrieve(annotation.file_path.file_id)
    assert output.purpose == "assistants_output"
    assert output.filename == "doubled.csv"
    rows = list(csv.reader(io.StringIO(client.files.content(output.id).text)))
    assert rows == [["item", "price"], ["apple", "6"], ["pear", "10"]]
    # The model was told which files the code wrote, and how to link them.
    assert "sandbox:/mnt/data/doubled.csv" in model.requests[-1]["messages"][-1]["content"]


def test_state_is_kept_across_runs_of_a_thread(client: OpenAI, model: ScriptedModelServer) -> None:
    assistant_id = code_assistant(client)
    thread = client.beta.threads.create()
    first = run_code(client, model, assistant_id, thread.id, "x = 41\nprint('set', x)",
                     answer_on="set 41")  # fmt: skip
    assert first.run.status == "completed", first.run.last_error
    second = run_code(client, model, assistant_id, thread.id, "print('x+1 =', x + 1)",
                      answer_on="x+1 = 42")  # fmt: skip
    assert second.run.status == "completed", second.run.last_error
    assert "x+1 = 42" in second.logs
    # Another thread has a kernel of its own.
    other = client.beta.threads.create()
    third = run_code(client, model, assistant_id, other.id, "print('x' in dir())",
                     answer_on="False")  # fmt: skip
    assert "False" in third.logs


def test_an_exception_is_a_traceback_and_the_run_goes_on(
    client: OpenAI, model: ScriptedModelServer
) -> None:
    assistant_id = code_assistant(client)
    thread = client.beta.threads.create()
    done = run_code(client, model, assistant_id, thread.id, "1 / 0", answer_on="ZeroDivisionError",
                    reply="Dividing by zero is undefined.")  # fmt: skip
    assert done.run.status == "completed", done.run.last_error
    assert "Traceback" in done.logs
    assert "ZeroDivisionError: division by zero" in done.logs
    assert "\x1b[" not in done.logs  # no terminal colours
    assert done.reply.content[0].text.value == "Dividing by zero is undefined."


def test_an_overlong_cell_is_interrupted_and_the_model_told(
    client: OpenAI, model: ScriptedModelServer
) -> None:
    assistant_id = code_assistant(client)
    thread = client.beta.threads.create()
    run_code(client, model, assistant_id, thread.id, "kept = 'yes'", answer_on="printed nothing")
    done = run_code(client, model, assistant_id, thread.id, "while True:\n    pass",
                    answer_on="was interrupted")  # fmt: skip
    assert done.run.status == "completed", done.run.last_error
    assert "KeyboardInterrupt" in done.logs
    assert "ran longer than 4 s and was interrupted" in done.logs
    after = run_code(client, model, assistant_id, thread.id, "print('kept', kept)",
                     answer_on="kept yes")  # fmt: skip
    assert "kept yes" in after.logs


def test_a_crashed_kernel_is_recreated_with_the_threads_files(
    client: OpenAI, model: ScriptedModelServer
) -> None:
    assistant_id = code_assistant(client)
    thread = client.beta.threads.create()
    setup = "open('/mnt/data/notes.txt', 'w').write('remember me')\nstate = 1\nprint('saved')"
    run_code(client, model, assistant_id, thread.id, setup, answer_on="saved")
    crash = run_code(client, model, assistant_id, thread.id, "import os\nos._exit(3)",
                     answer_on="crashed")  # fmt: skip
    assert crash.run.status == "completed", crash.run.last_error
    assert "the Python session crashed" in crash.logs
    check = "print(open('/mnt/data/notes.txt').read())\nprint('state' in dir())\n"
    after = run_code(client, model, assistant_id, thread.id, check, answer_on="remember me")
    assert "remember me\nFalse" in after.logs
    told = model.requests[-1]["messages"][-1]["content"]
    assert "new Python session" in told


@pytest.mark.slow
def test_a_new_executor_recreates_the_session_with_the_files(
    client: OpenAI, model: ScriptedModelServer, system: System
) -> None:
    """The thread's calls move to another executor (here: its replacement after a crash)."""
    assistant_id = code_assistant(client)
    thread = client.beta.threads.create()
    setup = "open('/mnt/data/kept.txt', 'w').write('still here')\nvalue = 7\nprint('ok')"
    run_code(client, model, assistant_id, thread.id, setup, answer_on="ok")
    system.services["tool_executor"].kill()
    system.spawn("tool_executor")
    check = "print(open('kept.txt').read(), 'value' in dir())"
    after = run_code(client, model, assistant_id, thread.id, check, answer_on="still here")
    assert after.run.status == "completed", after.run.last_error
    assert "still here False" in after.logs


def test_streaming_sends_the_code_in_fragments_then_the_outputs(
    client: OpenAI, model: ScriptedModelServer
) -> None:
    code = "".join(f"v{i} = {i} * {i}\n" for i in range(60)) + "print('sum', v59 + v58)\n"
    model.script("stream a cell", tool_calls=[
        {"name": "code_interpreter", "arguments": json.dumps({"code": code})}])  # fmt: skip
    model.script("sum 6845", reply="The sum is 6845.")
    assistant_id = code_assistant(client)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "stream a cell"}])
    deltas = []
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant_id) as stream:
        for event in stream:
            if event.event == "thread.run.step.delta":
                deltas.append(event.data.delta.step_details)
            if event.event == "thread.run.step.completed" and event.data.type == "tool_calls":
                completed = event.data
        run = stream.get_final_run()
    assert run.status == "completed"
    pieces = [d.tool_calls[0] for d in deltas if d is not None and d.type == "tool_calls"]
    inputs = [p.code_interpreter.input for p in pieces
              if p.code_interpreter and p.code_interpreter.input]  # fmt: skip
    assert len(inputs) > 1  # in fragments
    assert "".join(inputs) == code
    assert pieces[0].code_interpreter is not None
    assert pieces[0].code_interpreter.input == ""
    outputs = [o for p in pieces if p.code_interpreter for o in p.code_interpreter.outputs or []]
    assert [o.type for o in outputs] == ["logs"]
    assert "sum 6845" in (outputs[0].logs or "")
    retrieved = client.beta.threads.runs.steps.retrieve(
        completed.id, thread_id=thread.id, run_id=run.id
    )
    assert completed.model_dump() == retrieved.model_dump()
    assert finished(client, run).call.code_interpreter.input == code


class SnapshotRecorder(AssistantEventHandler):
    """Keeps the SDK's accumulated snapshot of the code at each tool-call delta."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: list[str] = []
        self.done: list[ToolCall] = []

    def on_tool_call_delta(self, delta: ToolCallDelta, snapshot: ToolCall) -> None:  # noqa: ARG002
        if snapshot.type == "code_interpreter":
            self.inputs.append(snapshot.code_interpreter.input)

    def on_tool_call_done(self, tool_call: ToolCall) -> None:
        self.done.append(tool_call)


def test_scenario_48_the_handlers_snapshots_accumulate_the_code(
    client: OpenAI, model: ScriptedModelServer
) -> None:
    code = "".join(f"print('line {i}', {i} ** 2)\n" for i in range(40))
    model.script("scenario 48", tool_calls=[
        {"name": "code_interpreter", "arguments": json.dumps({"code": code})}])  # fmt: skip
    model.script("line 39 1521", reply="Printed forty lines.")
    assistant_id = code_assistant(client)
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "scenario 48"}])
    handler = SnapshotRecorder()
    with client.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant_id, event_handler=handler
    ) as stream:
        stream.until_done()
    assert handler.inputs[-1] == code
    assert len({len(i) for i in handler.inputs}) > 2  # the snapshot grew fragment by fragment
    assert all(code.startswith(i) for i in handler.inputs)
    # The SDK reports the call done when its step completes (and again when the run does).
    assert len({c.id for c in handler.done}) == 1
    call = handler.done[0]
    assert isinstance(call, CodeInterpreterToolCall)
    logs = [o for o in call.code_interpreter.outputs if o.type == "logs"]
    assert "line 39 1521" in (logs[0].logs or "")


def test_nul_characters_and_undecodable_file_names_do_not_stop_the_run(
    client: OpenAI, model: ScriptedModelServer
) -> None:
    """Postgres stores neither NUL nor invalid UTF-8; a cell can produce both."""
    assistant_id = code_assistant(client)
    thread = client.beta.threads.create()
    code = (
        "open(b'/mnt/data/\\xffname.txt', 'wb').write(b'x')\n"
        "open('/mnt/data/fine.txt', 'w').write('y')\n"
        "print('nul:\\x00:end')\n"
    )
    done = run_code(client, model, assistant_id, thread.id, code, answer_on="nul:")
    assert done.run.status == "completed", done.run.last_error
    assert "nul:\ufffd:end" in done.logs
    told = model.requests[-1]["messages"][-1]["content"]
    assert "1 file(s) with names that are not UTF-8 text were not saved" in told
    assert "sandbox:/mnt/data/fine.txt" in told
