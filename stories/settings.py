"""Settings: one frozen object read from the environment (and a `.env` file) at start.

Every variable of API.md's configuration table is here, validated once. A bad value raises
`ConfigError` naming the variable; the CLI turns that into one line on stderr and exit code 2.
The real environment wins over `.env`, as twelve-factor tools expect.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import quote, urlsplit

from dotenv import dotenv_values

from stories.domain import DEFAULT_RETENTION
from stories.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["Settings", "load_settings", "mask_url"]

DEFAULT_HOST = "0.0.0.0"
DEFAULT_PORT = 5000
DEFAULT_DATA_DIR = "./.stories"
DEFAULT_JWT_TTL_SECONDS = 86_400
DEFAULT_STORY_TTL_SECONDS = 86_400
DEFAULT_FEED_CACHE_SECONDS = 30
DEFAULT_EXPIRY_INTERVAL_SECONDS = 60
DEFAULT_RATE_LIMIT_STORIES_PER_MINUTE = 20
DEFAULT_RATE_LIMIT_REACTIONS_PER_MINUTE = 60
# Twice the stories' budget: every story takes at most one upload, and a failed upload is retried with a new URL.
DEFAULT_RATE_LIMIT_UPLOADS_PER_MINUTE = 40
DEFAULT_MAX_UPLOAD_BYTES = 52_428_800
DEFAULT_BCRYPT_COST = 12
DEFAULT_CORS_ORIGINS = ("http://localhost:3000", "http://localhost:5173")
DEFAULT_LOG_LEVEL = "info"
DEFAULT_MAX_BODY_BYTES = 65_536
DEFAULT_DRAIN_SECONDS = 5.0
# How long an idle HTTP/1.1 keep-alive connection is kept open between requests (WebSockets are not idle
# connections: WS_DEAD_AFTER_SECONDS bounds them).
DEFAULT_HTTP_KEEP_ALIVE_SECONDS = 5.0
DEFAULT_DB_POOL_SIZE = 10
DEFAULT_DB_ACQUIRE_TIMEOUT_SECONDS = 2.0
DEFAULT_REQUEST_TIMEOUT_SECONDS = 10.0
# Bounds every statement on the server (and a transaction left idle): well above any request's (10 s) and the
# expiry worker's bounded batches, so only a statement that can never finish is cut.
DEFAULT_DB_STATEMENT_TIMEOUT_SECONDS = 30.0
DEFAULT_WORKERS = 1
MAX_WORKERS = 64
DEFAULT_RETENTION_DAYS = DEFAULT_RETENTION.days
DEFAULT_REPORT_HIDE_THRESHOLD = 5
# API.md: a refresh token lives this long from its session's last refresh.
DEFAULT_REFRESH_TOKEN_DAYS = 30
DEFAULT_WS_PING_INTERVAL_SECONDS = 20.0
# Three missed pings: long enough for a busy mobile link, short enough to free a dead socket's mailbox.
DEFAULT_WS_DEAD_AFTER_SECONDS = 60.0
DEFAULT_MINIO_BUCKET = "stories"
DEFAULT_MINIO_REGION = "us-east-1"
DEFAULT_MEDIA_URL_SECONDS = 900
MINIO_OFF = "off"

LOG_LEVELS = ("debug", "info", "warning", "error")
ENVIRONMENTS = ("development", "production", "test")
MIN_JWT_SECRET_BYTES = 32

T = TypeVar("T")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")

MASK = "***"
# Settings shown as MASK (when set) in the repr; URLs keep everything but their password.
_SECRET_FIELDS = frozenset({"jwt_secret", "minio_secret_key"})
_URL_FIELDS = frozenset({"database_url", "database_direct_url", "redis_url", "minio_endpoint", "minio_public_endpoint"})
# libpq and asyncpg also take `password=` (and `sslpassword=`) as query parameters.
_QUERY_PASSWORD = re.compile(r"(?i)([?&;][a-z_]*password=)[^&;#]*")
# One label of a host name (RFC 1123), plus '_' as container platforms' service names use it.
_HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
MAX_HOST_NAME_LENGTH = 253


def mask_url(url: str) -> str:
    """`url` with its password replaced by `***`, for logs and error messages.

    Masks the password of the user part (`user:pass@host`, with or without a scheme) and `password=` query
    parameters. Never raises, whatever the input: it is meant for values that failed validation too. When the
    URL is ambiguous (an unquoted `@` in the password), everything up to the last `@` counts as the user part,
    so it may hide more than the password but never shows any of it.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    user, colon, after = rest.partition(":")
    if colon and "@" in after and not any(c in user for c in "/?#@"):
        rest = f"{user}:{MASK}@{after.rpartition('@')[2]}"
    return _QUERY_PASSWORD.sub(rf"\1{MASK}", f"{scheme}{sep}{rest}")


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    database_url: str | None = None
    # Where what needs a session of its own connects (migrations' lock, LISTEN, the event tail), when
    # DATABASE_URL goes through a transaction pooler. None: DATABASE_URL.
    database_direct_url: str | None = None
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    redis_url: str | None = None
    jwt_secret: str | None = None
    jwt_ttl_seconds: int = DEFAULT_JWT_TTL_SECONDS
    # None: use an embedded S3-compatible store when one is installed; MINIO_OFF: uploads disabled.
    minio_endpoint: str | None = None
    # Where clients reach the store, when not at MINIO_ENDPOINT (a container network name, say): presigned URLs
    # name this host. None: MINIO_ENDPOINT.
    minio_public_endpoint: str | None = None
    minio_access_key: str | None = None
    minio_secret_key: str | None = None
    minio_bucket: str = DEFAULT_MINIO_BUCKET
    minio_use_ssl: bool = False
    minio_region: str = DEFAULT_MINIO_REGION
    media_url_seconds: int = DEFAULT_MEDIA_URL_SECONDS
    story_ttl_seconds: int = DEFAULT_STORY_TTL_SECONDS
    feed_cache_seconds: int = DEFAULT_FEED_CACHE_SECONDS
    expiry_interval_seconds: int = DEFAULT_EXPIRY_INTERVAL_SECONDS
    rate_limit_stories_per_minute: int = DEFAULT_RATE_LIMIT_STORIES_PER_MINUTE
    rate_limit_reactions_per_minute: int = DEFAULT_RATE_LIMIT_REACTIONS_PER_MINUTE
    rate_limit_uploads_per_minute: int = DEFAULT_RATE_LIMIT_UPLOADS_PER_MINUTE
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    bcrypt_cost: int = DEFAULT_BCRYPT_COST
    cors_origins: tuple[str, ...] = DEFAULT_CORS_ORIGINS
    log_level: str = DEFAULT_LOG_LEVEL
    environment: str = "development"
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    drain_seconds: float = DEFAULT_DRAIN_SECONDS
    http_keep_alive_seconds: float = DEFAULT_HTTP_KEEP_ALIVE_SECONDS
    db_pool_size: int = DEFAULT_DB_POOL_SIZE
    db_acquire_timeout_seconds: float = DEFAULT_DB_ACQUIRE_TIMEOUT_SECONDS
    db_statement_timeout_seconds: float = DEFAULT_DB_STATEMENT_TIMEOUT_SECONDS
    request_timeout_seconds: float = DEFAULT_REQUEST_TIMEOUT_SECONDS
    workers: int = DEFAULT_WORKERS
    retention_days: int = DEFAULT_RETENTION_DAYS
    # Distinct reporters that hold a story for review: hidden from all but its author until a moderator decides.
    report_hide_threshold: int = DEFAULT_REPORT_HIDE_THRESHOLD
    refresh_token_days: int = DEFAULT_REFRESH_TOKEN_DAYS
    ws_ping_interval_seconds: float = DEFAULT_WS_PING_INTERVAL_SECONDS
    ws_dead_after_seconds: float = DEFAULT_WS_DEAD_AFTER_SECONDS

    @property
    def production(self) -> bool:
        return self.environment == "production"

    def __repr__(self) -> str:
        """Every field, with secrets masked: the repr ends up in logs and tracebacks."""
        shown = []
        for spec in fields(self):
            value = getattr(self, spec.name)
            if value is not None and spec.name in _SECRET_FIELDS:
                value = MASK
            elif value is not None and spec.name in _URL_FIELDS:
                value = mask_url(value)
            shown.append(f"{spec.name}={value!r}")
        return f"Settings({', '.join(shown)})"


