"""The per-request cost of the session check: authenticating a known caller (the hot path of every request), in
the checkout on PYTHONPATH. Run it on two checkouts to compare (bench/http.md, "Sessions"):

    .venv/bin/python -m bench.session_check --checkout /tmp/stories-before before
    .venv/bin/python -m bench.session_check after

Checkouts from before sessions mint tokens without a session id; the bench adapts to either.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
import time
import uuid
from collections.abc import Collection

import trio

CALLS = 100_000
ROUNDS = 7


class EveryoneExists:
    """A user store in which every user exists and none is suspended (the lookup is done once, then cached)."""

    async def existing_users(self, user_ids: Collection[uuid.UUID]) -> set[uuid.UUID]:
        return set(user_ids)

    async def user_states(self, user_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, bool]:
        return dict.fromkeys(user_ids, False)


async def measure(label: str) -> None:
    # Imported late: --checkout decides which stories this is. Checkouts before issue 17 (6f3ad79) named the module
    # callers; it is looked up by name, as this checkout (the one mypy reads) has no such module.
    try:
        from stories.api import authentication
    except ImportError:
        authentication = importlib.import_module("stories.api.callers")
    from stories.clock import SystemClock
    from stories.security import TokenIssuer

    tokens = TokenIssuer("bench-secret-" + "x" * 32, 86_400, SystemClock())
    with_session = len(inspect.signature(tokens.issue).parameters) == 2
    user_id = uuid.uuid4()
    # A checkout from before sessions has issue(user_id); this checkout's signature is the one mypy knows.
    token = tokens.issue(user_id, uuid.uuid4()) if with_session else tokens.issue(user_id)  # type: ignore[call-arg]
    callers = authentication.Callers(tokens, EveryoneExists())
    await callers.authenticate(token)  # verified and looked up once, as for a client's first request
    per_call = []
    for _ in range(ROUNDS):
        began = time.perf_counter()
        for _ in range(CALLS):
            await callers.authenticate(token)
        per_call.append((time.perf_counter() - began) / CALLS * 1e6)
    per_call.sort()
    print(
        f"{label}: {per_call[ROUNDS // 2]:.2f} µs median, {per_call[0]:.2f} µs min per known caller ({ROUNDS} rounds)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("label", nargs="?", default="this checkout")
    parser.add_argument("--checkout", help="a checkout of this project to measure instead of this one")
    args = parser.parse_args()
    if args.checkout:
        sys.path.insert(0, args.checkout)
    import stories

    trio.run(measure, f"{args.label} ({stories.__file__})")


if __name__ == "__main__":
    main()
