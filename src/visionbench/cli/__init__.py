"""The command line: parse, call the Python API, print. No logic of its own."""

from visionbench.cli.main import cli, main

__all__ = ["cli", "main"]
