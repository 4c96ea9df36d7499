"""mirror.s3: s3:// locations, and the client's failures said with the bucket, the endpoint and what to
check, never a credential; against moto's S3 server on 127.0.0.1."""

from __future__ import annotations

import pytest

from mirror import s3 as objects
from mirror.errors import MirrorError, UsageError
from tests.s3server import ACCESS_KEY, SECRET_KEY, S3Bucket


def test_an_s3_url_is_a_bucket_and_a_prefix() -> None:
    assert objects.parse_s3_url("s3://models/store") == objects.S3Location("models", "store")
    assert objects.parse_s3_url("s3://models/a/b/") == objects.S3Location("models", "a/b")
    assert objects.parse_s3_url("s3://models") == objects.S3Location("models", "")
    assert str(objects.S3Location("models", "a/b")) == "s3://models/a/b"
    assert objects.S3Location("models", "a").key("blobs/x") == "a/blobs/x"
    assert objects.S3Location("models").key("blobs/x") == "blobs/x"


@pytest.mark.parametrize(
    "url",
    [
        "s3://",
        "s3://UPPER/x",
        "s3://a/x",
        "s3://-bad/x",
        "s3://b_c/x",
        "s3://ok-name/a//b",
        "s3://ok-name/a/../b",
        "s3://ok-name/./b",
        "s3://ok-name/a\\b",
        "s3://ok-name/a\x00b",
        "/srv/store",
    ],
)
def test_what_is_not_an_s3_location_is_refused_saying_why(url: str) -> None:
    with pytest.raises(UsageError, match=r"s3://|bucket name|prefix"):
        objects.parse_s3_url(url)


def test_a_missing_bucket_is_named_with_the_endpoint_and_no_credential(s3: S3Bucket) -> None:
    where = objects.parse_s3_url(f"s3://{s3.name}-missing/p")
    with pytest.raises(MirrorError) as e, objects.translated(where, f"listing {where}"):
        objects.client().list_objects_v2(Bucket=where.bucket, Prefix=where.prefix)
    message = str(e.value)
    assert f"listing s3://{s3.name}-missing/p: bucket '{s3.name}-missing' at {s3.server.endpoint}" in message
    assert "the bucket does not exist" in message
    assert ACCESS_KEY not in message and SECRET_KEY not in message


def test_the_client_talks_to_the_configured_endpoint(s3: S3Bucket) -> None:
    objects.client().put_object(Bucket=s3.name, Key="a/b", Body=b"x")
    assert s3.keys() == ["a/b"] and s3.read("a/b") == b"x"
    assert objects.endpoint() == s3.server.endpoint
