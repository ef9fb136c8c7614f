"""``cache-teacher --cluster``: the teacher pass on a dask.distributed cluster.

The unit of work is one store shard (:func:`tiekd.stages.caching.worker.cache_shard`): the client
maps it over the shards with frames missing, with ``retries``; dask schedules the tasks, moves a
lost worker's task to another worker, and the completion mask makes a redone shard skip what was
stored. The client only shows one progress display and the summary: it never loads the teacher.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import threading

import dask
from distributed import Client, LocalCluster, as_completed
from distributed.comm import connect

from tiekd.pipeline.errors import ConfigError
from tiekd.stages.caching.config import CacheTeacherConfig
from tiekd.stages.caching.worker import cache_shard, finish_store, prepare_store
from tiekd.stages.runtime import Rate, progress

SHARD_RETRIES = 2
"""Re-runs of a shard whose task raised (a flaky filesystem); a worker that dies (kill -9, lost
node) is handled by the scheduler itself, which moves the task (``allowed-failures``)."""
GLIBC_MALLOC = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
"""The workers of ``local:N`` keep glibc's own malloc settings. dask starts workers with
MALLOC_TRIM_THRESHOLD_=65536, which also fixes glibc's mmap threshold at 128 KiB: every frame-sized
buffer is then mapped and faulted in afresh: 2 such workers listed 960 video frames in 3.75 s, 2 of
these in 2.47 s (bench/bench_listing.py)."""
CONNECT_TIMEOUT_S = 30.0
"""How long to wait for a ``tcp://`` scheduler's answer before saying it cannot be reached."""


def parse_cluster(text: str) -> tuple[str, int | str]:
    """``local:N`` -> ("local", N); ``tcp://HOST:PORT`` (or tls://) -> ("address", text)."""
    match = re.fullmatch(r"local:(\d+)", text.strip())
    if match and int(match[1]) > 0:
        return "local", int(match[1])
    if re.fullmatch(r"(tcp|tls|ucx)://[^\s:/]+:\d+", text.strip()):
        return "address", text.strip()
    raise ConfigError(f"--cluster {text!r} is neither local:N (N worker processes) nor tcp://HOST:PORT")


def _local_cluster(n_workers: int) -> LocalCluster:
    """N single-threaded worker processes; DataLoader workers allowed in them (not daemons).

    The worker processes start with Ctrl-C ignored (a process inherits an ignored signal, and
    Python then leaves it ignored): Ctrl-C in the terminal reaches the whole process group, and
    each worker would print its own traceback. This process, interrupted, stops them itself."""
    with dask.config.set({"distributed.worker.daemon": False, **GLIBC_MALLOC}), _interrupts_ignored():
        return LocalCluster(
            n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=50
        )


@contextlib.contextmanager
def _interrupts_ignored():
    """SIGINT ignored in this process while the block starts processes (which inherit it)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; a LocalCluster started elsewhere keeps them
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def environment_kept():
    """Put this process's environment back afterwards: dask's nanny writes its workers' settings
    (``distributed.nanny.pre-spawn-environ``: OMP_NUM_THREADS=1, MKL_NUM_THREADS=1, ...) into the
    environment of the process that starts a LocalCluster, where torch would later read them."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@contextlib.contextmanager
def cluster_client(text: str):
    """A dask Client for ``--cluster`` (a LocalCluster it starts and stops, or an existing one)."""
    kind, value = parse_cluster(text)
    with environment_kept(), contextlib.ExitStack() as stack:
        try:
            if kind == "local":
                cluster = stack.enter_context(_local_cluster(value))
                client = stack.enter_context(Client(cluster))
            else:
                _probe_scheduler(value)
                client = stack.enter_context(Client(value, timeout=f"{CONNECT_TIMEOUT_S}s"))
        except (OSError, TimeoutError) as e:
            raise ConfigError(f"--cluster {text}: cannot reach the dask scheduler ({e}); is it running?") from e
        yield client


def _probe_scheduler(address: str) -> None:
    """Refuse in one line an address where nothing answers dask's handshake in time: the Client
    would wait there forever (its timeout covers connecting, not the handshake that follows)."""

    async def handshake() -> None:
        comm = await asyncio.wait_for(connect(address, timeout=CONNECT_TIMEOUT_S), CONNECT_TIMEOUT_S + 5)
        await comm.close()

    try:
        asyncio.run(handshake())
    except TimeoutError as e:
        raise ConfigError(
            f"--cluster {address}: nothing there answered as a dask scheduler within {CONNECT_TIMEOUT_S:g} s; "
            "pass the address `dask scheduler` prints"
        ) from e


def _the_records(records: list) -> list:
    return records


def sent_once(client: Client, records: list):
    """``records`` held by the cluster, for tasks to take as an argument: sent once, as the result of a task
    rather than scattered, so a worker killed while holding them costs a recomputation from the scheduler's
    copy, where scattered data would be lost for good."""
    return client.submit(_the_records, records, pure=False)


def gathered_map(client: Client):
    """``map(function, items)`` run as tasks on the cluster's workers (retried as shards are), the results
    gathered in order: what :func:`~tiekd.data.sources.listing.list_sources` lists parts with."""

    def mapped(function, items) -> list:
        return client.gather(client.map(function, list(items), retries=SHARD_RETRIES, pure=False))

    return mapped


def run_shards(cfg: CacheTeacherConfig, client: Client, records: list, notes: dict) -> tuple[str, int, float, bool]:
    """Fill the store with the maps of ``records`` (listed once, here) on the cluster, ``notes``
    recorded with a new group; returns (location, frames written, seconds, complete)."""
    records = sent_once(client, records)
    location, todo = client.submit(prepare_store, cfg, tuple(cfg.shard), records, notes, pure=False).result()
    rate = Rate()
    futures = client.map(cache_shard, sorted(todo), cfg=cfg, records=records, retries=SHARD_RETRIES, pure=False)
    frames = {future.key: todo[shard] for future, shard in zip(futures, sorted(todo))}
    workers = len(client.scheduler_info()["workers"])
    label = f"caching {location} on {workers} worker{'s' if workers != 1 else ''}"
    with progress(sum(todo.values()), label) as bar:
        try:
            for future in as_completed(futures):
                rate.add(future.result())  # re-raises a shard's one-line error here
                bar.update(frames[future.key], f"{rate.per_second:.1f} frames/s")
        except BaseException:
            client.cancel(futures)
            raise
    seconds = rate.seconds
    complete = client.submit(finish_store, cfg, records, pure=False).result()
    return location, rate.count, seconds, complete
