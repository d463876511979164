"""api: the Assistants-compatible HTTP surface under /v1."""