def load_settings(environ: Mapping[str, str] | None = None, *, dotenv_path: Path | None = None) -> Settings:
    """Read and validate settings. `environ` defaults to `os.environ` merged over `./.env`."""
    if environ is None:
        env_file = dotenv_path or Path(".env")
        from_file = {k: v for k, v in dotenv_values(env_file).items() if v is not None}
        environ = {**from_file, **os.environ}
    env = _Env(environ)
    environment = env.choice("STORIES_ENV", ENVIRONMENTS, "development")
    jwt_secret = env.get("JWT_SECRET")
    if jwt_secret is not None and len(jwt_secret.encode("utf-8")) < MIN_JWT_SECRET_BYTES:
        # RFC 7518 3.2: an HS256 key must be at least as long as the hash (32 bytes).
        raise ConfigError("JWT_SECRET", f"must be at least {MIN_JWT_SECRET_BYTES} bytes long")
    if environment == "production" and jwt_secret is None:
        raise ConfigError("JWT_SECRET", "is required when STORIES_ENV=production")
    ws_ping = env.number("WS_PING_INTERVAL_SECONDS", DEFAULT_WS_PING_INTERVAL_SECONDS, 1.0, 3_600.0)
    ws_dead_after = env.number("WS_DEAD_AFTER_SECONDS", DEFAULT_WS_DEAD_AFTER_SECONDS, 2.0, 86_400.0)
    if ws_dead_after <= ws_ping:
        raise ConfigError("WS_DEAD_AFTER_SECONDS", f"must be longer than WS_PING_INTERVAL_SECONDS ({ws_ping})")
    minio_endpoint = env.minio_endpoint()
    minio_access_key, minio_secret_key = env.get("MINIO_ACCESS_KEY"), env.get("MINIO_SECRET_KEY")
    if minio_endpoint not in (None, MINIO_OFF) and (minio_access_key is None or minio_secret_key is None):
        missing = "MINIO_ACCESS_KEY" if minio_access_key is None else "MINIO_SECRET_KEY"
        raise ConfigError(missing, "is required when MINIO_ENDPOINT names a store (or set MINIO_ENDPOINT=off)")
    database_url = env.database_url("DATABASE_URL")
    database_direct_url = env.database_url("DATABASE_DIRECT_URL")
    if database_direct_url is not None and database_url is None:
        raise ConfigError("DATABASE_DIRECT_URL", "needs DATABASE_URL (the embedded PostgreSQL has no pooler)")
    return Settings(
        host=env.host("HOST"),
        port=env.integer("PORT", DEFAULT_PORT, 0, 65_535),
        database_url=database_url,
        database_direct_url=database_direct_url,
        data_dir=Path(env.get("DATA_DIR") or DEFAULT_DATA_DIR),
        redis_url=env.redis_url(),
        jwt_secret=jwt_secret,
        jwt_ttl_seconds=env.integer("JWT_TTL_SECONDS", DEFAULT_JWT_TTL_SECONDS, 1, 366 * 86_400),
        minio_endpoint=minio_endpoint,
        minio_public_endpoint=env.s3_endpoint("MINIO_PUBLIC_ENDPOINT"),
        minio_access_key=minio_access_key,
        minio_secret_key=minio_secret_key,
        minio_bucket=env.get("MINIO_BUCKET") or DEFAULT_MINIO_BUCKET,
        minio_use_ssl=env.boolean("MINIO_USE_SSL", default=False),
        minio_region=env.get("MINIO_REGION") or DEFAULT_MINIO_REGION,
        # S3 refuses presigned URLs valid longer than 7 days.
        media_url_seconds=env.integer("MEDIA_URL_SECONDS", DEFAULT_MEDIA_URL_SECONDS, 1, 7 * 86_400),
        story_ttl_seconds=env.integer("STORY_TTL_SECONDS", DEFAULT_STORY_TTL_SECONDS, 1, 366 * 86_400),
        feed_cache_seconds=env.integer("FEED_CACHE_SECONDS", DEFAULT_FEED_CACHE_SECONDS, 0, 3_600),
        expiry_interval_seconds=env.integer("EXPIRY_INTERVAL_SECONDS", DEFAULT_EXPIRY_INTERVAL_SECONDS, 1, 86_400),
        rate_limit_stories_per_minute=env.integer(
            "RATE_LIMIT_STORIES_PER_MINUTE", DEFAULT_RATE_LIMIT_STORIES_PER_MINUTE, 1, 100_000
        ),
        rate_limit_reactions_per_minute=env.integer(
            "RATE_LIMIT_REACTIONS_PER_MINUTE", DEFAULT_RATE_LIMIT_REACTIONS_PER_MINUTE, 1, 100_000
        ),
        rate_limit_uploads_per_minute=env.integer(
            "RATE_LIMIT_UPLOADS_PER_MINUTE", DEFAULT_RATE_LIMIT_UPLOADS_PER_MINUTE, 1, 100_000
        ),
        max_upload_bytes=env.integer("MAX_UPLOAD_BYTES", DEFAULT_MAX_UPLOAD_BYTES, 1, 5 * 1024**4),
        bcrypt_cost=env.integer("BCRYPT_COST", DEFAULT_BCRYPT_COST, 4, 31),
        cors_origins=env.origins("CORS_ORIGINS"),
        log_level=env.choice("LOG_LEVEL", LOG_LEVELS, DEFAULT_LOG_LEVEL),
        environment=environment,
        drain_seconds=env.number("DRAIN_SECONDS", DEFAULT_DRAIN_SECONDS, 0.0, 60.0),
        http_keep_alive_seconds=env.number("HTTP_KEEP_ALIVE_SECONDS", DEFAULT_HTTP_KEEP_ALIVE_SECONDS, 0.1, 3_600.0),
        db_pool_size=env.integer("DB_POOL_SIZE", DEFAULT_DB_POOL_SIZE, 1, 1_000),
        db_acquire_timeout_seconds=env.number(
            "DB_ACQUIRE_TIMEOUT_SECONDS", DEFAULT_DB_ACQUIRE_TIMEOUT_SECONDS, 0.01, 60.0
        ),
        request_timeout_seconds=env.number("REQUEST_TIMEOUT_SECONDS", DEFAULT_REQUEST_TIMEOUT_SECONDS, 0.1, 600.0),
        db_statement_timeout_seconds=env.number(
            "DB_STATEMENT_TIMEOUT_SECONDS", DEFAULT_DB_STATEMENT_TIMEOUT_SECONDS, 1.0, 86_400.0
        ),
        workers=env.integer("WORKERS", DEFAULT_WORKERS, 1, MAX_WORKERS),
        retention_days=env.integer("RETENTION_DAYS", DEFAULT_RETENTION_DAYS, 1, 3_650),
        report_hide_threshold=env.integer("REPORT_HIDE_THRESHOLD", DEFAULT_REPORT_HIDE_THRESHOLD, 1, 1_000_000),
        refresh_token_days=env.integer("REFRESH_TOKEN_DAYS", DEFAULT_REFRESH_TOKEN_DAYS, 1, 3_650),
        ws_ping_interval_seconds=ws_ping,
        ws_dead_after_seconds=ws_dead_after,
    )


