"""Route declarations (stories/api/declare.py): every served route is declared, and a malformed id is a 404.
(tests/api/test_docs.py checks the document generated from the declarations.)"""

import uuid

import pytest

from stories.api import stories
from stories.api.declare import DeclaredBlueprint, declared_routes
from tests.helpers import post_story, signup


def test_a_route_cannot_be_added_without_a_declaration():
    blueprint = DeclaredBlueprint("undeclared", __name__)
    with pytest.raises(TypeError):

        @blueprint.get("/somewhere")
        async def somewhere() -> None: ...


async def test_every_declared_route_is_served(app):
    served = {rule.endpoint: rule for rule in app.url_map.iter_rules()}
    for endpoint, route in declared_routes(app).items():
        assert served[endpoint].rule == route.rule
        assert route.method in served[endpoint].methods


async def test_a_malformed_id_is_a_404_before_the_token(client):
    for path in ("/stories/not-a-uuid", f"/stories/{uuid.uuid4()}x"):
        response = await client.get(path)
        assert response.status_code == 404
        assert (await response.get_json())["error"] == "not_found"
    assert stories.blueprint.declared


async def test_a_malformed_id_is_a_404_for_every_method(client):
    ada = await signup(client)
    for method in ("GET", "DELETE", "POST"):
        response = await client.open("/stories/not-a-uuid", method=method, headers=ada.auth)
        assert (response.status_code, (await response.get_json())["error"]) == (404, "not_found"), method
    story = await post_story(client, ada)
    for form in (story.upper(), story.replace("-", ""), "{" + story + "}"):
        assert (await client.get(f"/stories/{form}", headers=ada.auth)).status_code == 200, form
