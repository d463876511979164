"""Object ids with the Assistants prefixes."""

import secrets
import string
from typing import Literal

_ALPHABET = string.ascii_letters + string.digits
_LENGTH = 24

Prefix = Literal[
    "asst",
    "thread",
    "msg",
    "run",
    "step",
    "call",
    "evt",
    "cmd",
    "dlq",
    "file",
    "vs",
    "vsfb",
    "proj",
    "key",
]


def new_id(prefix: Prefix) -> str:
    """A random id such as `run_4fJ9...` (24 random characters, about 142 bits).

    Files are `file-...`, as in the hosted API.
    """
    separator = "-" if prefix == "file" else "_"
    # One read of the system's randomness per id (`secrets.choice` made one per character,
    # 24 system calls, and a run makes a dozen ids). A byte below 248 (4 x 62) maps to a
    # character uniformly; the rest are dropped.
    chars: list[str] = []
    while len(chars) < _LENGTH:
        chars += [_ALPHABET[b % 62] for b in secrets.token_bytes(32) if b < 248]
    return f"{prefix}{separator}" + "".join(chars[:_LENGTH])
