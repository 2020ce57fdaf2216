"""xrouter.train: reinforcement learning of the router policy."""
