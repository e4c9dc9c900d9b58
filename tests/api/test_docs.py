import re

from stories.api import ws


async def test_openapi_describes_every_route(app, client):
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    doc = await response.get_json()
    assert doc["openapi"].startswith("3.1")
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint in ("static", "docs.openapi", "docs.docs"):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        methods = {"GET"} if rule.websocket else rule.methods - {"HEAD", "OPTIONS"}
        for method in methods:
            served.add((path, method.lower()))
    served.add((ws.PATH, "get"))  # plain ASGI, routed before Quart's url_map
    documented = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert served == documented


async def test_docs_page_is_offline_and_public(client):
    response = await client.get("/docs")
    assert response.status_code == 200
    page = (await response.get_data()).decode()
    assert "/openapi.json" in page
    assert "http://" not in page
    assert "https://" not in page
