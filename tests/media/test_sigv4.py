"""The signer against AWS's published Signature V4 vectors, written here as data.

- The v4 signing test suite (awslabs/aws-c-auth, tests/aws-signing-test-suite/v4: header-signed-request.txt and
  query-signed-request.txt of each case): credentials AKIDEXAMPLE, region us-east-1, service "service",
  2015-08-30T12:36:00Z; the presigned variants are valid 3600 s and sign `host` only.
- The Amazon S3 API reference examples ("Signature Calculations for the Authorization Header" and "Authenticating
  Requests: Using Query Parameters"): credentials AKIAIOSFODNN7EXAMPLE, region us-east-1, service s3,
  2013-05-24T00:00:00Z.
The region is part of every vector's credential scope and signing key, so a signer that dropped or misplaced it
fails them all; the last tests pin that the region (and nothing else of the scope) changes the signature.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from urllib.parse import parse_qsl

import pytest

from stories.media.sigv4 import EMPTY_SHA256, UNSIGNED_PAYLOAD, Signer, canonical_request, signing_key

SUITE = Signer("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "us-east-1", "service")
SUITE_NOW = datetime(2015, 8, 30, 12, 36, 0, tzinfo=UTC)
SUITE_HOST = {"Host": "example.amazonaws.com"}

S3 = Signer("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "us-east-1", "s3")
S3_NOW = datetime(2013, 5, 24, 0, 0, 0, tzinfo=UTC)
S3_HOST = {"Host": "examplebucket.s3.amazonaws.com"}

UNRESERVED = "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

# The query of each case of the suite used here.
SUITE_QUERIES: dict[str, list[tuple[str, str]]] = {
    "get-vanilla": [],
    "get-vanilla-query-order-key-case": [("Param2", "value2"), ("Param1", "value1")],
    "get-vanilla-query-unreserved": [(UNRESERVED, UNRESERVED)],
    "get-vanilla-utf8-query": [("\u1234", "bar")],
}
# (case, signature of the header-signed request)
HEADER_CASES = [
    ("get-vanilla", "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"),
    ("get-vanilla-query-order-key-case", "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"),
    ("get-vanilla-query-unreserved", "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197"),
]
# (case, signature of the query-signed request)
QUERY_CASES = [
    ("get-vanilla-query-order-key-case", "86012e2c9ad4d77369f5d81c11f75158aae4f895a085212cc6d3f923d300bed5"),
    ("get-vanilla-query-unreserved", "8e76a88a7433637b12778d5592799b29ad21ecd6cf6325051c21d86f0acda2bf"),
    ("get-vanilla-utf8-query", "0bdd809b1519ac4f0c1dc3540e2cc46bd0c7f778eda408b2ebf3b913d21ff600"),
]


@pytest.mark.parametrize(("case", "signature"), HEADER_CASES, ids=[c[0] for c in HEADER_CASES])
def test_aws_suite_authorization_header(case, signature):
    added = SUITE.authorization("GET", "/", SUITE_QUERIES[case], SUITE_HOST, EMPTY_SHA256, SUITE_NOW)
    assert added == {
        "X-Amz-Date": "20150830T123600Z",
        "Authorization": (
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
            f"SignedHeaders=host;x-amz-date, Signature={signature}"
        ),
    }, case


@pytest.mark.parametrize(("case", "signature"), QUERY_CASES, ids=[c[0] for c in QUERY_CASES])
def test_aws_suite_presigned_query(case, signature):
    signed = dict(parse_qsl(SUITE.presign("GET", "/", SUITE_QUERIES[case], SUITE_HOST, 3600, SUITE_NOW, EMPTY_SHA256)))
    assert signed["X-Amz-Credential"] == "AKIDEXAMPLE/20150830/us-east-1/service/aws4_request"
    assert signed["X-Amz-SignedHeaders"] == "host"
    assert signed["X-Amz-Expires"] == "3600"
    assert signed["X-Amz-Signature"] == signature, case


def test_s3_get_object_with_range():
    added = S3.authorization(
        "GET",
        "/test.txt",
        [],
        {**S3_HOST, "Range": "bytes=0-9", "x-amz-content-sha256": EMPTY_SHA256},
        EMPTY_SHA256,
        S3_NOW,
    )
    assert added["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


def test_s3_put_object_encodes_the_key_once():
    body_hash = hashlib.sha256(b"Welcome to Amazon S3.").hexdigest()
    headers = {
        **S3_HOST,
        "Date": "Fri, 24 May 2013 00:00:00 GMT",
        "x-amz-storage-class": "REDUCED_REDUNDANCY",
        "x-amz-content-sha256": body_hash,
    }
    added = S3.authorization("PUT", "/test$file.text", [], headers, body_hash, S3_NOW)
    assert added["Authorization"].endswith(
        "SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class, "
        "Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"
    )


def test_s3_get_bucket_lifecycle_and_list_objects():
    headers = {**S3_HOST, "x-amz-content-sha256": EMPTY_SHA256}
    lifecycle = S3.authorization("GET", "/", [("lifecycle", "")], headers, EMPTY_SHA256, S3_NOW)
    assert lifecycle["Authorization"].endswith(
        "Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
    )
    listing = S3.authorization("GET", "/", [("max-keys", "2"), ("prefix", "J")], headers, EMPTY_SHA256, S3_NOW)
    assert listing["Authorization"].endswith(
        "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
    )


def test_s3_presigned_get_object():
    query = S3.presign("GET", "/test.txt", [], S3_HOST, 86_400, S3_NOW, UNSIGNED_PAYLOAD)
    assert query == (
        "X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    )


def test_the_canonical_request_of_the_s3_presigned_example():
    request, signed = canonical_request(
        "GET",
        "/test.txt",
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2F"
        "aws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host",
        S3_HOST,
        UNSIGNED_PAYLOAD,
    )
    assert signed == "host"
    # The hash of the canonical request, as the example's string to sign shows it.
    assert hashlib.sha256(request.encode()).hexdigest() == (
        "3bfa292879f6447bbcda7001decf97f4a54dc650c8942174ae0a9121cf58ad04"
    )


def test_the_signing_key_of_the_suite():
    key = signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20150830", "us-east-1", "service")
    assert key.hex() == "938127b5336810ddb6a5d6af445fcac9e371f9ed418ed386b022aed82901be75"


def test_the_region_is_signed():
    """Same request, same key, another region: another scope and another signature (SeaweedFS does not check the
    region, so only these tests do)."""
    elsewhere = Signer(S3.access_key, S3.secret_key, "eu-central-1", "s3")
    here = dict(parse_qsl(S3.presign("GET", "/test.txt", [], S3_HOST, 86_400, S3_NOW)))
    there = dict(parse_qsl(elsewhere.presign("GET", "/test.txt", [], S3_HOST, 86_400, S3_NOW)))
    assert there["X-Amz-Credential"] == "AKIAIOSFODNN7EXAMPLE/20130524/eu-central-1/s3/aws4_request"
    assert there["X-Amz-Signature"] != here["X-Amz-Signature"]
    assert signing_key(S3.secret_key, "20130524", "eu-central-1", "s3") != signing_key(
        S3.secret_key, "20130524", "us-east-1", "s3"
    )


def test_presigned_headers_are_all_signed_and_sorted():
    headers = {**S3_HOST, "Content-Type": "image/jpeg", "Content-Length": "12"}
    signed = dict(parse_qsl(S3.presign("PUT", "/b/k.jpg", [], headers, 900, S3_NOW)))
    assert signed["X-Amz-SignedHeaders"] == "content-length;content-type;host"


@pytest.mark.parametrize("expires", [0, 7 * 86_400 + 1])
def test_presign_refuses_lifetimes_s3_refuses(expires):
    with pytest.raises(ValueError, match="expires"):
        S3.presign("GET", "/test.txt", [], S3_HOST, expires, S3_NOW)
