"""What the model sees: a run's instructions and its thread's messages as a chat request."""

from typing import Any

from schemas.runs import Run
from schemas.threads import Message


def _content(message: Message) -> str | list[dict[str, Any]]:
    texts = [p.text.value for p in message.content if p.type == "text"]
    images = [p.image_url for p in message.content if p.type == "image_url"]
    if not images:
        return "\n".join(texts)
    parts: list[dict[str, Any]] = [{"type": "text", "text": t} for t in texts]
    parts += [
        {"type": "image_url", "image_url": {"url": i.url, "detail": i.detail or "auto"}}
        for i in images
    ]
    return parts


def chat_request(run: Run, history: list[Message], *, reply_id: str) -> dict[str, Any]:
    """The Chat Completions request for the run's next turn.

    `history` is the thread in order; the reply being written (`reply_id`) is left out.
    """
    messages = [m for m in history if m.id != reply_id and m.content]
    strategy = run.truncation_strategy
    if strategy is not None and strategy.type == "last_messages" and strategy.last_messages:
        messages = messages[-strategy.last_messages :]
    chat: list[dict[str, Any]] = []
    if run.instructions:
        chat.append({"role": "system", "content": run.instructions})
    chat += [{"role": m.role, "content": _content(m)} for m in messages]
    request: dict[str, Any] = {"model": run.model, "messages": chat}
    if run.temperature is not None:
        request["temperature"] = run.temperature
    if run.top_p is not None:
        request["top_p"] = run.top_p
    return request
