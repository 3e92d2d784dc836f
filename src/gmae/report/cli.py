"""Command-line entry points of gmae.report (registered by gmae.cli)."""

from __future__ import annotations


def register(subparsers, groups) -> None:
    """Add this package's commands to the `gmae` parser."""
