"""Who may write a store's group, and when: on a local store the kernel's ``flock``, on S3 leases
(conditional PUTs with a heartbeat, :mod:`tiekd.pipeline.store.s3_lease`).

Three locks, with the same meaning on both:

- the **creation lock** serialises creating or checking groups among the processes writing one
  store: a second process waits for it. Without it two ``cache-teacher`` runs of different teachers
  (or two ``cache pack``) could both find the group not yet created and both create it;
- the **group lease**: every writer of a group holds it shared for as long as it writes; deleting
  or replacing the group (``--overwrite``, ``cache rm``, an empty group made differently) takes it
  exclusively, so it never pulls a group from under a running writer, and a writer never starts in
  a group being replaced;
- the **shard lease**: a writer holds each store shard it fills exclusively, so two runs of one
  command never fill the same frames at once, while disjoint ``--shard``s and dask workers do.

Local stores: the creation lock is ``flock`` on the store's parent folder (no file is added to the
store), the group and shard leases are files in the group's ``.writers/`` folder (no zarr metadata:
zarr and tiekd's readers ignore it). Each is held by an open file, so released however the process
ends (kill -9 included), never by a timeout.

S3 stores (``s3://``): each lease is an object, ``STORE/.writers/create.lock`` (the creation lock),
and in the group's ``.writers/``: ``group.lock`` (the exclusive group lease), one ``writer-HOST-PID-ID``
a writer (the shared group lease: objects of their own, never contended) and ``shard-N.lock`` a store
shard. A writer first stores its own writer object, then looks for a live ``group.lock``; a remover
first takes ``group.lock``, then looks for live writer objects: S3 reads what was written before, so
of a writer and a remover starting at once at least one sees the other and stands back. A lease
held by a process killed on this host is free at once; one killed elsewhere after at most
``s3_lease.LEASE_SECONDS`` without renewal; a writer whose lease was taken over (it stalled that
long) stops at its next write (:func:`check_held`). These locks are as safe as the server's
conditional writes (``s3_lease``: AWS and SeaweedFS honour them). Other remote stores (``gs://``)
have no locks: there the ``--shard`` assignment is the user's to keep disjoint.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from tiekd.pipeline.errors import StoreError
from tiekd.pipeline.store import s3_lease
from tiekd.pipeline.store.s3 import is_s3, open_s3

WRITERS = ".writers"
"""Folder of a group's lease files."""
GROUP_LEASE = "group.lock"
CREATION_LEASE = "create.lock"
WAIT_SECONDS = 0.3
"""How often a process waiting for an S3 creation lock looks again."""


def is_local(path: str) -> bool:
    return "://" not in path


@contextlib.contextmanager
def creation_lock(path: str) -> Iterator[None]:
    """Serialise creating (or checking) groups among the processes that write to the local store
    ``path``. Without it two ``cache-teacher`` runs of different teachers could both find the group
    not yet created and both report a complete store holding one teacher's maps; under it the
    second finds the first one's group and is refused with the differences."""
    if is_s3(path):
        with _s3_creation_lock(path):
            yield
        return
    if not is_local(path):
        yield
        return
    parent = Path(path).absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(parent, os.O_RDONLY)
    try:
        with contextlib.suppress(OSError):  # e.g. NFS without flock on folders: best effort
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def _s3_creation_lock(path: str) -> Iterator[None]:
    """The creation lock of an S3 store, waited for as ``flock`` is (a killed holder's until it is stale)."""
    open_s3(path, read_only=True)  # the server, the credentials and the bucket, each one line
    while isinstance(lease := s3_lease.take(f"{path.rstrip('/')}/{WRITERS}/{CREATION_LEASE}"), s3_lease.Holder):
        time.sleep(WAIT_SECONDS)
    try:
        yield
    finally:
        lease.close()


def _lease_file(group: str, name: str) -> IO[str]:
    folder = Path(group) / WRITERS
    folder.mkdir(parents=True, exist_ok=True)
    return open(folder / name, "a+")


def _holder(file: IO[str]) -> str:
    """Who holds a lease, as its holder wrote it ("pid 123 on host")."""
    file.seek(0)
    return file.read().strip() or "another process"


