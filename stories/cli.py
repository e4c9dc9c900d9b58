"""Command line: `stories serve | worker | migrate | seed | listen | admin`.

A bad configuration exits 2 with one line naming the variable, before trio.run; an unreachable or refused
database at start exits 3 with one line. No tracebacks for either.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from functools import partial
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import trio

from stories import __version__, runtime
from stories.api.server import hold_port
from stories.errors import ConfigError, Conflict, StoreUnavailable
from stories.logging import configure_logging
from stories.progress import seed_progress
from stories.seed import DEFAULT_SEED_PASSWORD
from stories.settings import MAX_WORKERS, Settings, load_settings, mask_url
from stories.workers import serve_workers
from stories.ws_client import ListenFailed, listen

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import TextIO

__all__ = ["listening_line", "main"]

EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 3
EXIT_CONFLICT = 4
EXIT_LISTEN_FAILED = 5
EXIT_UNKNOWN_USER = 6
# `stories listen` takes its token from here when --token is not given (a token on the command line shows in `ps`).
TOKEN_VARIABLE = "STORIES_TOKEN"


# How a command that fails with one of these errors ends: with its exit code, and a line `stories: <prefix><error>`
# on stderr (the first real error, when it comes inside nursery groups). Any other error is a bug: a traceback.
_FAILURES: dict[type[Exception], tuple[int, str]] = {
    ConfigError: (EXIT_CONFIG, "invalid configuration: "),
    StoreUnavailable: (EXIT_UNAVAILABLE, "database unavailable: "),
    Conflict: (EXIT_CONFLICT, ""),
    ListenFailed: (EXIT_LISTEN_FAILED, "listen: "),
}


def _run(command: Callable[[], int | None]) -> int:
    """The exit code of `command`: its own (None is 0), or that of the error it fails with (`_FAILURES`)."""
    exit_code = 0
    try:
        exit_code = command() or 0
    except* tuple(_FAILURES) as group:
        for error_type, (code, prefix) in _FAILURES.items():
            failed, _ = group.split(error_type)
            if failed is not None:
                print(f"stories: {prefix}{_innermost(failed)}", file=sys.stderr)
                exit_code = code
    except* KeyboardInterrupt:
        # Ctrl-C: how `listen` stops, or one before the signal watcher of the other commands is installed (during
        # their start-up). Either way, stop quietly.
        exit_code = 130
    return exit_code


def _innermost(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first real error inside (nested) nursery groups: the line an operator should read."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


_SETTINGS_POINTER = (
    "Settings come from the environment and ./.env (the real environment wins); docs/configuration.md\n"
    "lists every variable with its default."
)
_DATABASE = (
    "  DATABASE_URL   postgres://user:pass@host:5432/db (unset: an embedded PostgreSQL in DATA_DIR)\n"
    "  DATABASE_DIRECT_URL  the server itself when DATABASE_URL is a transaction pooler (unset: DATABASE_URL)\n"
    "  DATA_DIR       embedded state (default ./.stories)\n"
)
_DESCRIPTIONS = {
    "serve": (
        "Run the API, the WebSocket and every actor (the expiry worker included) in this process.\n\n"
        "Reads, among others:\n"
        "  PORT, HOST     listen address (default 0.0.0.0:5000)\n"
        f"{_DATABASE}"
        "  REDIS_URL      or REDIS_ADDR + REDIS_PASSWORD: shared rate limits, events (unset: off)\n"
        "  JWT_SECRET     HS256 key (unset: generated in DATA_DIR; required in production)\n"
        "  MINIO_ENDPOINT and MINIO_*: object storage for uploads\n"
        "  WORKERS        server processes on one port (default 1; --workers N)\n"
        "  DRAIN_SECONDS  how long in-flight requests may finish after SIGTERM (default 5)\n"
        "  DB_POOL_SIZE, FEED_CACHE_SECONDS, BCRYPT_COST, LOG_LEVEL, STORIES_ENV\n"
    ),
    "worker": (
        "Run the expiry worker alone, for deployments that keep it apart (safe next to serve),\n"
        "with /healthz, /readyz and /metrics on PORT (next to serve on one machine: another PORT).\n\n"
        "Reads:\n"
        "  PORT, HOST     listen address of the probes (default 0.0.0.0:5000)\n"
        f"{_DATABASE}"
        "  EXPIRY_INTERVAL_SECONDS  how often it runs (default 60)\n"
        "  RETENTION_DAYS, DRAIN_SECONDS, LOG_LEVEL\n"
    ),
    "migrate": f"Apply the database migrations and exit.\n\nReads:\n{_DATABASE}",
    "listen": (
        "Print a user's realtime events (story.viewed, story.reacted) from a running service's /ws,\n"
        "one JSON line each, until --count events arrived or Ctrl-C. Exits 5, with one line on stderr,\n"
        "when the connection fails, the token is refused or the server closes the socket.\n\n"
        "Reads:\n"
        f"  {TOKEN_VARIABLE}  the user's token when --token is not given\n"
        "  PORT           the port of --url's default, http://127.0.0.1:$PORT (default 5000)\n"
    ),
    "admin": (
        'Grant or revoke the moderator role (API.md "Reports and moderation") of the user with this email,\n'
        "in the configured database; the change applies to the user's next /admin request on every process\n"
        "and is written to the moderation audit log. Exits 6, with one line on stderr, for an unknown email.\n\n"
        f"Reads:\n{_DATABASE}"
    ),
    "seed": (
        "Fill the database with generated users, follows, stories, views and reactions\n"
        f"(every password is {DEFAULT_SEED_PASSWORD!r}). Says which database first; shows progress on a\n"
        "terminal, else logs one line as each phase begins and ends.\n\n"
        f"Reads:\n{_DATABASE}"
        "  BCRYPT_COST, STORY_TTL_SECONDS\n"
    ),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stories",
        description="Backend for ephemeral Stories.",
        epilog=_SETTINGS_POINTER,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"stories {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=summary,
            description=_DESCRIPTIONS[name],
            epilog=_SETTINGS_POINTER,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    serve = command("serve", "run the API, WebSocket and every actor in this process")
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="run N server processes on one port, each a full actor system (default: WORKERS, else 1)",
    )
    # Set by the --workers parent for its children: serve this process alone.
    serve.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    command("worker", "run the expiry worker alone, with its probes and metrics on PORT")
    command("migrate", "apply the database migrations and exit")
    seed = command("seed", "fill the database with generated users, follows and stories")
    seed.add_argument("--users", type=int, default=2_000, metavar="N", help="how many users (default 2000)")
    seed.add_argument("--stories", type=int, default=100_000, metavar="N", help="how many stories (default 100000)")
    seed.add_argument(
        "--follows-per-user", type=int, default=50, metavar="N", help="average follows per user (default 50)"
    )
    seed.add_argument(
        "--tag", default="seed", metavar="T", help="email prefix: <tag>-000000@example.com ... (default seed)"
    )
    listener = command("listen", "print a user's realtime events as JSON lines")
    listener.add_argument("--url", help="the service's base URL (default http://127.0.0.1:$PORT), or ws(s)://.../ws")
    listener.add_argument("--token", help=f"the user's token (a sign-up's or login's; default ${TOKEN_VARIABLE})")
    listener.add_argument("--count", type=int, metavar="N", help="exit 0 after N events (default: run until Ctrl-C)")
    admin = command("admin", "grant or revoke the moderator role of a user")
    verbs = admin.add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    for verb, summary in (("grant", "make the user a moderator"), ("revoke", "take the moderator role away")):
        verbs.add_parser(verb, help=summary, description=f"{summary[0].upper()}{summary[1:]}.").add_argument(
            "email", help="the user's email, as they signed up with it (case does not matter)"
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings: Settings = load_settings()
    except ConfigError as error:
        print(f"stories: invalid configuration: {error}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "serve" and args.workers is not None:
        if not 1 <= args.workers <= MAX_WORKERS:
            print(f"stories: invalid configuration: --workers must be 1 to {MAX_WORKERS}", file=sys.stderr)
            return EXIT_CONFIG
        settings = dataclasses.replace(settings, workers=args.workers)
    if args.command == "listen":
        return _listen(args, settings)
    if args.command == "seed" and sys.stderr.isatty() and settings.log_level in ("debug", "info"):
        # On a terminal the progress display says what happens; info lines would only break it up.
        configure_logging("warning")
    else:
        configure_logging(settings.log_level)
    return _run(partial(_command, args, settings))


def _command(args: argparse.Namespace, settings: Settings) -> int | None:
    """Runs the command `args` names; its exit code, or None once it has done its work."""
    if args.command == "serve" and settings.workers > 1 and not args.child:
        trio.run(partial(serve_workers, settings, task_status=_Announce()))
    elif args.command == "serve" and not args.child:
        # The port first, before the embedded database and object store start: a second `stories serve`
        # on a taken port says so at once. The server then serves on this very socket.
        with hold_port(settings) as held:
            trio.run(partial(runtime.serve, settings, held=held, task_status=_Announce()))
    elif args.command == "serve":
        trio.run(runtime.serve, settings)  # a --workers child: its parent says where they listen
    elif args.command == "worker":
        trio.run(runtime.worker, settings)
    elif args.command == "migrate":
        trio.run(runtime.run_migrations, settings)
    elif args.command == "admin":
        return _admin(args, settings)
    elif args.command == "seed":
        print(
            f"stories: seeding {_database_name(settings)} with {args.users} users ({args.tag}-000000@example.com "
            f"...), {args.stories} stories; every password is {DEFAULT_SEED_PASSWORD!r}",
            file=sys.stderr,
            flush=True,
        )
        with seed_progress(sys.stderr) as progress:
            seed = partial(
                runtime.seed,
                users=args.users,
                stories=args.stories,
                follows_per_user=args.follows_per_user,
                tag=args.tag,
                progress=progress,
            )
            summary = trio.run(seed, settings)
        print(
            f"stories: seeded {summary.users} users, {summary.follows} follows, {summary.stories} stories "
            f"({summary.live} live), {summary.views} views, {summary.reactions} reactions; "
            f"every password is {DEFAULT_SEED_PASSWORD!r}"
        )
    return None


def listening_line(binds: Sequence[str], stdout: TextIO) -> str | None:
    """What a person at a terminal reads once the service listens, beside the JSON log; None when stdout is not
    a terminal (a pipe, a file, a log collector), which gets JSON lines only."""
    if not binds or not stdout.isatty():
        return None
    port = urlsplit(binds[0]).port
    return f"Stories listening on http://localhost:{port} (Ctrl-C to stop)"


class _Announce(trio.TaskStatus[list[str]]):
    """The task_status `stories serve` reports its addresses to: prints `listening_line` on a terminal. Not
    nursery.start: a signal during start-up ends the start without ever reporting, and that is a clean exit."""

    def started(self, value: list[str] | None = None) -> None:
        line = listening_line(value or [], sys.stdout)
        if line is not None:
            print(line, flush=True)


def _listen(args: argparse.Namespace, settings: Settings) -> int:
    token = args.token or os.environ.get(TOKEN_VARIABLE, "").strip()
    if not token:
        print(f"stories: listen needs a token: --token or {TOKEN_VARIABLE}", file=sys.stderr)
        return EXIT_CONFIG
    if args.count is not None and args.count < 1:
        print("stories: --count must be at least 1", file=sys.stderr)
        return EXIT_CONFIG
    url = args.url or f"http://127.0.0.1:{settings.port}"
    return _run(partial(trio.run, partial(listen, url, token, count=args.count, out=sys.stdout)))


def _admin(args: argparse.Namespace, settings: Settings) -> int:
    email: str = args.email.strip().lower()  # as sign-up stores it
    grant = args.admin_command == "grant"
    changed = trio.run(partial(runtime.set_moderator, settings, email, grant=grant))
    if changed is None:
        print(f"stories: no user has the email {email!r}; nothing changed", file=sys.stderr)
        return EXIT_UNKNOWN_USER
    if grant:
        print(f"stories: {email} {'is now' if changed else 'was already'} a moderator")
    else:
        print(f"stories: {email} {'is no longer' if changed else 'was not'} a moderator")
    return 0


def _database_name(settings: Settings) -> str:
    """The database a command works on, for a person to check: its URL (password masked) or the embedded one."""
    if settings.database_url:
        return f"{mask_url(settings.database_url)} (DATABASE_URL)"
    return f"the embedded PostgreSQL in {settings.data_dir} (DATA_DIR; DATABASE_URL is unset)"
