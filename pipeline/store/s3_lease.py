"""Leases on S3: one object a lease, taken with a conditional PUT and kept alive by a heartbeat.

How a lease works (what :mod:`tiekd.pipeline.store.lease` builds its S3 locks from):

- **taking** a free lease is ``PUT key`` with ``If-None-Match: *``: the server stores the object only if
  no object has the key, so of two processes taking one lease at once exactly one succeeds. The body
  names the holder (pid, host, the host's pid namespace) and the lease's length in seconds;
- the holder **renews** it every :data:`RENEW_SECONDS` (one heartbeat thread a process renews all its
  leases) with ``PUT`` ``If-Match: <its ETag>`` and a new body (a renewal counter: the ETag changes each
  time). A renewal refused with 412 means another process took the lease over: the lease is *lost*, and
  :func:`check_held` stops the writer at its next write;
- a lease whose object was not renewed for its length (the server's clock: the GET's ``Date`` minus the
  object's ``Last-Modified``), or whose holder ran on this host (same host name and pid namespace) and is
  gone, is **stale**: it is taken over with ``PUT`` ``If-Match: <the ETag read>``, so of two takers only one
  wins, and a holder that renews in between makes both fail. A writer killed with ``kill -9`` blocks its
  rerun on the same host not at all, and a rerun elsewhere for at most :data:`LEASE_SECONDS`;
- **releasing** is ``DELETE`` with ``If-Match: <its ETag>``: never someone else's lease.

Requests go through a botocore client of this process's own (not s3fs's event loop, which big transfers
may keep busy past a heartbeat). AWS S3 documents ``If-None-Match: *`` and ``If-Match`` on PUT (since
2024); a server that refuses the conditional DELETE leaves a released lease to end with its length (on
this host at once, its holder being gone). The test server (SeaweedFS ``weed mini`` 4.48) honours all
three, and of 16 concurrent conditional PUTs exactly one succeeded in each of 80 races (40 of
``If-None-Match``, 40 of ``If-Match``; tests/pipeline/store/test_s3_lease.py repeats smaller races). A
server that ignored the conditions would let two writers in: these leases are as safe as the server's
conditional writes, and rest on S3's strong read-after-write and list-after-write consistency.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

from tiekd.pipeline.errors import StoreError
from tiekd.pipeline.store.s3 import ATTEMPTS, CONNECT_SECONDS, CREDENTIAL_OPTIONS, bucket_and_prefix, endpoint, s3_error

LEASE_SECONDS = 60
"""How long a lease lasts without renewal: how long a writer killed on another host blocks its rerun."""
RENEW_SECONDS = 15
"""How often the heartbeat renews every lease of a process."""
PARALLEL = 16
"""Requests at once when taking, renewing or releasing many leases (a run's store shards)."""
LOST_RACE = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}
"""Error codes of a conditional request that another process's request beat."""


@dataclass
class Holder:
    """Who holds a lease, as its object says, and for how much longer."""

    owner: str
    """"pid 123 on host"."""
    seconds_left: float
    stale: bool
    etag: str

    def until(self) -> str:
        """When the lease ends unless renewed, UTC."""
        end = datetime.now(UTC) + timedelta(seconds=max(self.seconds_left, 0))
        return end.strftime("%H:%M:%S UTC")


_CLIENTS: dict[tuple, object] = {}


def client(*, once: bool = False):
    """This process's botocore S3 client for the endpoint and credentials the environment names now (as
    boto3 reads them, s3.py); a forked child makes its own. ``once``: one attempt, a short connection
    timeout (releasing, which is best effort: a lease not released ends with its length)."""
    key = (os.getpid(), once, endpoint(), *(os.environ.get(name) for name in CREDENTIAL_OPTIONS))
    if key not in _CLIENTS:
        import botocore.config
        import botocore.session

        attempts, connect = (1, 2) if once else (ATTEMPTS, CONNECT_SECONDS)
        config = botocore.config.Config(retries={"max_attempts": attempts, "mode": "standard"},
                                        connect_timeout=connect, max_pool_connections=PARALLEL)  # fmt: skip
        session = botocore.session.get_session()
        _CLIENTS[key] = session.create_client("s3", endpoint_url=endpoint(), config=config)
    return _CLIENTS[key]


