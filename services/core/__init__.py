"""What two or more services share: settings, database, bus, ids, errors, store, model client."""
