"""xrouter.policies."""
