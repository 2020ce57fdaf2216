"""xrouter.backends."""