def _code(e: Exception) -> str:
    return str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))


def _request(url: str, operation: str, *, once: bool = False, **kwargs) -> dict:
    """One S3 request on the object of ``url``; a failure other than a lost condition is one line."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = bucket_and_prefix(url)
    try:
        return getattr(client(once=once), operation)(Bucket=bucket, Key=key, **kwargs)
    except ClientError as e:
        if _code(e) in LOST_RACE or _code(e) in ("NoSuchKey", "404"):
            raise
        denied = _code(e) in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403")
        raise s3_error(url, PermissionError(str(e)) if denied else e) from None
    except BotoCoreError as e:
        raise s3_error(url, e) from None


def _identity() -> dict:
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    return {"pid": os.getpid(), "host": socket.gethostname(), "pid_namespace": namespace}


def _body(seconds: float, renewal: int) -> bytes:
    me = _identity()
    return json.dumps(me | {"owner": f"pid {me['pid']} on {me['host']}", "seconds": seconds, "renewal": renewal,
                            "written": datetime.now(UTC).isoformat(timespec="seconds")}).encode()  # fmt: skip


def _gone_from_this_host(body: dict) -> bool:
    """Whether the holder ran on this host (same name and pid namespace) and its process has ended."""
    me = _identity()
    if (
        body.get("host") != me["host"]
        or body.get("pid_namespace") != me["pid_namespace"]
        or body.get("pid") == me["pid"]
    ):
        return False
    try:
        os.kill(int(body["pid"]), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return False


def read(url: str) -> Holder | None:
    """The holder of the lease ``url``; None if there is none."""
    from botocore.exceptions import ClientError

    try:
        answer = _request(url, "get_object")
    except ClientError:  # no such key: free
        return None
    try:
        body = json.loads(answer["Body"].read())
        seconds = float(body["seconds"])
    except (ValueError, KeyError, TypeError):
        body, seconds = {}, 0.0  # not a lease's body: stale
    date = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
    now = parsedate_to_datetime(date) if date else datetime.now(UTC)
    left = seconds - (now - answer["LastModified"]).total_seconds()
    owner = str(body.get("owner", "an unknown process"))
    return Holder(owner, left, left <= 0 or _gone_from_this_host(body), answer["ETag"])


class _Held:
    """A lease this process holds: what the heartbeat renews."""

    def __init__(self, url: str, etag: str, seconds: float):
        self.url, self.etag, self.seconds = url, etag, seconds
        self.renewals, self.renewed, self.pid = 0, time.monotonic(), os.getpid()
        self.lost: str | None = None
        """Why this process no longer holds it (taken over after it went unrenewed, or released)."""
        self.lock = threading.Lock()

    def renew(self) -> None:
        with self.lock:
            if self.lost is None and self.pid == os.getpid():  # a forked child renews nothing of its parent's
                self._renew()

    def _renew(self) -> None:
        from botocore.exceptions import ClientError

        self.renewals += 1
        try:
            answer = _request(self.url, "put_object", Body=_body(self.seconds, self.renewals), IfMatch=self.etag)
            self.etag, self.renewed = answer["ETag"], time.monotonic()
        except ClientError:
            holder = read(self.url)
            self.lost = f"taken over by {holder.owner}" if holder else "removed by another process"
        except StoreError as e:
            if time.monotonic() - self.renewed > self.seconds:
                self.lost = f"not renewed for {self.seconds:.0f} s ({e.message})"

    def release(self) -> None:
        from botocore.exceptions import ClientError

        _HELD.pop(id(self), None)
        with self.lock:
            if self.lost is not None or self.pid != os.getpid():
                return
            self.lost = "released"
            with contextlib.suppress(ClientError, StoreError):  # taken over, or the server is gone: it expires
                _request(self.url, "delete_object", once=True, IfMatch=self.etag)


class S3Lease:
    """A lease this process holds, renewed until :meth:`close`, its garbage collection or the process's
    end (as a local lease file is released when closed)."""

    def __init__(self, url: str, etag: str, seconds: float):
        self.held = _hold(_Held(url, etag, seconds))
        self._release = weakref.finalize(self, _Held.release, self.held)

    @property
    def url(self) -> str:
        return self.held.url

    def renew(self) -> None:
        self.held.renew()

    def close(self) -> None:
        self._release()


def take(url: str, *, seconds: float = LEASE_SECONDS) -> S3Lease | Holder:
    """Take the lease ``url`` (free or stale) and keep it renewed; else who holds it."""
    from botocore.exceptions import ClientError

    holder = None
    for _ in range(3):  # a lease released or taken over between our requests: look again
        try:
            condition = {"IfMatch": holder.etag} if holder else {"IfNoneMatch": "*"}
            answer = _request(url, "put_object", Body=_body(seconds, 0), **condition)
            return S3Lease(url, answer["ETag"], seconds)
        except ClientError as e:
            if _code(e) not in LOST_RACE and _code(e) not in ("NoSuchKey", "404"):
                raise
        holder = read(url)
        if holder is not None and not holder.stale:
            return holder
    return holder or read(url) or Holder("another process", seconds, False, "")


def take_all(urls: list[str], *, seconds: float = LEASE_SECONDS) -> list[S3Lease | Holder]:
    """:func:`take` of each of ``urls``, :data:`PARALLEL` at once."""
    if len(urls) <= 1:
        return [take(url, seconds=seconds) for url in urls]
    with ThreadPoolExecutor(PARALLEL) as pool:
        return list(pool.map(lambda url: take(url, seconds=seconds), urls))


def release_all(leases: list[S3Lease]) -> None:
    with ThreadPoolExecutor(PARALLEL) as pool:
        list(pool.map(S3Lease.close, leases))


def new_key() -> str:
    """A name no other lease has (a writer's own object in the group's ``.writers/``)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def remove_stale(url: str, holder: Holder) -> None:
    """Delete the stale lease ``url`` that ``holder`` was read from (unless renewed or taken since)."""
    from botocore.exceptions import ClientError

    with contextlib.suppress(ClientError, StoreError):
        _request(url, "delete_object", once=True, IfMatch=holder.etag)


