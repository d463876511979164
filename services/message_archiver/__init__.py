"""message-archiver: the append-only conversation archive."""
