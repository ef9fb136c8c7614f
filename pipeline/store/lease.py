"""Who may write a local store's group, and when: the kernel's ``flock``, released with its process.

Three locks, each held by an open file and so released however the process ends (kill -9
included), never by a timeout:

- the **creation lock** serialises creating or checking groups among the processes writing one
  store (``flock`` on the store's parent folder: no file is added to the store);
- the **group lease**: every writer of a group holds it shared for as long as it writes; deleting
  or replacing the group (``--overwrite``, ``cache rm``, an empty group made differently) takes it
  exclusively, so it never pulls a group from under a running writer;
- the **shard lease**: a writer holds each store shard it fills exclusively, so two runs of one
  command never fill the same frames at once, while disjoint ``--shard``s and dask workers do.

The group and shard leases are files in the group's ``.writers/`` folder (no zarr metadata: zarr
and tiekd's readers ignore it). Remote stores (``s3://``, ``gs://``) have no such locks: there
the ``--shard`` assignment is the user's to keep disjoint.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from tiekd.pipeline.errors import StoreError

WRITERS = ".writers"
"""Folder of a group's lease files."""
GROUP_LEASE = "group.lock"


def is_local(path: str) -> bool:
    return "://" not in path


@contextlib.contextmanager
def creation_lock(path: str) -> Iterator[None]:
    """Serialise creating (or checking) groups among the processes that write to the local store
    ``path``. Without it two ``cache-teacher`` runs of different teachers could both find the group
    not yet created and both report a complete store holding one teacher's maps; under it the
    second finds the first one's group and is refused with the differences."""
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


def hold_group(group: str) -> IO[str] | None:
    """Take the group lease of the local group folder ``group`` shared; the returned file holds it
    until it is closed (or its process ends). None for remote groups."""
    if not is_local(group):
        return None
    file = _lease_file(group, GROUP_LEASE)
    if not _try_lock(file, fcntl.LOCK_SH):
        file.close()
        raise in_use(group, "being replaced or removed")
    return file


def in_use(group: str, what: str) -> StoreError:
    return StoreError(f"{group} is {what} by another tiekd process; wait for it to end and run the command again")


@contextlib.contextmanager
def exclusive_group(group: str) -> Iterator[None]:
    """Hold the group lease exclusively while deleting or replacing ``group``; refused in one line
    while any writer holds it. Local groups only; remote ones pass."""
    if not is_local(group) or not Path(group).is_dir():
        yield
        return
    with _lease_file(group, GROUP_LEASE) as file:
        if not _try_lock(file, fcntl.LOCK_EX):
            raise in_use(group, f"being written ({_holder_of_shards(group)})")
        yield


def _holder_of_shards(group: str) -> str:
    """Who writes ``group``, as the first busy shard lease says; 'a writer' if none says."""
    for path in sorted((Path(group) / WRITERS).glob("shard-*.lock")):
        with open(path, "a+") as file:
            if not _try_lock(file, fcntl.LOCK_EX):
                return _holder(file)
    return "a writer"


@contextlib.contextmanager
def shard_lease(group: str, shards: Iterable[int]) -> Iterator[None]:
    """Hold store shards ``shards`` of the local group ``group`` exclusively while filling them;
    a shard another process fills is refused in one line naming it."""
    files = []
    try:
        for shard in sorted(set(shards)) if is_local(group) else ():
            file = _lease_file(group, f"shard-{shard}.lock")
            files.append(file)
            if not _try_lock(file, fcntl.LOCK_EX):
                raise StoreError(
                    f"store shard {shard} of {group} is being filled by {_holder(file)}; wait for that run to "
                    "end, or give each run its own --shard i/n"
                )
            file.seek(0)
            file.truncate()
            file.write(f"pid {os.getpid()} on {socket.gethostname()}")
            file.flush()
        yield
    finally:
        for file in files:
            file.close()
