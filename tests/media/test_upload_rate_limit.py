"""Upload URLs are rate limited per user: each one is a recorded key the service keeps and cleans up."""

from __future__ import annotations

import dataclasses

import pytest

from tests.helpers import signup


@pytest.fixture
def settings(settings):
    return dataclasses.replace(settings, rate_limit_uploads_per_minute=2)


async def test_upload_urls_are_limited_per_user_and_bad_requests_cost_nothing(media_client, metrics):
    alice, bob = await signup(media_client), await signup(media_client)

    async def presign(account, size=10):
        body = {"content_type": "image/png", "size": size}
        return await media_client.post("/upload/presigned", json=body, headers=account.auth)

    assert (await presign(alice, size=0)).status_code == 400
    assert [(await presign(alice)).status_code for _ in range(2)] == [200, 200]
    refused = await presign(alice)
    assert refused.status_code == 429
    assert await refused.get_json() == {
        "error": "rate_limited",
        "message": "asking for upload URLs is limited to 2 per minute",
    }
    assert 1 <= int(refused.headers["Retry-After"]) <= 30
    assert (await presign(bob)).status_code == 200
    assert 'rate_limited_total{action="uploads"} 1.0' in metrics.render().decode()
