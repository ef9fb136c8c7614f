"""S3 leases (tiekd.pipeline.store.s3_lease, lease.py) on a real S3 server (SeaweedFS on loopback): the
server's conditional writes, one taker of a free or stale lease, renewal, takeover and its detection,
and the group and shard leases built on them. The real-process cases are in tests/stages/test_s3_leases.py."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid

import pytest

from tiekd.pipeline.errors import StoreError
from tiekd.pipeline.store import s3_lease
from tiekd.pipeline.store.lease import check_held, creation_lock, exclusive_group, hold_group, shard_lease


def new_url(name="x.lock") -> str:
    return f"s3://tiekd/{uuid.uuid4().hex[:12]}/{name}"


def at_once(n, function):
    """``function()`` on ``n`` threads released together; their results."""
    barrier, results = threading.Barrier(n), [None] * n

    def run(i):
        barrier.wait()
        results[i] = function()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def put_lease(url, **body):
    """A lease object written as another process would have (its holder's fields in ``body``)."""
    bucket, key = s3_lease.bucket_and_prefix(url)
    s3_lease.client().put_object(Bucket=bucket, Key=key, Body=json.dumps(body).encode())


def test_the_server_honours_conditional_writes(s3):
    """What the leases rest on: If-None-Match: * and If-Match on PUT, If-Match on DELETE."""
    from botocore.exceptions import ClientError

    bucket, key = s3_lease.bucket_and_prefix(new_url())
    client = s3_lease.client()
    etag = client.put_object(Bucket=bucket, Key=key, Body=b"1", IfNoneMatch="*")["ETag"]
    for condition in ({"IfNoneMatch": "*"}, {"IfMatch": '"0123456789abcdef0123456789abcdef"'}):
        with pytest.raises(ClientError, match="PreconditionFailed"):
            client.put_object(Bucket=bucket, Key=key, Body=b"2", **condition)
    with pytest.raises(ClientError, match="PreconditionFailed"):
        client.delete_object(Bucket=bucket, Key=key, IfMatch='"0123456789abcdef0123456789abcdef"')
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == b"1"
    client.put_object(Bucket=bucket, Key=key, Body=b"3", IfMatch=etag)
    assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == b"3"


def test_of_takers_at_once_exactly_one_wins_a_free_or_a_stale_lease(s3):
    for url in (new_url(), new_url()):
        won = [r for r in at_once(8, lambda url=url: s3_lease.take(url)) if isinstance(r, s3_lease.S3Lease)]
        assert len(won) == 1
        won[0].close()
        put_lease(url, owner="pid 1 on elsewhere", host="elsewhere", pid=1, seconds=0)  # expired at once
        won = [r for r in at_once(8, lambda url=url: s3_lease.take(url)) if isinstance(r, s3_lease.S3Lease)]
        assert len(won) == 1
        won[0].close()


def test_a_held_lease_names_its_holder_and_is_free_once_released(s3):
    url = new_url()
    lease = s3_lease.take(url)
    holder = s3_lease.take(url)
    assert isinstance(holder, s3_lease.Holder) and not holder.stale
    assert holder.owner == f"pid {os.getpid()} on {socket.gethostname()}"
    assert 55 < holder.seconds_left <= s3_lease.LEASE_SECONDS
    lease.close()
    assert s3_lease.read(url) is None
    again = s3_lease.take(url)
    assert isinstance(again, s3_lease.S3Lease)
    again.close()


@pytest.fixture
def stalled_heartbeat(monkeypatch):
    """This process's heartbeat renews nothing (a holder stalled past its lease); renewals the test makes
    itself, on this thread, go to the server as ever. Without it a beat (every 15 s, of every lease this
    process holds) could renew the test's 3-second lease in the seconds it must go unrenewed."""
    renew = s3_lease._Held.renew

    def renewed_here_only(held):
        if threading.current_thread() is threading.main_thread():
            renew(held)

    monkeypatch.setattr(s3_lease._Held, "renew", renewed_here_only)


def test_a_renewed_lease_stays_a_stale_one_is_taken_over_and_its_holder_stops(s3, stalled_heartbeat):
    url = new_url()
    first = s3_lease.take(url, seconds=3)  # the server's clock counts whole seconds
    time.sleep(2.0)
    first.renew()
    time.sleep(1.5)  # 3.5 s after taking, 1.5 s after the renewal
    assert isinstance(s3_lease.take(url), s3_lease.Holder)
    check_held()
    time.sleep(2.6)
    second = s3_lease.take(url)
    assert isinstance(second, s3_lease.S3Lease), "a lease not renewed for its length was not taken over"
    first.renew()
    with pytest.raises(StoreError, match=f"this run lost its lease {url} \\(taken over by pid {os.getpid()}"):
        check_held()
    first.close()  # released only if still its own: the taker's stays
    assert isinstance(s3_lease.take(url), s3_lease.Holder)
    second.close()
    check_held()


def test_a_holder_gone_from_this_host_frees_its_lease_at_once(s3):
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    me = {"host": socket.gethostname(), "pid_namespace": os.readlink("/proc/self/ns/pid"), "seconds": 60}
    alive, dead = new_url(), new_url()
    put_lease(alive, owner="parent", pid=os.getppid(), **me)
    put_lease(dead, owner="ended", pid=ended.pid, **me)
    holder = s3_lease.take(alive)
    assert isinstance(holder, s3_lease.Holder) and holder.owner == "parent"
    lease = s3_lease.take(dead)
    assert isinstance(lease, s3_lease.S3Lease)
    lease.close()


def test_group_and_shard_leases_on_s3(s3):
    group = new_url("s.zarr/teacher/train")
    writer = hold_group(group)
    with pytest.raises(StoreError, match=f"{group} is being written \\(pid {os.getpid()} on "), exclusive_group(group):
        pass
    writer.close()
    replacing = f"{group} is being replaced or removed \\(by pid {os.getpid()}"
    with exclusive_group(group), pytest.raises(StoreError, match=replacing):
        hold_group(group)
    filled = f"store shard 1 of {group} is being filled by pid {os.getpid()} on "
    with shard_lease(group, [0, 1]):
        with pytest.raises(StoreError, match=filled), shard_lease(group, [1, 2]):
            pass
        with shard_lease(group, [2, 3]):  # disjoint shards: other --shard runs, dask workers
            pass
    assert s3_lease.listed(f"{group}/.writers") == [], "a released lease stayed behind"


def test_the_creation_lock_waits_for_its_holder(s3):
    store, order = new_url("s.zarr"), []

    def second():
        with creation_lock(store):
            order.append("second")

    with creation_lock(store):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(1.0)
        order.append("first")
    thread.join(timeout=30)
    assert order == ["first", "second"]
