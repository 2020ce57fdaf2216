"""xrouter.orchestrator."""