def listed(prefix_url: str) -> list[str]:
    """URLs of the objects under ``prefix_url`` (a ``.writers/`` folder)."""
    bucket, prefix = bucket_and_prefix(prefix_url)
    pages = client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/")
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return [f"s3://{bucket}/{item['Key']}" for page in pages for item in page.get("Contents", [])]
    except (BotoCoreError, ClientError) as e:
        raise s3_error(prefix_url, e) from None


# ---- the heartbeat: one thread a process renews every lease it holds ----

_HELD: dict[int, _Held] = {}
_HEARTBEAT: dict[int, threading.Thread] = {}


def _hold(lease: _Held) -> _Held:
    _HELD[id(lease)] = lease
    if os.getpid() not in _HEARTBEAT:  # a forked child starts its own
        _HEARTBEAT.clear()
        _HEARTBEAT[os.getpid()] = threading.Thread(target=_beat, name="tiekd-s3-lease", daemon=True)
        _HEARTBEAT[os.getpid()].start()
    return lease


def _beat() -> None:
    with ThreadPoolExecutor(PARALLEL) as pool:
        while True:
            time.sleep(RENEW_SECONDS)
            list(pool.map(_Held.renew, list(_HELD.values())))


def check_held() -> None:
    """Stop, in one line, a writer whose S3 lease was lost: another process may be writing its frames."""
    for lease in list(_HELD.values()):
        if lease.lost is not None:
            raise StoreError(
                f"this run lost its lease {lease.url} ({lease.lost}): another tiekd process may be writing the "
                "same frames, so this one stopped; run the command again when that one has ended"
            )
