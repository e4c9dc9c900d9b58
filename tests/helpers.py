"""Small helpers for API tests."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

PASSWORD = "correct horse battery"


@dataclass(frozen=True)
class Account:
    user_id: str
    email: str
    token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def signup(client: Any, email: str | None = None, password: str = PASSWORD) -> Account:
    email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
    response = await client.post("/signup", json={"email": email, "password": password})
    assert response.status_code == 201, await response.get_data()
    body = await response.get_json()
    return Account(user_id=body["user_id"], email=body["email"], token=body["token"])
