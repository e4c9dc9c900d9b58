"""Settings from the environment and `.env`; a bad value is one clear line, exit code 2."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import stories.settings as settings_module
from stories.dev_secret import resolve_jwt_secret
from stories.errors import ConfigError
from stories.settings import (
    DEFAULT_CORS_ORIGINS,
    Settings,
    load_settings,
)
from tests.processes import SERVICE_VARIABLES, run_cli

SECRET = "s" * 32

# Every variable of API.md's configuration table (and our operational extras), with a non-default value.
FULL_ENV = {
    "PORT": "8080",
    "HOST": "127.0.0.1",
    "DATABASE_URL": "postgres://u:p@db.example:5433/stories",
    "DATABASE_DIRECT_URL": "postgres://u:p@db-direct.example:5432/stories",
    "DATA_DIR": "/var/lib/stories",
    "REDIS_ADDR": "cache.example:6380",
    "REDIS_PASSWORD": "p@ss:word",
    "JWT_SECRET": SECRET,
    "JWT_TTL_SECONDS": "3600",
    "MINIO_ENDPOINT": "minio.example:9000",
    "MINIO_ACCESS_KEY": "access",
    "MINIO_SECRET_KEY": "secret-key",
    "MINIO_BUCKET": "media",
    "MINIO_USE_SSL": "true",
    "MINIO_REGION": "eu-west-1",
    "STORY_TTL_SECONDS": "600",
    "FEED_CACHE_SECONDS": "0",
    "EXPIRY_INTERVAL_SECONDS": "15",
    "RATE_LIMIT_STORIES_PER_MINUTE": "5",
    "RATE_LIMIT_REACTIONS_PER_MINUTE": "7",
    "RATE_LIMIT_UPLOADS_PER_MINUTE": "9",
    "MAX_UPLOAD_BYTES": "1048576",
    "BCRYPT_COST": "4",
    "CORS_ORIGINS": "https://app.example, http://localhost:8000/",
    "LOG_LEVEL": "DEBUG",
    "STORIES_ENV": "production",
    "REPORT_HIDE_THRESHOLD": "3",
    "REFRESH_TOKEN_DAYS": "14",
    "HTTP_KEEP_ALIVE_SECONDS": "2.5",
    "DB_STATEMENT_TIMEOUT_SECONDS": "45",
}


def test_defaults_match_api_md() -> None:
    settings = load_settings({})
    assert settings == Settings()
    assert (settings.host, settings.port) == ("0.0.0.0", 5000)
    assert settings.database_url is None
    assert settings.database_direct_url is None
    assert settings.data_dir == Path("./.stories")
    assert settings.redis_url is None
    assert settings.jwt_secret is None
    assert settings.jwt_ttl_seconds == 86_400
    assert settings.story_ttl_seconds == 86_400
    assert settings.feed_cache_seconds == 30
    assert settings.expiry_interval_seconds == 60
    assert (settings.rate_limit_stories_per_minute, settings.rate_limit_reactions_per_minute) == (20, 60)
    assert settings.rate_limit_uploads_per_minute == 40
    assert settings.max_upload_bytes == 52_428_800
    assert settings.bcrypt_cost == 12
    assert settings.cors_origins == DEFAULT_CORS_ORIGINS == ("http://localhost:3000", "http://localhost:5173")
    assert settings.log_level == "info"
    assert settings.minio_endpoint is None
    assert settings.max_body_bytes == 65_536
    assert settings.report_hide_threshold == 5
    assert settings.refresh_token_days == 30
    assert settings.http_keep_alive_seconds == 5.0
    assert settings.db_statement_timeout_seconds == 30.0


def test_every_variable_is_parsed() -> None:
    settings = load_settings(FULL_ENV)
    assert settings.port == 8080
    assert settings.host == "127.0.0.1"
    assert settings.database_url == "postgres://u:p@db.example:5433/stories"
    assert settings.database_direct_url == "postgres://u:p@db-direct.example:5432/stories"
    assert settings.data_dir == Path("/var/lib/stories")
    # The password is URL-quoted so ':' and '@' in it cannot change the URL's meaning.
    assert settings.redis_url == "redis://:p%40ss%3Aword@cache.example:6380/0"
    assert settings.jwt_secret == SECRET
    assert settings.jwt_ttl_seconds == 3600
    assert settings.minio_endpoint == "minio.example:9000"
    assert (settings.minio_access_key, settings.minio_secret_key) == ("access", "secret-key")
    assert settings.minio_bucket == "media"
    assert settings.minio_use_ssl is True
    assert settings.minio_region == "eu-west-1"
    assert settings.story_ttl_seconds == 600
    assert settings.feed_cache_seconds == 0
    assert settings.expiry_interval_seconds == 15
    assert settings.rate_limit_stories_per_minute == 5
    assert settings.rate_limit_reactions_per_minute == 7
    assert settings.rate_limit_uploads_per_minute == 9
    assert settings.max_upload_bytes == 1_048_576
    assert settings.bcrypt_cost == 4
    assert settings.cors_origins == ("https://app.example", "http://localhost:8000")
    assert settings.log_level == "debug"
    assert settings.production
    assert settings.report_hide_threshold == 3
    assert settings.refresh_token_days == 14
    assert settings.http_keep_alive_seconds == 2.5
    assert settings.db_statement_timeout_seconds == 45.0


def test_redis_url_wins_over_addr_and_minio_can_be_turned_off() -> None:
    settings = load_settings({"REDIS_URL": "rediss://r.example:6379/2", "REDIS_ADDR": "x:1", "MINIO_ENDPOINT": "off"})
    assert settings.redis_url == "rediss://r.example:6379/2"
    assert settings.minio_endpoint == "off"
    assert load_settings({"REDIS_ADDR": "127.0.0.1:6379"}).redis_url == "redis://127.0.0.1:6379/0"


def test_blank_values_mean_unset() -> None:
    assert load_settings({"PORT": "", "DATABASE_URL": "  ", "JWT_SECRET": ""}) == Settings()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PORT", "abc"),
        ("PORT", "70000"),
        ("PORT", "-1"),
        ("BCRYPT_COST", "2"),
        ("BCRYPT_COST", "32"),
        ("REFRESH_TOKEN_DAYS", "0"),
        ("REFRESH_TOKEN_DAYS", "thirty"),
        ("LOG_LEVEL", "loud"),
        ("DATABASE_URL", "mysql://x"),
        ("DATABASE_URL", "postgres://h:abc/db"),
        ("DATABASE_URL", "postgres://u:p@h:99999/db"),
        ("DATABASE_URL", "postgresql://h1:5432,h2:x/db"),
        ("DATABASE_URL", "postgres://[::1:5432/db"),
        ("DATABASE_DIRECT_URL", "mysql://x"),
        ("DATABASE_DIRECT_URL", "postgres://u:p@h:99999/db"),
        # Without DATABASE_URL: the embedded database has no pooler to go around.
        ("DATABASE_DIRECT_URL", "postgres://u:p@h:5432/db"),
        ("REDIS_URL", "redis://r.example:port/0"),
        ("REDIS_URL", "redis://r.example:70000/0"),
        ("REDIS_URL", "redis://[::1/0"),
        ("HOST", "local host"),
        ("HOST", "127.0.0.1:5000"),
        ("HOST", "http://example.com"),
        ("HOST", "-leading-dash"),
        ("HOST", "a..b"),
        ("HOST", "1.2.3.999"),
        ("HOST", "x" * 64 + ".example"),
        ("REDIS_ADDR", "nohost"),
        ("REDIS_ADDR", "host:port"),
        ("REDIS_URL", "http://r.example"),
        ("JWT_SECRET", "too-short"),
        ("JWT_TTL_SECONDS", "0"),
        ("STORY_TTL_SECONDS", "1.5"),
        ("FEED_CACHE_SECONDS", "-1"),
        ("EXPIRY_INTERVAL_SECONDS", "0"),
        ("RATE_LIMIT_STORIES_PER_MINUTE", "0"),
        ("RATE_LIMIT_REACTIONS_PER_MINUTE", "many"),
        ("RATE_LIMIT_UPLOADS_PER_MINUTE", "100001"),
        ("MAX_UPLOAD_BYTES", "0"),
        ("CORS_ORIGINS", "localhost:3000"),
        ("STORIES_ENV", "staging"),
        ("MINIO_USE_SSL", "maybe"),
        ("MINIO_ENDPOINT", "http://"),
        ("MINIO_PUBLIC_ENDPOINT", "ftp://media.example"),
        ("WS_PING_INTERVAL_SECONDS", "0"),
        ("WS_DEAD_AFTER_SECONDS", "10"),
        ("REPORT_HIDE_THRESHOLD", "0"),
        ("REPORT_HIDE_THRESHOLD", "few"),
        ("HTTP_KEEP_ALIVE_SECONDS", "0"),
        ("HTTP_KEEP_ALIVE_SECONDS", "never"),
        ("DB_STATEMENT_TIMEOUT_SECONDS", "0"),
    ],
)
def test_invalid_value_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({variable: value})
    assert caught.value.variable == variable
    assert str(caught.value).startswith(f"{variable} ")


@pytest.mark.parametrize(
    ("value", "host"),
    [
        ("0.0.0.0", "0.0.0.0"),
        ("::", "::"),
        ("::1", "::1"),
        ("[::1]", "::1"),  # the bracketed form of URLs is accepted too
        ("localhost", "localhost"),
        ("api.internal.example", "api.internal.example"),
        ("my_service", "my_service"),  # docker compose service names may hold underscores
        ("  127.0.0.1 ", "127.0.0.1"),
    ],
)
def test_host_accepts_addresses_and_host_names(value: str, host: str) -> None:
    assert load_settings({"HOST": value}).host == host


@pytest.mark.parametrize(
    "url",
    [
        "postgres://u:p@db.example:5433/stories",
        "postgresql://db.example/stories",
        "postgres:///stories?host=/var/run/postgresql",
        "postgres://u@[::1]:5432/db",
        "postgresql://h1:5432,h2:5433,h3/db",  # several hosts, as libpq and asyncpg accept
    ],
)
def test_valid_database_urls_are_accepted(url: str) -> None:
    assert load_settings({"DATABASE_URL": url}).database_url == url


def test_unwritable_data_dir_is_a_config_error_naming_data_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError) as caught:
        resolve_jwt_secret(Settings(data_dir=blocker / "state"))
    assert caught.value.variable == "DATA_DIR"
    assert str(blocker / "state") in str(caught.value)


def test_production_requires_a_jwt_secret() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"STORIES_ENV": "production"})
    assert caught.value.variable == "JWT_SECRET"
    assert load_settings({"STORIES_ENV": "production", "JWT_SECRET": SECRET}).production


def _clear_table(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [*FULL_ENV, "REDIS_URL"]:
        monkeypatch.delenv(name, raising=False)


def test_dotenv_is_read_and_the_real_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_table(monkeypatch)
    (tmp_path / ".env").write_text("PORT=7000\nLOG_LEVEL=debug\n# a comment\nBCRYPT_COST=5\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PORT", "7001")
    settings = load_settings()
    assert settings.port == 7001  # the real environment wins
    assert settings.log_level == "debug"  # the file fills in the rest
    assert settings.bcrypt_cost == 5


def test_dotenv_values_are_validated_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _clear_table(monkeypatch)
    env_file = tmp_path / "custom.env"
    env_file.write_text("BCRYPT_COST=2\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(dotenv_path=env_file)
    assert caught.value.variable == "BCRYPT_COST"


def test_generated_jwt_secret_is_kept_in_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "state")
    first, generated = resolve_jwt_secret(settings)
    assert generated
    assert len(first) >= 32
    assert resolve_jwt_secret(settings) == (first, True)
    assert oct((tmp_path / "state" / "jwt_secret").stat().st_mode & 0o777) == "0o600"
    assert resolve_jwt_secret(Settings(jwt_secret=SECRET, data_dir=tmp_path)) == (SECRET, False)


@pytest.mark.parametrize(
    ("variable", "value", "command"),
    [("PORT", "abc", "serve"), ("DATABASE_URL", "mysql://x", "migrate")],
)
def test_cli_bad_value_is_one_line_and_exit_2(variable: str, value: str, command: str, tmp_path: Path) -> None:
    result = run_cli(tmp_path, {variable: value}, command)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_process_tests_scrub_every_variable_the_service_reads() -> None:
    """Subprocess tests pass the child only what they set; a variable missing from the list would leak in."""
    source = Path(settings_module.__file__).read_text()
    # Every name the readers are called with: env.integer("PORT", ...), self.get("REDIS_PASSWORD"), ...
    read = set(re.findall(r'(?:env|self)\.\w+\(\s*"([A-Z][A-Z0-9_]+)"', source))
    assert read
    assert read <= SERVICE_VARIABLES
