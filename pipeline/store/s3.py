"""Stores on S3 or an S3-compatible server (``s3://BUCKET/PATH``), through zarr's own
``zarr.storage.FsspecStore`` over s3fs.

Why s3fs and not obstore (zarr's ``ObjectStore``), which fetched whole shards 2.7x and single frames
1.9x as fast in ``bench/bench_s3.py`` (README, "Stores on S3"): obstore's tokio runtime does not survive ``fork``, so a
DataLoader worker (forked on Linux) hangs on its first read, and its maintainers call it not fork
safe; fsspec resets its event loop and instance cache in a forked child. With the local shard cache
(``shard_cache.py``) a node fetches each shard once, so the transfer rate matters for the first
epoch only.

Connection settings are the standard AWS ones, read by botocore as boto3 reads them: keys from
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (``AWS_SESSION_TOKEN``) or a profile of
``~/.aws/credentials`` / ``~/.aws/config`` (``AWS_PROFILE``), instance roles, the region from
``AWS_REGION`` / ``AWS_DEFAULT_REGION``, and an S3-compatible server's endpoint from
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (``--s3-endpoint`` sets the latter).

Every failure of the server (unreachable, credentials refused, no such bucket) surfaces as one
``StoreError`` line naming the store and what to do: :class:`S3Store` converts s3fs's and
botocore's exceptions wherever zarr calls it, and :func:`open_s3` asks for the bucket once before
any work.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from zarr.core.sync import sync
from zarr.storage import FsspecStore

from tiekd.pipeline.errors import StoreError

SCHEME = "s3://"
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
"""Where the endpoint of an S3-compatible server is read, the service-specific one first (as boto3)."""
ATTEMPTS = 3
"""Attempts of a request (botocore's standard retry mode, jittered exponential backoff): a moment's
outage of the server is ridden out, a stopped server is one line after seconds, not minutes."""
S3FS_RETRIES = 1
"""s3fs's own attempts around botocore's (its default, 5, would multiply them)."""
CONNECT_SECONDS = 10
"""How long a connection to the server may take before it counts as a failed attempt."""


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


CREDENTIAL_OPTIONS = {"AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": "secret", "AWS_SESSION_TOKEN": "token",
                      "AWS_PROFILE": "profile"}  # fmt: skip
"""The standard variables passed to s3fs by name: they are then part of fsspec's instance-cache key, so a
file system made with other credentials is never reused (botocore would read them itself)."""


def storage_options() -> dict:
    """s3fs's options: the endpoint and the credential variables (botocore reads a profile's files and
    the region itself), the retries, and no listing cache (other processes write the same store)."""
    server = endpoint()
    options = {"use_listings_cache": False, "config_kwargs": {
        "retries": {"max_attempts": ATTEMPTS, "mode": "standard"}, "connect_timeout": CONNECT_SECONDS}}  # fmt: skip
    options |= {option: os.environ[name] for name, option in CREDENTIAL_OPTIONS.items() if os.environ.get(name)}
    if server:
        options["endpoint_url"] = server
    return options


def where(url: str) -> str:
    server = endpoint()
    return f"{url} (server {server})" if server else url


def _unreachable(e: Exception) -> bool:
    """Whether ``e`` says the server could not be reached (botocore's or aiohttp's connection errors)."""
    from botocore.exceptions import ConnectionError as BotocoreConnectionError

    names = {type(c).__name__ for c in (e, e.__cause__, e.__context__) if c is not None}
    return isinstance(e, BotocoreConnectionError) or any("Connect" in name or "Timeout" in name for name in names)


def s3_error(url: str, e: Exception) -> StoreError:
    """The one line for an S3 failure on ``url``."""
    if isinstance(e, PermissionError):
        return StoreError(
            f"S3 refused the credentials for {where(url)} ({e}); set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) to keys with access to the bucket"
        )
    if _unreachable(e):
        return StoreError(
            f"cannot reach the S3 server for {where(url)} (no answer in {ATTEMPTS} attempts); check --s3-endpoint or "
            "AWS_ENDPOINT_URL and that the server runs, then run the command again (nothing stored is lost; "
            "cache-teacher resumes)"
        )
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
    return StoreError(
        f"S3 request for {where(url)} failed ({type(e).__name__}: {reason}); run the command again when it is fixed"
    )


@contextlib.contextmanager
def s3_errors(url: str):
    """s3fs's and botocore's exceptions as one-line ``StoreError``s naming ``url``; a missing key stays a
    ``FileNotFoundError`` (what zarr expects of a store)."""
    from botocore.exceptions import BotoCoreError

    try:
        yield
    except FileNotFoundError:
        raise
    except (OSError, BotoCoreError) as e:
        raise s3_error(url, e) from None
    except Exception as e:  # aiohttp's errors reach through s3fs unwrapped
        if not _unreachable(e):
            raise
        raise s3_error(url, e) from None


async def _listed(url: str, names):
    with s3_errors(url):
        async for name in names:
            yield name


class S3Store(FsspecStore):
    """zarr's FsspecStore over s3fs whose failures are one-line ``StoreError``s naming the store's URL."""

    url: str = ""

    def with_read_only(self, read_only: bool = False) -> S3Store:
        store = super().with_read_only(read_only)
        store.url = self.url
        return store

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


def open_s3(url: str, *, read_only: bool) -> S3Store:
    """The zarr store of ``s3://BUCKET/PATH``, after one HEAD of the bucket that proves the server
    reachable, the credentials accepted and the bucket there (each a one-line ``StoreError`` otherwise)."""
    bucket, prefix = bucket_and_prefix(url)
    try:
        store = S3Store.from_url(f"{SCHEME}{bucket}/{prefix}", storage_options=storage_options(), read_only=read_only)
    except ValueError as e:  # a malformed endpoint
        raise StoreError(f"cannot use {where(url)} ({e}); fix --s3-endpoint or AWS_ENDPOINT_URL") from None
    store.url = url.rstrip("/")
    store.fs.retries = S3FS_RETRIES  # a class attribute of s3fs, not an option
    with s3_errors(url):
        try:
            sync(store.fs._call_s3("head_bucket", Bucket=bucket))
        except FileNotFoundError:
            raise StoreError(f"the bucket of {where(url)} does not exist; create it or fix the URL") from None
    return store
