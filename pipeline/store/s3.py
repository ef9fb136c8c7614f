"""Stores on S3 or an S3-compatible server (``s3://BUCKET/PATH``), through zarr's own
``zarr.storage.ObjectStore`` over obstore (``bench/bench_s3.py`` measured it against fsspec/s3fs:
README, "Stores on S3").

Connection settings are the standard AWS ones, read as boto3 and obstore read them: keys from
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (``AWS_SESSION_TOKEN``), or a profile of
``~/.aws/credentials`` / ``~/.aws/config`` (``AWS_PROFILE``, through boto3's credential chain), the
region from ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, and an S3-compatible server's endpoint from
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (``--s3-endpoint`` sets the latter).

Every failure of the server (unreachable, credentials refused, no such bucket) surfaces as one
``StoreError`` line naming the store and what to do: :class:`S3ObjectStore` converts obstore's
exceptions wherever zarr calls it, and :func:`open_s3` probes the bucket once before any work.
"""

from __future__ import annotations

import contextlib
import os
import re
from datetime import timedelta
from pathlib import Path

from zarr.storage import ObjectStore

from tiekd.pipeline.errors import StoreError

SCHEME = "s3://"
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
"""Where the endpoint of an S3-compatible server is read, the service-specific one first (as boto3)."""
RETRIES = 5
"""Attempts after a failed request (object_store's backoff: 0.1 s doubling, at most 2 s apart, about 3 s
in all): a moment's outage of the server is ridden out, a stopped server is one line after seconds, not
object_store's default 10 retries over up to 3 minutes."""
RETRY_CONFIG = {"max_retries": RETRIES, "retry_timeout": timedelta(seconds=30), "backoff": {
    "init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=2), "base": 2}}  # fmt: skip


def is_s3(path: str | Path) -> bool:
    return str(path).startswith(SCHEME)


def endpoint() -> str | None:
    """The S3-compatible server's URL, from the environment as boto3 reads it; None = AWS."""
    return next((os.environ[name] for name in ENDPOINT_VARIABLES if os.environ.get(name)), None)


def set_endpoint(url: str | None) -> None:
    """``--s3-endpoint URL``: the endpoint for this process and those it starts (DataLoader and dask
    workers), as the standard variable ``AWS_ENDPOINT_URL`` would give it."""
    if url:
        os.environ["AWS_ENDPOINT_URL"] = url
        os.environ.pop("AWS_ENDPOINT_URL_S3", None)  # the flag wins over the service-specific variable


def bucket_and_prefix(url: str) -> tuple[str, str]:
    """``s3://bucket/a/b.zarr`` -> ("bucket", "a/b.zarr"); a StoreError without a bucket."""
    bucket, _, prefix = url.removeprefix(SCHEME).partition("/")
    if not bucket:
        raise StoreError(f"{url} names no bucket; write s3://BUCKET/PATH")
    return bucket, prefix.strip("/")


def _profile_credentials():
    """boto3's credential provider where keys are not in the environment but a profile may hold them
    (obstore reads environment variables, web identity and instance metadata, not profiles)."""
    if os.environ.get("AWS_ACCESS_KEY_ID"):
        return None
    files = [os.environ.get("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"), os.environ.get("AWS_CONFIG_FILE", "~/.aws/config")]
    if not os.environ.get("AWS_PROFILE") and not any(Path(f).expanduser().is_file() for f in files):
        return None
    import boto3
    from obstore.auth.boto3 import Boto3CredentialProvider

    try:
        return Boto3CredentialProvider(boto3.Session())
    except Exception as e:  # botocore: profile not found, a broken file, no credentials in it
        raise StoreError(f"no AWS credentials for S3 ({e}); set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE") from None


def obstore_store(url: str):
    """obstore's S3Store for ``url``, configured from the environment (see the module docstring)."""
    from obstore.store import S3Store

    bucket, prefix = bucket_and_prefix(url)
    server = endpoint()
    config = {"endpoint": server} if server else {}
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        config["region"] = region
    elif server:
        config["region"] = "us-east-1"  # S3-compatible servers ignore it, and signing needs one
    return S3Store(
        bucket, prefix=prefix or None, config=config, retry_config=RETRY_CONFIG,
        client_options={"allow_http": bool(server and server.startswith("http://"))},
        credential_provider=_profile_credentials(),
    )  # fmt: skip


def where(url: str) -> str:
    server = endpoint()
    return f"{url} (server {server})" if server else url


REFUSED_CODES = ("SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "403 Forbidden", "ExpiredToken")
"""What an S3 server answers to credentials it does not accept (a listing's refusal reaches obstore as a
generic error, so its text is read)."""


def _reason(e: Exception) -> str:
    """An S3 failure in a few words: the status and the S3 error code where the server sent them."""
    text = str(e)
    status = re.search(r"status code: (\d{3}[^:<]*)", text)
    code = re.search(r"<Code>([^<]+)</Code>", text)
    if status or code:
        return " ".join(m.group(1).strip() for m in (status, code) if m)
    lines = text.strip().splitlines()
    return lines[0][:300] if lines else type(e).__name__


def s3_error(url: str, e: Exception) -> StoreError:
    """The one line for an obstore failure on ``url``."""
    from obstore.exceptions import PermissionDeniedError, UnauthenticatedError

    text = _reason(e)
    if isinstance(e, (PermissionDeniedError, UnauthenticatedError)) or any(c in str(e) for c in REFUSED_CODES):
        return StoreError(
            f"S3 refused the credentials for {where(url)} ({text}); set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) to keys with access to the bucket"
        )
    if "NoSuchBucket" in str(e):
        return StoreError(f"the bucket of {where(url)} does not exist; create it or fix the URL")
    if "error sending request" in str(e) or "connect" in text.lower():
        return StoreError(
            f"cannot reach the S3 server for {where(url)} (no answer after {RETRIES} retries); check --s3-endpoint or AWS_ENDPOINT_URL "
            "and that the server runs, then run the command again (nothing stored is lost; cache-teacher resumes)"
        )
    return StoreError(f"S3 request for {where(url)} failed ({text}); run the command again when it is fixed")


@contextlib.contextmanager
def s3_errors(url: str):
    """obstore's exceptions as one-line ``StoreError``s naming ``url``; a missing key stays a
    ``FileNotFoundError`` (what zarr expects of a store)."""
    from obstore.exceptions import BaseError

    try:
        yield
    except FileNotFoundError as e:
        if "NoSuchBucket" in str(e):
            raise s3_error(url, e) from None
        raise
    except BaseError as e:
        raise s3_error(url, e) from None


async def _listed(url: str, names):
    with s3_errors(url):
        async for name in names:
            yield name


class S3ObjectStore(ObjectStore):
    """zarr's ObjectStore whose failures are one-line ``StoreError``s naming the store's URL."""

    def __init__(self, store, *, url: str, read_only: bool = False):
        super().__init__(store, read_only=read_only)
        self.url = url

    def with_read_only(self, read_only: bool = False) -> S3ObjectStore:
        return type(self)(self.store, url=self.url, read_only=read_only)

    def __str__(self) -> str:
        return self.url

    async def get(self, key, prototype, byte_range=None):
        with s3_errors(f"{self.url}/{key}"):
            return await super().get(key, prototype, byte_range)

    async def get_partial_values(self, prototype, key_ranges):
        with s3_errors(self.url):
            return await super().get_partial_values(prototype, key_ranges)

    async def exists(self, key):
        with s3_errors(f"{self.url}/{key}"):
            return await super().exists(key)

    async def set(self, key, value):
        with s3_errors(f"{self.url}/{key}"):
            return await super().set(key, value)

    async def set_if_not_exists(self, key, value):
        with s3_errors(f"{self.url}/{key}"):
            return await super().set_if_not_exists(key, value)

    async def delete(self, key):
        with s3_errors(f"{self.url}/{key}"):
            return await super().delete(key)

    async def delete_dir(self, prefix):
        with s3_errors(f"{self.url}/{prefix}"):
            return await super().delete_dir(prefix)

    async def getsize(self, key):
        with s3_errors(f"{self.url}/{key}"):
            return await super().getsize(key)

    def list(self):
        return _listed(self.url, super().list())

    def list_prefix(self, prefix):
        return _listed(self.url, super().list_prefix(prefix))

    def list_dir(self, prefix):
        return _listed(self.url, super().list_dir(prefix))


def open_s3(url: str, *, read_only: bool) -> S3ObjectStore:
    """The zarr store of ``s3://BUCKET/PATH``, after one listing that proves the server reachable, the
    credentials accepted and the bucket there (each a one-line ``StoreError`` otherwise)."""
    import obstore

    try:
        store = obstore_store(url)
    except (ValueError, obstore.exceptions.BaseError) as e:  # a malformed endpoint or region
        raise StoreError(f"cannot use {where(url)} ({str(e).splitlines()[0]}); fix --s3-endpoint or AWS_ENDPOINT_URL") from None
    with s3_errors(url):
        try:
            obstore.list_with_delimiter(store)
        except FileNotFoundError:  # S3 answers a listing of a missing bucket with 404
            raise StoreError(f"the bucket of {where(url)} does not exist; create it or fix the URL") from None
    return S3ObjectStore(store, url=url.rstrip("/"), read_only=read_only)
