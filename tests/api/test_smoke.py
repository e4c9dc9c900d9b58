from tests.helpers import signup


async def test_signup_then_healthz(client):
    account = await signup(client)
    assert account.email.endswith("@example.com")
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert (await response.get_json())["checks"]["db"] == "ok"
