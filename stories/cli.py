"""Command line: `stories serve | worker | migrate | seed`.

A bad configuration exits 2 with one line naming the variable, before trio.run; an unreachable or refused
database at start exits 3 with one line. No tracebacks for either.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from typing import TYPE_CHECKING

import trio

from stories import __version__, runtime
from stories.errors import ConfigError, Conflict, StoreUnavailable
from stories.logging import configure_logging
from stories.seed import DEFAULT_SEED_PASSWORD
from stories.settings import Settings, load_settings

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["main"]

EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 3
EXIT_CONFLICT = 4


def _innermost(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real error inside (nested) nursery groups: the line an operator should read."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stories", description="Backend for ephemeral Stories.")
    parser.add_argument("--version", action="version", version=f"stories {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("serve", help="run the API, WebSocket and every actor in this process")
    commands.add_parser("worker", help="run the expiry worker alone (for deployments that keep it apart)")
    commands.add_parser("migrate", help="apply the database migrations and exit")
    seed = commands.add_parser("seed", help="fill the database with generated users, follows and stories")
    seed.add_argument("--users", type=int, default=2_000, help="how many users (default 2000)")
    seed.add_argument("--stories", type=int, default=100_000, help="how many stories (default 100000)")
    seed.add_argument("--follows-per-user", type=int, default=50, help="average follows per user (default 50)")
    seed.add_argument("--tag", default="seed", help="email prefix: <tag>-000000@example.com ... (default seed)")
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
        elif args.command == "worker":
            trio.run(runtime.worker, settings)
        elif args.command == "migrate":
            trio.run(runtime.run_migrations, settings)
        elif args.command == "seed":
            seed = partial(
                runtime.seed,
                users=args.users,
                stories=args.stories,
                follows_per_user=args.follows_per_user,
                tag=args.tag,
            )
            summary = trio.run(seed, settings)
            print(
                f"stories: seeded {summary.users} users, {summary.follows} follows, {summary.stories} stories "
                f"({summary.live} live), {summary.views} views, {summary.reactions} reactions; "
                f"every password is {DEFAULT_SEED_PASSWORD!r}"
            )
    except* ConfigError as group:
        print(f"stories: invalid configuration: {_innermost(group)}", file=sys.stderr)
        exit_code = EXIT_CONFIG
    except* StoreUnavailable as group:
        print(f"stories: database unavailable: {_innermost(group)}", file=sys.stderr)
        exit_code = EXIT_UNAVAILABLE
    except* Conflict as group:
        print(f"stories: {_innermost(group)}", file=sys.stderr)
        exit_code = EXIT_CONFLICT
    except* KeyboardInterrupt:
        # A Ctrl-C before the signal watcher was installed (during start-up): stop quietly.
        exit_code = 130
    return exit_code
