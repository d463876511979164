"""Cleaning secrets out of text that came from elsewhere (a provider's error message) before it
reaches `last_error`, logs or events.

Known secrets (the configured keys) are replaced wherever they appear; so is anything shaped
like a credential: OpenAI-style and Threadbus keys, bearer tokens, `key=`/`password:`-style
assignments and the user:password of a URL.
"""

import re
from collections.abc import Iterable

HIDDEN = "[redacted]"

_PATTERNS = [
    re.compile(r"\b(?:sk|tb|rk|pk)-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]{6,}"),
    re.compile(
        r"(?i)\b((?:api[_-]?key|access[_-]?key|secret|password|passwd|token|authorization)"
        r"[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&]{4,}"
    ),
    re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/\s:@]+:[^/\s@]+@"),
]


def clean(text: str, known: Iterable[str | None] = ()) -> str:
    """`text` with every known secret and credential-shaped value replaced by `[redacted]`."""
    for secret in known:
        if secret and len(secret) >= 4:
            text = text.replace(secret, HIDDEN)
    text = _PATTERNS[0].sub(HIDDEN, text)
    text = _PATTERNS[1].sub(lambda m: f"{m.group(1)} {HIDDEN}", text)
    text = _PATTERNS[2].sub(lambda m: f"{m.group(1)}{HIDDEN}", text)
    return _PATTERNS[3].sub(lambda m: f"{m.group(1)}{HIDDEN}@", text)
