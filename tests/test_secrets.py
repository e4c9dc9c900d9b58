"""Secrets stay secret: masked in the settings' repr and in every configuration error."""

from __future__ import annotations

import pytest

from stories.errors import ConfigError
from stories.settings import Settings, load_settings, mask_url

PASSWORD = "hunter2-very-secret"
JWT = "jwt-" + "k" * 40
S3_SECRET = "s3-secret-key-0123456789"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (f"postgres://user:{PASSWORD}@db.example:5432/stories", "postgres://user:***@db.example:5432/stories"),
        (f"redis://:{PASSWORD}@cache:6379/0", "redis://:***@cache:6379/0"),
        (f"mysql://u:{PASSWORD}@h/db", "mysql://u:***@h/db"),
        # An unquoted '@' or '/' in the password: everything up to the last '@' is the user part.
        (f"postgres://u:a@b/{PASSWORD}@h/db", "postgres://u:***@h/db"),
        (f"u:{PASSWORD}@h/db", "u:***@h/db"),  # no scheme
        (
            f"postgres://h/db?user=u&password={PASSWORD}&sslmode=require",
            "postgres://h/db?user=u&password=***&sslmode=require",
        ),
        ("postgres://user@h:5432/db", "postgres://user@h:5432/db"),  # nothing to hide
        ("redis://cache:6379/0", "redis://cache:6379/0"),
        ("", ""),
    ],
)
def test_mask_url_hides_only_the_password(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    if PASSWORD in url:
        assert PASSWORD not in mask_url(url)


def test_settings_repr_holds_no_secret() -> None:
    settings = Settings(
        database_url=f"postgres://u:{PASSWORD}@db:5432/stories",
        redis_url=f"redis://:{PASSWORD}@cache:6379/0",
        jwt_secret=JWT,
        minio_access_key="access",
        minio_secret_key=S3_SECRET,
    )
    for text in (repr(settings), str(settings), f"{settings}", f"{settings!r}"):
        assert PASSWORD not in text
        assert JWT not in text
        assert S3_SECRET not in text
        assert "postgres://u:***@db:5432/stories" in text
        assert "redis://:***@cache:6379/0" in text
        assert "jwt_secret='***'" in text
        assert "minio_secret_key='***'" in text
        assert "minio_access_key='access'" in text  # an identifier, not a secret
    # Unset secrets say so, so the repr still tells what is configured.
    assert "jwt_secret=None" in repr(Settings())
    assert "minio_secret_key=None" in repr(Settings())


BAD_ENVS = [
    {"DATABASE_URL": f"mysql://u:{PASSWORD}@h/db"},
    {"DATABASE_URL": f"postgres://u:{PASSWORD}@h:abc/db"},
    {"DATABASE_URL": f"postgres://u:{PASSWORD}@h:99999/db"},
    {"DATABASE_URL": f"u:{PASSWORD}@h/db"},
    {"REDIS_URL": f"http://:{PASSWORD}@r.example"},
    {"REDIS_URL": f"redis://:{PASSWORD}@r.example:port/0"},
    {"MINIO_ENDPOINT": f"ftp://admin:{PASSWORD}@minio:9000"},
    {"MINIO_ENDPOINT": f"http://admin:{PASSWORD}@minio:x"},
    {"REDIS_ADDR": "nohost", "REDIS_PASSWORD": PASSWORD},
    {"JWT_SECRET": PASSWORD},  # too short: the message must not echo it
    {"STORIES_ENV": "production", "MINIO_SECRET_KEY": S3_SECRET},
]


@pytest.mark.parametrize("environ", BAD_ENVS)
def test_config_errors_never_show_a_secret(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ)
    message = str(caught.value)
    assert PASSWORD not in message
    assert S3_SECRET not in message
    assert PASSWORD not in caught.value.problem
