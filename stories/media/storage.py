"""ObjectStorage: one S3-compatible bucket, addressed path-style (`{endpoint}/{bucket}/{key}`).

Presigned URLs are computed here without any network call (sigv4.py). The few calls the service itself makes go
over httpx (trio-native through anyio): HEAD of the bucket (health), HEAD of an object (is a story copy there?), a
server-side COPY of an object (a story's own copy of its upload), DELETE of an object (lifecycle), PUT of the
bucket (the embedded store's first start). The service never sends or receives media bytes.

Every call raises `StorageUnavailable` when the store cannot give an answer (refused, reset, timed out, a 5xx, or a
refusal of our credentials), so callers can tell "the store said no" from "the store said nothing".
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

from stories.clock import SystemClock
from stories.errors import ConfigError, StorageUnavailable
from stories.media.sigv4 import EMPTY_SHA256, Signer, uri_encode

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from stories.clock import Clock
    from stories.settings import Settings

__all__ = ["ObjectStorage", "StorageConfig", "open_object_storage"]


# How long an upload URL is valid (API.md: a short time, 15 min by default).
UPLOAD_URL_SECONDS = 900
# A bound on each call for the httpx transport itself; callers set tighter deadlines with trio (STYLE R12).
HTTP_TIMEOUT_SECONDS = 30.0
# A few connections suffice: the service makes a handful of small calls (health, object checks, deletes).
MAX_CONNECTIONS = 8
# Media URLs signed within one window are the same URL (see ObjectStorage.media_url). A window is a fifteenth of
# the URL's lifetime, at most this long, at least a second: a URL is valid for at least 14/15 of MEDIA_URL_SECONDS
# (more than MEDIA_URL_SECONDS - 1 below 15 s) and never longer.
MEDIA_URL_WINDOW_SECONDS = 60
MEDIA_URL_WINDOW_SHARE = 15
_DEFAULT_PORTS = {"http": 80, "https": 443}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """Where the bucket lives and how to sign for it. `endpoint` is `scheme://host[:port]`, the port left out
    when it is the scheme's default (clients leave it out of the Host header they send, which is signed).
    `public_endpoint` is the same store as clients reach it, which presigned URLs name (None: `endpoint`)."""

    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    region: str
    public_endpoint: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> StorageConfig:
        """The store MINIO_* names (load_settings has checked that the keys come with the endpoint)."""
        endpoint, access_key, secret_key = settings.minio_endpoint, settings.minio_access_key, settings.minio_secret_key
        if endpoint is None or access_key is None or secret_key is None:
            raise ConfigError("MINIO_ENDPOINT", "MINIO_ACCESS_KEY and MINIO_SECRET_KEY must be set together")
        public = settings.minio_public_endpoint
        return cls(
            endpoint=normalize_endpoint(endpoint, use_ssl=settings.minio_use_ssl),
            public_endpoint=None if public is None else normalize_endpoint(public, use_ssl=settings.minio_use_ssl),
            bucket=settings.minio_bucket,
            access_key=access_key,
            secret_key=secret_key,
            region=settings.minio_region,
        )

    def __repr__(self) -> str:
        return (
            f"StorageConfig(endpoint={self.endpoint!r}, public_endpoint={self.public_endpoint!r}, "
            f"bucket={self.bucket!r}, region={self.region!r})"
        )


def normalize_endpoint(raw: str, *, use_ssl: bool) -> str:
    """`host:port` or an http(s) URL -> `scheme://host[:port]` (MINIO_USE_SSL picks the scheme of a bare
    host:port; a URL's own scheme wins)."""
    parts = urlsplit(raw if "://" in raw else f"{'https' if use_ssl else 'http'}://{raw}")
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host if port is None or port == _DEFAULT_PORTS.get(parts.scheme) else f"{host}:{port}"
    return f"{parts.scheme}://{netloc}"


class ObjectStorage:
    """One bucket of an S3-compatible store. Safe to share between tasks; every call is cancellable."""

    def __init__(self, config: StorageConfig, client: httpx.AsyncClient, clock: Clock) -> None:
        self.config = config
        # The store checks every signature's time against its own clock (15 min of skew at most), so this is
        # the real wall clock, also in tests that move the service's clock.
        self.clock = clock
        self._client = client
        self._signer = Signer(config.access_key, config.secret_key, config.region)
        self._host = urlsplit(config.endpoint).netloc
        self._public_endpoint = config.public_endpoint or config.endpoint
        self._public_host = urlsplit(self._public_endpoint).netloc

    def _path(self, key: str | None) -> str:
        return f"/{self.config.bucket}" if key is None else f"/{self.config.bucket}/{key}"

    def _presign(self, method: str, key: str, headers: dict[str, str], expires: int, now: datetime) -> str:
        path = self._path(key)
        # The signed Host is the one the client will send: the public endpoint's.
        query = self._signer.presign(method, path, [], {"host": self._public_host, **headers}, expires, now)
        return f"{self._public_endpoint}{_encoded(path)}?{query}"

    def presign_put(self, key: str, content_type: str, size: int) -> str:
        """A PUT URL valid UPLOAD_URL_SECONDS that the store accepts only with exactly this Content-Type and
        Content-Length (both signed)."""
        headers = {"content-type": content_type, "content-length": str(size)}
        return self._presign("PUT", key, headers, UPLOAD_URL_SECONDS, self.clock.now())

    def media_url(self, key: str, seconds: int, active_for: timedelta) -> str:
        """A GET URL for a story's media, valid `seconds` (its X-Amz-Expires) from the start of the current window
        but never past now + `seconds`, nor past the end of the story (`active_for` from now; its object is deleted
        soon after; X-Amz-Expires is then less). Every read within one window gets the same URL: clients and caches
        keep the image instead of fetching it again on every feed refresh.

        The window is `media_url_window(seconds)`, so the URL read at any instant of it is still valid for more
        than `seconds - window` seconds: at least 14/15 of `seconds` (from 15 s up), never longer than `seconds`.
        """
        now = self.clock.now()
        window = media_url_window(seconds)
        since_epoch = (now - _EPOCH) // timedelta(seconds=1)
        signed_at = _EPOCH + timedelta(seconds=since_epoch - since_epoch % window)
        until_story_ends = (now + active_for - signed_at) // timedelta(seconds=1)
        lifetime = max(1, min(seconds, until_story_ends))
        return self._presign("GET", key, {}, lifetime, signed_at)

    async def _call(self, method: str, key: str | None, extra: dict[str, str] | None = None) -> httpx.Response:
        path = self._path(key)
        signed = {"host": self._host, "x-amz-content-sha256": EMPTY_SHA256, **(extra or {})}
        headers = {**signed, **self._signer.authorization(method, path, [], signed, EMPTY_SHA256, self.clock.now())}
        del headers["host"]  # httpx sends it from the URL: the same value
        try:
            response = await self._client.request(method, f"{self.config.endpoint}{_encoded(path)}", headers=headers)
        except httpx.HTTPError as exc:
            raise StorageUnavailable(f"object storage did not answer ({type(exc).__name__})") from exc
        if response.status_code >= 500 or response.status_code in (401, 403):
            # A 403 is our credentials or clock refused: from here, the store is as good as down.
            raise StorageUnavailable(f"object storage answered {method} with {response.status_code}")
        return response

    async def check_bucket(self) -> None:
        """HEAD of the bucket: returns when the store answers and the bucket exists; StorageUnavailable else."""
        response = await self._call("HEAD", None)
        if response.status_code != 200:
            raise StorageUnavailable(f"bucket {self.config.bucket!r}: HEAD answered {response.status_code}")

    async def object_exists(self, key: str) -> bool:
        response = await self._call("HEAD", key)
        if response.status_code == 404:
            return False
        if response.status_code != 200:
            raise StorageUnavailable(f"HEAD of an object answered {response.status_code}")
        return True

    async def copy_object(self, source: str, target: str) -> bool:
        """Copy `source` to `target` inside the store (S3 CopyObject: the bytes never pass through us); False
        when there is no `source` object."""
        response = await self._call("PUT", target, {"x-amz-copy-source": _encoded(self._path(source))})
        if response.status_code == 404:
            return False
        if response.status_code != 200:
            raise StorageUnavailable(f"COPY of an object answered {response.status_code}")
        return True

    async def delete_object(self, key: str) -> None:
        """Delete one object; an object that is not there counts as deleted (S3 answers 204 either way)."""
        response = await self._call("DELETE", key)
        if response.status_code not in (200, 204, 404):
            raise StorageUnavailable(f"DELETE of an object answered {response.status_code}")

    async def create_bucket(self) -> None:
        """Create the bucket; one that already exists (ours) is fine."""
        response = await self._call("PUT", None)
        if response.status_code == 400:
            raise ConfigError("MINIO_BUCKET", f"{self.config.bucket!r} is not a bucket name the store accepts")
        if response.status_code not in (200, 409):
            raise StorageUnavailable(f"PUT of bucket {self.config.bucket!r} answered {response.status_code}")


def media_url_window(seconds: int) -> int:
    """The window (whole seconds) within which media URLs valid `seconds` are the same URL: a fifteenth of it,
    at most MEDIA_URL_WINDOW_SECONDS, at least one second (AWS dates have whole seconds)."""
    return max(1, min(MEDIA_URL_WINDOW_SECONDS, seconds // MEDIA_URL_WINDOW_SHARE))


def _encoded(path: str) -> str:
    return uri_encode(path, keep_slash=True)


@asynccontextmanager
async def open_object_storage(config: StorageConfig, clock: Clock | None = None) -> AsyncIterator[ObjectStorage]:
    """An ObjectStorage with its own connection pool, closed on exit; `clock` defaults to the system's."""
    # trust_env=False: a proxy configured for the machine's outbound traffic must not carry our calls.
    async with httpx.AsyncClient(
        timeout=HTTP_TIMEOUT_SECONDS,
        trust_env=False,
        limits=httpx.Limits(max_connections=MAX_CONNECTIONS),
    ) as client:
        yield ObjectStorage(config, client, clock or SystemClock())
