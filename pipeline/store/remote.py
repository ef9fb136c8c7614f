"""Stores read over HTTP(S): a lab's web server holding a tiekd store, opened read-only through fsspec.

Zarr reads a frame as byte ranges of its shard file (the index at the end, then the frame).
A server that ignores the ``Range`` header (Python's ``http.server`` does) answers with the whole
file, which fsspec passes on as if it were the range; every frame would then fail its checksum.
Such a server is refused once, at open, with what to use instead.
"""

from __future__ import annotations

import fsspec

from tiekd.pipeline.errors import StoreError

RANGE_PROBE_BYTES = 8
"""Bytes asked of the root ``zarr.json`` (always longer) to learn whether ranges are honoured."""


def check_byte_ranges(url: str) -> None:
    """Refuse an http(s) store whose server does not answer byte-range requests with the range."""
    if not url.startswith(("http://", "https://")):
        return
    fs, path = fsspec.core.url_to_fs(url)
    try:
        head = fs.cat_file(f"{path.rstrip('/')}/zarr.json", start=0, end=RANGE_PROBE_BYTES)
    except FileNotFoundError:
        return  # opening says that no store is there
    except OSError as e:
        raise StoreError(f"cannot read the store at {url} ({e}); check the URL and the server") from e
    if len(head) != RANGE_PROBE_BYTES:
        raise StoreError(
            f"the server of {url} ignores HTTP Range requests (as `python -m http.server` does); serve the "
            "store with one that honours them (nginx, Apache, a cloud bucket) or copy it to a local folder"
        )
