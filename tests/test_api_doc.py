"""docs/API.md's route table is the app's routes: generated from their declarations, it fails here until
`python tools/api_route_table.py --write` has rewritten it."""

from __future__ import annotations

import re
from pathlib import Path

from stories.api import api_routes
from stories.api.declare import with_route_table

API_DOC = Path(__file__).resolve().parent.parent / "docs" / "API.md"
_ROW = re.compile(r"^\| `([A-Z]+)` \| `(/[^`]*)` \| (yes|no) \|")


def documented_routes() -> dict[tuple[str, str], bool]:
    """(method, path) -> needs a token, from the `## Routes` table."""
    section = API_DOC.read_text().split("\n## Routes\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    routes = {}
    for row in rows:
        match = _ROW.match(row)
        assert match, f"a malformed row in docs/API.md's route table: {row}"
        method, path, token = match.groups()
        assert (method, path) not in routes, f"listed twice: {method} {path}"
        routes[(method, path)] = token == "yes"
    return routes


def served_routes(app) -> set[tuple[str, str]]:
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        methods = {"GET"} if rule.websocket else rule.methods - {"HEAD", "OPTIONS"}
        served |= {(method, path) for method in methods}
    return served


async def test_the_route_table_lists_every_route_the_app_serves(app):
    documented = set(documented_routes())
    served = served_routes(app)
    assert not served - documented, f"served but missing from docs/API.md: {sorted(served - documented)}"
    assert not documented - served, f"in docs/API.md but not served: {sorted(documented - served)}"


async def test_the_token_column_says_which_routes_are_public(client):
    for (method, path), needs_token in documented_routes().items():
        if path == "/ws":
            continue  # an upgrade, tested in tests/api/test_ws.py
        concrete = re.sub(r"\{[^}]+\}", "00000000-0000-0000-0000-000000000000", path)
        response = await client.open(concrete, method=method)
        assert (response.status_code == 401) == needs_token, (method, path, response.status_code)


def test_the_route_table_is_the_declarations_own():
    current = API_DOC.read_text()
    assert with_route_table(current, api_routes()) == current, "run python tools/api_route_table.py --write"
