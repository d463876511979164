"""run-poller: drives runs through their statuses."""