def _try_lock(file: IO[str], mode: int) -> bool:
    try:
        fcntl.flock(file.fileno(), mode | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    except OSError:  # a file system without flock: best effort, as the creation lock
        return True


def hold_group(group: str) -> IO[str] | s3_lease.S3Lease | None:
    """Take the group lease of ``group`` shared; the returned file (S3: lease) holds it until it is
    closed (or its process ends). None for remote groups other than S3's."""
    if is_s3(group):
        return _hold_s3_group(group)
    if not is_local(group):
        return None
    file = _lease_file(group, GROUP_LEASE)
    if not _try_lock(file, fcntl.LOCK_SH):
        file.close()
        raise in_use(group, "being replaced or removed")
    return file


def _hold_s3_group(group: str) -> s3_lease.S3Lease:
    """The shared group lease on S3: a writer object of this process's own, then no live ``group.lock``."""
    writer = s3_lease.take(f"{group}/{WRITERS}/writer-{s3_lease.new_key()}")
    assert isinstance(writer, s3_lease.S3Lease), "a new key cannot be held"
    remover = s3_lease.read(f"{group}/{WRITERS}/{GROUP_LEASE}")
    if remover is not None and not remover.stale:
        writer.close()
        raise in_use(group, f"being replaced or removed (by {remover.owner})")
    _live_writers(group)  # removes killed writers' objects
    return writer


def _live_writers(group: str) -> list[str]:
    """Who holds a writer object of the S3 group ``group`` (this process's own included); stale ones are deleted."""
    owners = []
    for url in s3_lease.listed(f"{group}/{WRITERS}"):
        writer = s3_lease.read(url) if url.rpartition("/")[2].startswith("writer-") else None
        if writer is not None and writer.stale:
            s3_lease.remove_stale(url, writer)
        elif writer is not None:
            owners.append(writer.owner)
    return owners


def in_use(group: str, what: str) -> StoreError:
    return StoreError(f"{group} is {what} by another tiekd process; wait for it to end and run the command again")


@contextlib.contextmanager
def exclusive_group(group: str) -> Iterator[None]:
    """Hold the group lease exclusively while deleting or replacing ``group``; refused in one line
    while any writer holds it. Local and S3 groups; other remote ones pass."""
    if is_s3(group):
        with _exclusive_s3_group(group):
            yield
        return
    if not is_local(group) or not Path(group).is_dir():
        yield
        return
    with _lease_file(group, GROUP_LEASE) as file:
        if not _try_lock(file, fcntl.LOCK_EX):
            raise in_use(group, f"being written ({_holder_of_shards(group)})")
        yield


@contextlib.contextmanager
def _exclusive_s3_group(group: str) -> Iterator[None]:
    """The exclusive group lease on S3: ``group.lock``, then no live writer object."""
    lease = s3_lease.take(f"{group}/{WRITERS}/{GROUP_LEASE}")
    if isinstance(lease, s3_lease.Holder):
        raise in_use(group, f"being replaced or removed (by {lease.owner}, until {lease.until()} unless renewed)")
    try:
        writers = _live_writers(group)
        if writers:
            raise in_use(group, f"being written ({writers[0]})")
        yield
    finally:
        lease.close()


def _holder_of_shards(group: str) -> str:
    """Who writes ``group``, as the first busy shard lease says; 'a writer' if none says."""
    for path in sorted((Path(group) / WRITERS).glob("shard-*.lock")):
        with open(path, "a+") as file:
            if not _try_lock(file, fcntl.LOCK_EX):
                return _holder(file)
    return "a writer"


@contextlib.contextmanager
def shard_lease(group: str, shards: Iterable[int]) -> Iterator[None]:
    """Hold store shards ``shards`` of the group ``group`` exclusively while filling them; a shard
    another process fills is refused in one line naming it. Local and S3 groups; other remote ones pass."""
    if is_s3(group):
        with _s3_shard_lease(group, shards):
            yield
        return
    files = []
    try:
        for shard in sorted(set(shards)) if is_local(group) else ():
            file = _lease_file(group, f"shard-{shard}.lock")
            files.append(file)
            if not _try_lock(file, fcntl.LOCK_EX):
                raise _refused_shard(group, shard, _holder(file))
            file.seek(0)
            file.truncate()
            file.write(f"pid {os.getpid()} on {socket.gethostname()}")
            file.flush()
        yield
    finally:
        for file in files:
            file.close()


def _refused_shard(group: str, shard: int, holder: str) -> StoreError:
    return StoreError(f"store shard {shard} of {group} is being filled by {holder}; wait for that run to end, or "
                      "give each run its own --shard i/n")  # fmt: skip


@contextlib.contextmanager
def _s3_shard_lease(group: str, shards: Iterable[int]) -> Iterator[None]:
    shards = sorted(set(shards))
    taken = s3_lease.take_all([f"{group}/{WRITERS}/shard-{shard}.lock" for shard in shards])
    held = [lease for lease in taken if isinstance(lease, s3_lease.S3Lease)]
    try:
        for shard, lease in zip(shards, taken):
            if isinstance(lease, s3_lease.Holder):
                raise _refused_shard(
                    group, shard, f"{lease.owner} (its lease runs until {lease.until()} unless renewed)"
                )
        yield
    finally:
        s3_lease.release_all(held)


def check_held() -> None:
    """Stop, in one line, a writer whose S3 lease another process took over (local leases cannot be lost)."""
    s3_lease.check_held()
