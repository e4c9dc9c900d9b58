"""docs/API.md's route table, generated from the route declarations (stories/api/declare.py).

    python tools/api_route_table.py           # exit 1 when docs/API.md's table is not the routes' own
    python tools/api_route_table.py --write   # rewrite the table in place

tests/test_api_doc.py fails while the table is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

from stories.api import api_routes
from stories.api.declare import with_route_table

API_DOC = Path(__file__).resolve().parent.parent / "docs" / "API.md"


def main(argv: list[str]) -> int:
    current = API_DOC.read_text()
    generated = with_route_table(current, api_routes())
    if generated == current:
        return 0
    if argv == ["--write"]:
        API_DOC.write_text(generated)
        print(f"rewrote the route table of {API_DOC}")
        return 0
    print(f"{API_DOC}'s route table is stale: run python tools/api_route_table.py --write", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
