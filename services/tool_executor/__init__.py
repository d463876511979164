"""tool-executor: runs server-side tool calls, scaled on its own."""
