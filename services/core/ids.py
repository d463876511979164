"""Object ids with the Assistants prefixes."""

import secrets
import string
from typing import Literal

_ALPHABET = string.ascii_letters + string.digits

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
    return f"{prefix}{separator}" + "".join(secrets.choice(_ALPHABET) for _ in range(24))
