"""AWS Signature Version 4, as pure functions: no I/O, no clock, no globals.

Ours rather than a cloud SDK's: presigned URLs and the few S3 calls the service makes
(HEAD and DELETE of objects, HEAD and PUT of the bucket) need a hundred lines, not a dependency that would pull an
asyncio HTTP stack into a trio process. Tested against AWS's published vectors (tests/media/test_sigv4.py) and
against a real S3-compatible server.

Paths are given decoded (`/bucket/uploads/a b.jpg`) and encoded here the S3 way: every byte but the unreserved
ones (`A-Z a-z 0-9 - . _ ~`) as %XX, `/` kept, and encoded once (S3 does not double-encode, unlike other services).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from datetime import datetime

__all__ = [
    "ALGORITHM",
    "EMPTY_SHA256",
    "UNSIGNED_PAYLOAD",
    "Signer",
    "canonical_query",
    "canonical_request",
    "signing_key",
    "string_to_sign",
    "uri_encode",
]

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# S3 refuses presigned URLs valid for longer than seven days.
MAX_PRESIGN_SECONDS = 7 * 86_400
_UNRESERVED = "-._~"


def uri_encode(value: str, *, keep_slash: bool = False) -> str:
    """RFC 3986 percent-encoding of UTF-8 bytes, leaving only the unreserved characters (and `/` if asked)."""
    return quote(value, safe=_UNRESERVED + ("/" if keep_slash else ""))


def canonical_query(params: Iterable[tuple[str, str]]) -> str:
    """`name=value` pairs, both encoded, sorted by encoded name then value, joined with `&`."""
    encoded = sorted((uri_encode(name), uri_encode(value)) for name, value in params)
    return "&".join(f"{name}={value}" for name, value in encoded)


def _canonical_headers(headers: Mapping[str, str]) -> tuple[str, str]:
    """(canonical header block, signed header list): names lower-cased and sorted, values trimmed with inner
    runs of spaces folded to one."""
    folded = sorted((name.lower(), " ".join(value.split())) for name, value in headers.items())
    block = "".join(f"{name}:{value}\n" for name, value in folded)
    return block, ";".join(name for name, _ in folded)


def canonical_request(
    method: str, path: str, query: str, headers: Mapping[str, str], payload_hash: str
) -> tuple[str, str]:
    """(canonical request, signed headers) for a decoded `path`, an already canonical `query`, and the headers
    to sign (`host` among them)."""
    block, signed = _canonical_headers(headers)
    lines = [method.upper(), uri_encode(path, keep_slash=True), query, block, signed, payload_hash]
    return "\n".join(lines), signed


def string_to_sign(amz_date: str, scope: str, request: str) -> str:
    return "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(request.encode("utf-8")).hexdigest()])


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.new(key, message.encode("utf-8"), hashlib.sha256).digest()


def signing_key(secret_key: str, date: str, region: str, service: str) -> bytes:
    """kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")."""
    key = _hmac(f"AWS4{secret_key}".encode(), date)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    return key


def amz_date(instant: datetime) -> str:
    """`20150830T123600Z` (the instant must be UTC)."""
    return instant.strftime("%Y%m%dT%H%M%SZ")


@dataclass(frozen=True, slots=True)
class Signer:
    """Signs requests for one access key, region and service. Immutable; safe to share."""

    access_key: str
    secret_key: str
    region: str
    service: str = "s3"

    def _scope(self, date: str) -> str:
        return f"{date}/{self.region}/{self.service}/aws4_request"

    def _signature(self, when: str, request: str) -> str:
        date = when[:8]
        key = signing_key(self.secret_key, date, self.region, self.service)
        return hmac.new(key, string_to_sign(when, self._scope(date), request).encode(), hashlib.sha256).hexdigest()

    def authorization(
        self,
        method: str,
        path: str,
        query: Iterable[tuple[str, str]],
        headers: Mapping[str, str],
        payload_hash: str,
        now: datetime,
    ) -> dict[str, str]:
        """Header-based signing. `headers` are the ones to sign (`host` included); returns the headers to add to
        the request: `X-Amz-Date` and `Authorization`."""
        when = amz_date(now)
        signed_headers = {**headers, "x-amz-date": when}
        request, signed = canonical_request(method, path, canonical_query(query), signed_headers, payload_hash)
        credential = f"{self.access_key}/{self._scope(when[:8])}"
        signature = self._signature(when, request)
        return {
            "X-Amz-Date": when,
            "Authorization": f"{ALGORITHM} Credential={credential}, SignedHeaders={signed}, Signature={signature}",
        }

    def presign(
        self,
        method: str,
        path: str,
        query: Iterable[tuple[str, str]],
        headers: Mapping[str, str],
        expires: int,
        now: datetime,
        payload_hash: str = UNSIGNED_PAYLOAD,
    ) -> str:
        """Query-string signing: the whole query (the caller's parameters, then the `X-Amz-*` ones, the signature
        last) for a URL valid `expires` seconds from `now`. Every header in `headers` (`host` included) is signed:
        the server refuses a request that sends another value."""
        if not 1 <= expires <= MAX_PRESIGN_SECONDS:
            raise ValueError(f"expires must be 1 to {MAX_PRESIGN_SECONDS} seconds (got {expires})")
        when = amz_date(now)
        _, signed = _canonical_headers(headers)
        params = [
            *query,
            ("X-Amz-Algorithm", ALGORITHM),
            ("X-Amz-Credential", f"{self.access_key}/{self._scope(when[:8])}"),
            ("X-Amz-Date", when),
            ("X-Amz-Expires", str(expires)),
            ("X-Amz-SignedHeaders", signed),
        ]
        canonical = canonical_query(params)
        request, _ = canonical_request(method, path, canonical, headers, payload_hash)
        return f"{canonical}&X-Amz-Signature={self._signature(when, request)}"
