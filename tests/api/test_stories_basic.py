from tests.helpers import signup


async def test_create_read_feed_view_react_stats(client):
    alice, bob = await signup(client), await signup(client)
    r = await client.post("/stories", json={"text": " hello ", "visibility": "friends"}, headers=alice.auth)
    assert r.status_code == 201, await r.get_data()
    story = await r.get_json()
    assert story["text"] == "hello"
    r = await client.get(f"/stories/{story['id']}", headers=bob.auth)
    assert r.status_code == 404
    r = await client.post(f"/follow/{alice.user_id}", headers=bob.auth)
    assert r.status_code == 200, await r.get_data()
    r = await client.get("/feed", headers=bob.auth)
    assert [s["id"] for s in (await r.get_json())["stories"]] == [story["id"]]
    r = await client.post(f"/stories/{story['id']}/view", headers=bob.auth)
    assert (await r.get_json())["first_view"] is True
    r = await client.post(f"/stories/{story['id']}/reactions", json={"emoji": "❤"}, headers=bob.auth)
    assert r.status_code == 201
    assert (await r.get_json())["emoji"] == "❤️"
    r = await client.get("/me/stats", headers=alice.auth)
    assert await r.get_json() == {"posted": 1, "views": 1, "unique_viewers": 1, "reactions": {"❤️": 1}}
