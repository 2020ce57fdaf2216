"""xrouter.records."""
