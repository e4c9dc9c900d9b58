"""Command line: `stories serve | migrate`. A bad configuration exits 2 with one line, before trio.run."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

import trio

from stories import __version__, runtime
from stories.errors import ConfigError, StoreUnavailable
from stories.logging import configure_logging
from stories.settings import Settings, load_settings

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["main"]

EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stories", description="Backend for ephemeral Stories.")
    parser.add_argument("--version", action="version", version=f"stories {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("serve", help="run the API, WebSocket and every actor in this process")
    commands.add_parser("migrate", help="apply the database migrations and exit")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings: Settings = load_settings()
    except ConfigError as error:
        print(f"stories: invalid configuration: {error}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_level)
    exit_code = 0
    try:
        if args.command == "serve":
            trio.run(runtime.serve, settings)
        elif args.command == "migrate":
            trio.run(runtime.run_migrations, settings)
    except* ConfigError as group:
        print(f"stories: invalid configuration: {group.exceptions[0]}", file=sys.stderr)
        exit_code = EXIT_CONFIG
    except* StoreUnavailable as group:
        print(f"stories: database unavailable: {group.exceptions[0]}", file=sys.stderr)
        exit_code = EXIT_UNAVAILABLE
    except* KeyboardInterrupt:
        # A Ctrl-C before the signal watcher was installed (during start-up): stop quietly.
        exit_code = 130
    return exit_code
