"""The `coach` command line."""

from coach.cli.main import cli, main

__all__ = ["cli", "main"]
