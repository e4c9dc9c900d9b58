"""`stories admin grant|revoke <email>`: the moderator role, set on the command line against the configured
database; an unknown email is one line on stderr and exit 6."""

from __future__ import annotations

import uuid

import trio

from stories.cli import EXIT_UNKNOWN_USER
from tests.processes import run_cli


async def admin(tmp_path, database_url, *args):
    return await trio.to_thread.run_sync(
        lambda: run_cli(tmp_path, {"DATABASE_URL": database_url, "LOG_LEVEL": "warning"}, "admin", *args)
    )


async def test_grant_and_revoke_the_moderator_role(store, settings, clock, tmp_path):
    email = f"mod-{uuid.uuid4().hex[:8]}@example.com"
    user = await store.create_user(uuid.uuid4(), email, "x", clock.now(), None)
    assert user is not None
    # Case and spaces as a person types them: the email is matched as sign-up stores it.
    granted = await admin(tmp_path, settings.database_url, "grant", f" {email.upper()} ")
    assert (granted.returncode, granted.stderr) == (0, "")
    assert granted.stdout.splitlines()[-1] == f"stories: {email} is now a moderator"
    assert await store.is_moderator(user.id)
    again = await admin(tmp_path, settings.database_url, "grant", email)
    assert again.stdout.splitlines()[-1] == f"stories: {email} was already a moderator"
    revoked = await admin(tmp_path, settings.database_url, "revoke", email)
    assert (revoked.returncode, revoked.stdout.splitlines()[-1]) == (0, f"stories: {email} is no longer a moderator")
    assert not await store.is_moderator(user.id)
    again = await admin(tmp_path, settings.database_url, "revoke", email)
    assert again.stdout.splitlines()[-1] == f"stories: {email} was not a moderator"


async def test_an_unknown_email_is_one_line_and_a_non_zero_exit(settings, tmp_path):
    for verb in ("grant", "revoke"):
        result = await admin(tmp_path, settings.database_url, verb, "nobody-at-all@example.com")
        assert result.returncode == EXIT_UNKNOWN_USER
        assert "Traceback" not in result.stderr
        assert result.stderr.splitlines() == [
            "stories: no user has the email 'nobody-at-all@example.com'; nothing changed"
        ]


def test_admin_needs_a_verb_and_an_email(tmp_path):
    for args in ((), ("grant",), ("promote", "a@example.com")):
        result = run_cli(tmp_path, {"DATABASE_URL": "postgres://nobody@127.0.0.1:1/none"}, "admin", *args)
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
