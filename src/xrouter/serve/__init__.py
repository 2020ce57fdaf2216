"""The OpenAI-compatible gateway: the server, its API keys and its request log."""