def _port_problem(url: str, *, several_hosts: bool) -> str | None:
    """What is wrong with the host:port part of `url`, or None. Several comma-separated hosts are allowed
    when `several_hosts` (libpq and asyncpg accept them); no DNS lookups, only the form is checked."""
    try:
        netloc = urlsplit(url).netloc
    except ValueError as error:  # an unbalanced '[' of an IPv6 address
        return str(error).lower()
    hosts = netloc.rpartition("@")[2]
    for host in hosts.split(",") if several_hosts else [hosts]:
        if host.startswith("["):
            _, bracket, rest = host[1:].partition("]")
            if not bracket or (rest and not rest.startswith(":")):
                return f"has a malformed IPv6 host {host!r}"
            port = rest[1:]
        else:
            port = host.rpartition(":")[2] if ":" in host else ""
        if port and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65_535):
            return f"has an invalid port {port!r} (must be a number from 1 to 65535)"
    return None


class _Env:
    """Typed readers over a mapping; each raises ConfigError naming the variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def get(self, name: str) -> str | None:
        value = self._environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def _parse(self, name: str, default: T, parse: Callable[[str], T], what: str) -> T:
        raw = self.get(name)
        if raw is None:
            return default
        try:
            return parse(raw)
        except ValueError:
            raise ConfigError(name, f"must be {what} (got {raw!r})") from None

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self._parse(name, default, int, "a whole number")
        if not low <= value <= high:
            raise ConfigError(name, f"must be between {low} and {high} (got {value})")
        return value

    def number(self, name: str, default: float, low: float, high: float) -> float:
        value = self._parse(name, default, float, "a number")
        if not low <= value <= high:
            raise ConfigError(name, f"must be between {low} and {high} (got {value})")
        return value

    def choice(self, name: str, allowed: tuple[str, ...], default: str) -> str:
        raw = self.get(name)
        if raw is None:
            return default
        if raw.lower() not in allowed:
            raise ConfigError(name, f"must be one of {', '.join(allowed)} (got {raw!r})")
        return raw.lower()

    def boolean(self, name: str, *, default: bool) -> bool:
        raw = self.get(name)
        if raw is None:
            return default
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise ConfigError(name, f"must be true or false (got {raw!r})")

    def origins(self, name: str) -> tuple[str, ...]:
        raw = self.get(name)
        if raw is None:
            return DEFAULT_CORS_ORIGINS
        origins = tuple(o.strip().rstrip("/") for o in raw.split(",") if o.strip())
        for origin in origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ConfigError(name, f"origins must start with http:// or https:// (got {mask_url(origin)!r})")
        return origins

    def host(self, name: str) -> str:
        """An IP address (an IPv6 one may be bracketed) or a host name that looks resolvable; no DNS lookup."""
        raw = self.get(name)
        if raw is None:
            return DEFAULT_HOST
        unbracketed = raw[1:-1] if raw.startswith("[") and raw.endswith("]") else raw
        try:
            return str(ipaddress.ip_address(unbracketed))
        except ValueError:
            pass
        labels = raw.removesuffix(".").split(".")
        if (
            len(raw) <= MAX_HOST_NAME_LENGTH
            and all(_HOST_LABEL.fullmatch(label) for label in labels)
            # An all-digit last label is a malformed IPv4 address (1.2.3.999), not a name.
            and not labels[-1].isdigit()
        ):
            return raw
        raise ConfigError(name, f"must be an IP address or a host name, without a port (got {raw!r})")

    def database_url(self, name: str) -> str | None:
        url = self.get(name)
        if url is None:
            return None
        if not url.startswith(("postgres://", "postgresql://")):
            raise ConfigError(name, f"must start with postgres:// or postgresql:// (got {mask_url(url)!r})")
        problem = _port_problem(url, several_hosts=True)
        if problem is not None:
            raise ConfigError(name, f"{problem} (got {mask_url(url)!r})")
        return url

    def minio_endpoint(self) -> str | None:
        endpoint = self.get("MINIO_ENDPOINT")
        if endpoint is not None and endpoint.lower() == MINIO_OFF:
            return MINIO_OFF
        return self.s3_endpoint("MINIO_ENDPOINT")

    def s3_endpoint(self, name: str) -> str | None:
        endpoint = self.get(name)
        if endpoint is None:
            return None
        # host[:port], or a URL http(s)://host[:port]; nothing else addresses an S3 endpoint.
        parts = urlsplit(endpoint if "://" in endpoint else f"//{endpoint}")
        try:
            valid = bool(parts.hostname) and parts.scheme in ("", "http", "https") and parts.path in ("", "/")
            parts.port  # noqa: B018 - raises ValueError for a malformed port
        except ValueError:
            valid = False
        if not valid:
            off = ", or 'off'" if name == "MINIO_ENDPOINT" else ""
            raise ConfigError(name, f"must be host:port or an http(s) URL{off} (got {mask_url(endpoint)!r})")
        return endpoint

    def redis_url(self) -> str | None:
        url = self.get("REDIS_URL")
        if url is not None:
            if not url.startswith(("redis://", "rediss://")):
                raise ConfigError("REDIS_URL", f"must start with redis:// or rediss:// (got {mask_url(url)!r})")
            problem = _port_problem(url, several_hosts=False)
            if problem is not None:
                raise ConfigError("REDIS_URL", f"{problem} (got {mask_url(url)!r})")
            return url
        addr = self.get("REDIS_ADDR")
        if addr is None:
            return None
        host, _, port = addr.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError("REDIS_ADDR", f"must be host:port (got {mask_url(addr)!r})")
        password = self.get("REDIS_PASSWORD")
        auth = f":{quote(password, safe='')}@" if password else ""
        return f"redis://{auth}{host}:{port}/0"
