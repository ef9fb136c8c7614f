"""A local HTTP file server for tests of stores read over HTTP: Python's ``http.server`` as it is,
and the same server answering byte-range requests as production servers (nginx, Apache) do."""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class PlainHandler(SimpleHTTPRequestHandler):
    """``python -m http.server``: GET and HEAD of whole files and directory listings."""

    def log_message(self, *args) -> None:
        pass


class RangeHandler(PlainHandler):
    """Adds single byte ranges (RFC 9110 section 14.1.2: ``bytes=a-b``, ``bytes=a-``, ``bytes=-n``)."""

    def send_head(self):
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        path = self.translate_path(self.path)
        if match is None or os.path.isdir(path):
            return super().send_head()
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            self.send_error(404, "File not found")
            return None
        first, last = match.groups()
        start = int(first) if first else max(len(data) - int(last), 0)
        stop = min(int(last) + 1, len(data)) if first and last else len(data)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{len(data)}")
        self.send_header("Content-Length", str(stop - start))
        self.end_headers()
        return io.BytesIO(data[start:stop])


@contextlib.contextmanager
def serving(folder, handler=RangeHandler):
    """Serve ``folder`` on 127.0.0.1 from a thread; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class NoListingHandler(RangeHandler):
    """nginx's default: files with byte ranges, but 403 for a folder (no autoindex)."""

    def list_directory(self, path):
        self.send_error(403, "Forbidden")
        return None


class NoSuffixRangeHandler(RangeHandler):
    """``rangehttpserver``: ``bytes=a-b`` but 400 for a suffix range ``bytes=-n``."""

    def send_head(self):
        if re.fullmatch(r"bytes=-\d+", self.headers.get("Range", "")):
            self.send_error(400, "Bad Request")
            return None
        return super().send_head()


class LostShardsHandler(RangeHandler):
    """A server whose connection drops whenever a shard file is asked for (a network that fails mid-run)."""

    def send_head(self):
        if "/depth/c/" in self.path:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return None
        return super().send_head()
