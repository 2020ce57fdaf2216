"""xrouter.evaluate."""
