"""Route declarations: each route states once its method, path, summary, request body, its own answers, the errors
it adds and whether it needs a token; the URL rule, `/openapi.json` (with the error answers its shape implies),
docs/API.md's route table and the set of public endpoints all come from that one declaration.

A view is registered only through `DeclaredBlueprint.declare(route)`: `route()`, `get()`, `post()` ... refuse,
so no route is served without a declaration (tests/api/test_docs.py checks the served rules are the declared ones).
Validation of the body stays in the view (stories/api/validate.py, with API.md's messages); the declaration
states the same rules as JSON Schema for clients and Schemathesis.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar
from uuid import UUID

from quart import Blueprint
from werkzeug.routing import BaseConverter, ValidationError

from stories.api.openapi import BAD_REQUEST, UNAUTHORIZED, operation, shared, shared_errors

if TYPE_CHECKING:
    from quart import Quart

    from stories.errors import ApiError
    from stories.settings import Settings

__all__ = ["DeclaredBlueprint", "IdConverter", "Route", "declared_routes", "route_table", "with_route_table"]

View = TypeVar("View", bound=Callable[..., Any])
# A part of an operation that carries this process's limits: computed from the settings.
Settled = Callable[["Settings"], Any]
_PATH_PARAMETER = re.compile(r"\{([^{}]+)\}")


class IdConverter(BaseConverter):
    """`<id:name>`: a path segment that is a UUID (32 hex digits, dashes and braces optional, as `uuid.UUID` reads
    them). A malformed one matches no route, so it answers 404 like an unknown id (API.md), before any token is
    checked; the pattern (not only `to_python`) refuses it, so no other method's rule turns it into a 405."""

    regex = r"\{?[0-9A-Fa-f]{8}(?:-?[0-9A-Fa-f]{4}){3}-?[0-9A-Fa-f]{12}\}?"

    def to_python(self, value: str) -> UUID:
        try:
            return UUID(value)
        except ValueError:
            raise ValidationError from None

    def to_url(self, value: Any) -> str:
        return str(value)


def _settled(value: Any, settings: Settings) -> Any:
    return value(settings) if callable(value) else value


@dataclass(frozen=True, slots=True)
class Route:
    """One operation. `description` and `body` may be functions of the settings (rate limits, body sizes).

    Its answers are its own `answers` and the shared error answers of API.md's Conventions (`responses`): those
    its shape implies, and those of its `errors`."""

    method: str
    # The OpenAPI path template: `{name}` is a path parameter, a UUID (`<id:name>`) when its schema says so.
    path: str
    operation_id: str
    tag: str
    summary: str
    # By status: its success, and any error answer particular to it (a 409, a 422, its own words for a shared
    # status, which replace the shared answer).
    answers: dict[str, Any]
    _: KW_ONLY
    # docs/API.md's route table, "answer" column.
    table_answer: str
    # The errors with a shared answer that its shape does not imply (a 429, a public route's 503 ...).
    errors: tuple[type[ApiError], ...] = ()
    description: str | Settled | None = None
    body: dict[str, Any] | Settled | None = None
    body_example: Any = None
    body_required: bool = True
    parameters: list[dict[str, Any]] = field(default_factory=list)
    public: bool = False

    @property
    def rule(self) -> str:
        """The werkzeug rule: `{id}` becomes `<id:id>` for a UUID path parameter, else `<name>`."""
        uuids = {
            parameter["name"]
            for parameter in self.parameters
            if parameter["in"] == "path" and parameter["schema"].get("format") == "uuid"
        }

        def converted(match: re.Match[str]) -> str:
            name = match.group(1)
            return f"<id:{name}>" if name in uuids else f"<{name}>"

        return _PATH_PARAMETER.sub(converted, self.path)

    def responses(self) -> dict[str, Any]:
        """Its answers in status order: its own, those of its `errors`, and the shared error answers its shape
        implies: 400 for a body or a query or header parameter, 401 and 403 (suspended) for a route behind a token,
        404 for a path parameter (a malformed or unknown id), 413 and 415 for a body, 503 for a route behind a
        token (each reads the database under the request deadline; the WebSocket upgrade too, before it is
        accepted)."""
        shaped: dict[str, Any] = {}
        if self.body is not None or any(parameter["in"] != "path" for parameter in self.parameters):
            shaped |= BAD_REQUEST
        if not self.public:
            shaped |= UNAUTHORIZED
        if any(parameter["in"] == "path" for parameter in self.parameters):
            shaped |= shared("NotFound")
        if self.body is not None:
            shaped |= shared("PayloadTooLarge", "UnsupportedMediaType")
        if not self.public:
            shaped |= shared("Unavailable")
        return dict(sorted((shaped | shared_errors(self.errors) | self.answers).items()))

    def operation(self, settings: Settings) -> dict[str, Any]:
        result = operation(
            self.operation_id,
            self.tag,
            self.summary,
            self.responses(),
            description=_settled(self.description, settings),
            body=_settled(self.body, settings),
            body_example=self.body_example,
            public=self.public,
            parameters=self.parameters or None,
        )
        if "requestBody" in result and not self.body_required:
            result["requestBody"]["required"] = False
        return result

    def table_row(self) -> str:
        token = "no" if self.public else "yes"
        return f"| `{self.method}` | `{self.path}` | {token} | {self.table_answer} |"


class DeclaredBlueprint(Blueprint):
    """A blueprint whose every route is declared: `@blueprint.declare(ROUTE)` registers the view under the
    declaration's rule and method, and keeps the declaration by endpoint (the view's name unless `endpoint`)."""

    def __init__(self, name: str, import_name: str) -> None:
        super().__init__(name, import_name)
        self.declared: dict[str, Route] = {}

    def declare(self, route: Route, *, endpoint: str | None = None) -> Callable[[View], View]:
        def register(view: View) -> View:
            name = endpoint or view.__name__
            super(DeclaredBlueprint, self).add_url_rule(route.rule, name, view_func=view, methods=[route.method])
            self.declared[f"{self.name}.{name}"] = route
            return view

        return register

    def add_url_rule(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(f"{self.name}: declare the route with `@blueprint.declare(Route(...))`")


def declared_routes(app: Quart) -> dict[str, Route]:
    """Endpoint -> declaration of every declared route the app serves (its declared blueprints)."""
    routes: dict[str, Route] = {}
    for blueprint in app.blueprints.values():
        if isinstance(blueprint, DeclaredBlueprint):
            routes.update(blueprint.declared)
    return routes


def route_table(routes: list[Route]) -> str:
    """docs/API.md's route table, in the order given."""
    header = "| method | path | token | answer |\n| --- | --- | --- | --- |\n"
    return header + "".join(route.table_row() + "\n" for route in routes)


def with_route_table(document: str, routes: list[Route]) -> str:
    """`document` (docs/API.md) with the table under its `## Routes` heading replaced by the routes' own."""
    head, rest = document.split("\n## Routes\n", 1)
    intro, table_on = rest.split("\n| method |", 1)
    after = table_on.split("\n\n", 1)[1]
    return f"{head}\n## Routes\n{intro}\n{route_table(routes)}\n{after}"
