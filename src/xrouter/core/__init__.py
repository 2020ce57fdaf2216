"""xrouter.core."""
