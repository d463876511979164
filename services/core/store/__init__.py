"""SQL for the Assistants objects: small async functions that take the connection first."""
