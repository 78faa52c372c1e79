"""The ``carbon-sink`` entry point."""

from __future__ import annotations


def main() -> None:
    from flows.cli import main as cli_main  # noqa: PLC0415

    cli_main()
