"""run-starter: the Kafka front door for user messages."""
