"""`acopio sync ...` commands (registered by appliance/cli.py)."""

from __future__ import annotations

import argparse


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add `acopio sync` and its subcommands to the CLI."""
