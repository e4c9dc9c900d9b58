import trio

from tests.helpers import signup


async def test_follow_is_idempotent_under_concurrency(client):
    alice, bob = await signup(client), await signup(client)
    answers = []

    async def follow():
        response = await client.post(f"/follow/{alice.user_id}", headers=bob.auth)
        answers.append((response.status_code, await response.get_json()))

    for _ in range(5):
        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(follow)
        await client.delete(f"/follow/{alice.user_id}", headers=bob.auth)
    assert {status for status, _ in answers} == {200}
    assert all(body["created_at"] for _, body in answers)


async def test_unfollow_hides_friends_stories_at_once(client):
    alice, bob = await signup(client), await signup(client)
    await client.post(f"/follow/{alice.user_id}", headers=bob.auth)
    created = await client.post("/stories", json={"text": "hi", "visibility": "friends"}, headers=alice.auth)
    story_id = (await created.get_json())["id"]
    assert (await client.get(f"/stories/{story_id}", headers=bob.auth)).status_code == 200
    assert (await client.delete(f"/follow/{alice.user_id}", headers=bob.auth)).status_code == 204
    assert (await client.get(f"/stories/{story_id}", headers=bob.auth)).status_code == 404
    feed = await (await client.get("/feed", headers=bob.auth)).get_json()
    assert feed == {"stories": [], "next_cursor": None}
