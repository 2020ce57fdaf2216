"""The ``xrouter`` command line."""

from xrouter.cli.app import app, main

__all__ = ["app", "main"]
