"""Stores read over HTTP(S): a lab's web server holding a tiekd store, opened read-only through fsspec.

Zarr reads a frame as byte ranges of its shard file: the index at its end (a *suffix* range,
``bytes=-N``), then the frame (``bytes=a-b``). A server that ignores the ``Range`` header (Python's
``http.server`` does) answers with the whole file, which fsspec passes on as if it were the range;
one without suffix ranges (``rangehttpserver``) answers 400. Either way every frame would then
fail, as if damaged. So a store is probed once, at open, with both kinds of range through zarr's
own store, and such a server is refused with what to use instead.

What a server must offer: GET with single byte ranges, ``bytes=a-b`` and ``bytes=-n`` (nginx,
Apache, Caddy and every cloud bucket do). Folder listings are needed only where a command is not
told the teacher and split (``cache info`` always lists).
"""

from __future__ import annotations

from zarr.abc.store import RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync
from zarr.storage import FsspecStore

from tiekd.pipeline.errors import StoreError, StoreUnreachable

RANGE_PROBE_BYTES = 8
"""Bytes asked of the root ``zarr.json`` (always longer), from its start and from its end."""
HOW_TO_SERVE = (
    "serve the store with one that honours them (nginx, Apache, a cloud bucket) or copy it to a local folder"
)


async def _probe(store: FsspecStore) -> tuple[bytes | None, bytes | None, bytes | None]:
    """(whole root zarr.json, its first bytes, its last bytes) as the server answers; None = absent."""
    prototype = default_buffer_prototype()
    answers = []
    for request in (None, RangeByteRequest(0, RANGE_PROBE_BYTES), SuffixByteRequest(RANGE_PROBE_BYTES)):
        buffer = await store.get("zarr.json", prototype, byte_range=request)
        answers.append(None if buffer is None else buffer.to_bytes())
    return tuple(answers)


def check_byte_ranges(url: str) -> None:
    """Refuse an http(s) store whose server does not answer both kinds of byte range zarr asks for."""
    if not url.startswith(("http://", "https://")):
        return
    try:
        whole, head, tail = sync(_probe(FsspecStore.from_url(url, read_only=True)))
    except Exception as e:  # aiohttp's and fsspec's errors: a 400 to a suffix range, a refused connection
        status = getattr(e, "status", None)
        if status is not None and status < 500:
            raise StoreError(f"the server of {url} refuses the byte ranges zarr reads with (HTTP {status}); {HOW_TO_SERVE}") from e
        raise StoreError(f"cannot read the store at {url} ({type(e).__name__}: {e}); check the URL and the server") from e
    if whole is None:
        return  # opening says that no store is there
    if head != whole[:RANGE_PROBE_BYTES] or tail != whole[-RANGE_PROBE_BYTES:]:
        raise StoreError(
            f"the server of {url} ignores HTTP Range requests (as `python -m http.server` does); {HOW_TO_SERVE}"
        )


def lost_connection(location: str, e: BaseException) -> StoreUnreachable | None:
    """The one line for a read that failed because the server or the network went away (not
    because the store is damaged), or None when ``e`` is something else."""
    # Lazy: aiohttp comes with fsspec's HTTP support, needed only where a remote store is read.
    import aiohttp

    cause = e
    while cause is not None and not isinstance(cause, (aiohttp.ClientConnectionError, ConnectionError, TimeoutError)):
        cause = cause.__cause__ or cause.__context__
    if cause is None:
        return None
    return StoreUnreachable(
        f"reading {location} failed: the connection to its server was lost ({type(cause).__name__}: {cause}); "
        "the store is not known to be damaged: check the server and the network, then run the command again"
    )
