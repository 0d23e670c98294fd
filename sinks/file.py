"""FileSink: writes chunk bytes (the records, as read) into rolling files on local disk or any fsspec URL.

A file being written has an in-progress name (``.NAME.inprogress``) that readers and globbing jobs
skip; it gets its final name when it rolls (``roll_size`` at a batch; ``roll_interval`` also while no
batch comes, so what was acknowledged becomes visible on time) or when the sink stops.  It writes
through the stores of :mod:`sinks.storage`, as the SequenceFile sink does, so ``sync: every_batch``
means one thing everywhere: before ``deliver`` returns, the batch
is fsynced on local disk (and the directory, when the file is new), flushed and fsynced by the server
on SFTP (``fsync@openssh.com``, where offered), and on object stores (s3, gs, ...), which take only
whole objects, fsynced in a local staging file that is uploaded when the file rolls.

In-progress files left by a crash get their final names at the next start (staged ones their upload
too): they hold what was acknowledged, and at most the start of a batch that was not, which the
channel delivers again.  A staged file whose upload failed is tried again before the next batch is
written (and in the background), and batches fail until it succeeds: the channel holds the backlog,
not the staging directory.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from logflume.chunk import Chunk
from logflume.errors import ConfigError, DeliveryError, StartupError
from logflume.secrets import redact_url
from logflume.settings import Duration, Enum, Setting, Size, Str
from logflume.sink import Sink
from sinks.naming import INPROGRESS, final_name, inprogress_name
from sinks.storage import STORE_SETTINGS, RemoteFiles, StoreFiles, check_storage_options

#: After a failed upload of a staged file, batches fail at once for this long before it is tried again
#: (rather than waiting out the store's timeout on each).
UPLOAD_RETRY = 5.0
#: A prefix that names visible files and is no glob pattern.
_PREFIX_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class FileSink(Sink):
    settings: ClassVar[dict[str, Setting]] = {
        "url": Setting(Str(), doc="Directory to write into: a local path or any fsspec URL (sftp://, s3://, ...)"),
        "prefix": Setting(Str(), "logflume", "File name prefix; files are PREFIX-YYYYmmddHHMMSS-PID-N.log"),
        "roll_size": Setting(Size(min=1), "128MiB", "Close the file and start a new one past this size"),
        "roll_interval": Setting(Duration(), "5m", "Close the file this long after it was opened, even if small "
                                                   "or idle"),
        "sync": Setting(Enum("every_batch", "none"), "every_batch", "Make each batch durable before it is "
                                                                    "acknowledged (fsync; staged on object stores)"),
        **STORE_SETTINGS,
    }

    def configure(self) -> None:
        cfg = self.config
        if not _PREFIX_OK.match(cfg.prefix):
            raise ConfigError(self.context.config_file, f"sinks.{self.name}.prefix",
                              f"expected letters, digits, '.', '_' or '-', starting with a letter or digit, "
                              f"got {cfg.prefix!r}")
        check_storage_options(cfg.url, cfg.storage_options, self.context.config_file,
                              f"sinks.{self.name}.storage_options")
        self.files = StoreFiles(cfg.url, cfg.storage_options, cfg.timeout, cfg.staging, self._staging_dir)
        self.remote, self.staged = self.files.remote, self.files.staged
        self._file: Any = None
        self._rel = ""
        self._new_name = False
        self._size = 0
        self._opened = 0.0
        self._seq = 0
        self._broken: list[str] = []  # in-progress files to give their final names before writing on
        self._uploads: list[str] = []  # staged finished files waiting for their upload
        self._next_upload = 0.0
        self._lock = threading.Lock()  # the runner's deliveries and the roll thread
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def writes(self) -> list[str]:
        url = self.config.url
        return [f"{url}/*"] if self.remote else [f"file:{self.files.local_root}/*"]

    def describe(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "url": redact_url(self.config.url), "staged": self.staged}

    def start(self) -> None:
        try:
            self.files.connect()
            self._recover()
        except Exception as exc:  # OSError, and paramiko's or other fsspec back ends' own types
            self._abandon()
            raise StartupError(f"sink {self.name}: cannot use {redact_url(self.config.url)}: {exc}") from exc
        self._stop.clear()
        self._thread = threading.Thread(target=self._roll_loop, name=f"file-{self.name}", daemon=True)
        self._thread.start()

    def deliver(self, chunks: Sequence[Chunk]) -> None:
        with self._lock:
            self._deliver(chunks)

    def _deliver(self, chunks: Sequence[Chunk]) -> None:
        cfg = self.config
        if self._uploads and time.monotonic() < self._next_upload:  # refused without a round trip to the store
            raise DeliveryError(f"sink {self.name}: {self._uploads[0]} waits for its upload (the store "
                                f"failed it; tried again in {self._next_upload - time.monotonic():.1f}s)")
        try:
            if not self.files.connected:
                self.files.connect()
            if self._broken:
                self._recover()
            if self._file is not None and (self._size >= cfg.roll_size
                                           or time.monotonic() - self._opened >= cfg.roll_interval):
                self._close()
            if self._uploads:
                self._upload_pending()
            if self._file is None:
                self._open()
            for c in chunks:
                self._file.write(c.data)
                self._size += len(c.data)
            if cfg.sync == "every_batch":
                self._sync()
        except Exception:
            self._abandon()  # the next batch reconnects, and renames what this file holds
            raise
        self.metrics.chunks_in.inc(len(chunks))
        self.metrics.bytes_in.inc(sum(len(c) for c in chunks))

    def flush(self) -> None:
        with self._lock:
            if self._file is not None:
                self._sync()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        with self._lock:
            try:
                self._close()
                if self._uploads:
                    self._upload_pending()
            except Exception as exc:  # noqa: BLE001 - left as it is, finished at the next start
                self.log.warning("sink %s: could not finish its file at stop (finished at the next start): %s",
                                 self.name, exc)
                self._abandon()
            self.files.close()

    def _roll_loop(self) -> None:
        """Roll a file by age, and retry a failed upload, while no batch comes."""
        cfg = self.config
        while not self._stop.wait(max(0.05, min(1.0, cfg.roll_interval / 4))):
            with self._lock:
                now = time.monotonic()
                try:
                    if self._file is not None and now - self._opened >= cfg.roll_interval:
                        self._close()
                    elif self._uploads and now >= self._next_upload and self.files.connected:
                        self._upload_pending()
                except Exception as exc:  # noqa: BLE001 - a background step must not kill the thread
                    self.log.warning("sink %s: background roll or upload failed (retried): %s", self.name, exc)
                    self.metrics.errors.inc()
                    self._abandon()

    # -- internals ------------------------------------------------------------

    def _staging_dir(self) -> str:
        return self.config.staging_dir or str(self.context.state_dir("sink", self.name) / "staging")

    def _own(self, rel: str) -> bool:
        return rel.startswith(self.config.prefix + "-") and rel.endswith(".log")

    def _recover(self) -> None:
        """Give this sink's in-progress files their final names (queue staged ones for upload)."""
        disk = self.files.disk
        assert disk is not None
        for rel in disk.glob(".*" + INPROGRESS):
            if self._own(final_name(rel)) and rel not in self._broken:
                self._broken.append(rel)
        while self._broken:
            rel = self._broken[0]
            if disk.exists(rel):
                final = final_name(rel)
                disk.rename(rel, final)
                self.log.warning("sink %s: finished %s, left in progress by a crash or a failed write",
                                 self.name, disk.path(final))
                if self.staged:
                    self._uploads.append(final)
            self._broken.pop(0)
        if self.staged:
            self._uploads += [rel for rel in disk.glob(self.config.prefix + "-*.log")
                              if self._own(rel) and rel not in self._uploads]
            if self._uploads:
                self._upload_pending()

    def _open(self) -> None:
        disk = self.files.disk
        assert disk is not None
        self._seq += 1
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
        self._rel = f"{self.config.prefix}-{stamp}-{os.getpid()}-{self._seq}.log"
        self._file = disk.create(inprogress_name(self._rel))
        self._new_name = True
        self._size = 0
        self._opened = time.monotonic()

    def _sync(self) -> None:
        assert self.files.disk is not None
        self.files.disk.sync(self._file, inprogress_name(self._rel), self._new_name)
        self._new_name = False

    def _close(self) -> None:
        """Sync, close and rename the open file; upload it if staged."""
        if self._file is None:
            return
        disk = self.files.disk
        assert disk is not None
        self._sync()
        self._file.close()
        self._file = None
        disk.rename(inprogress_name(self._rel), self._rel)
        if self.staged:
            self._uploads.append(self._rel)
            self._upload_pending()

    def _upload_pending(self) -> None:
        """Upload staged files, oldest first; a failure leaves them staged (safe on local disk) and raises."""
        disk, target = self.files.disk, self.files.target
        assert disk is not None and isinstance(target, RemoteFiles)
        while self._uploads:
            rel = self._uploads[0]
            if os.path.exists(disk.path(rel)):
                try:
                    target.upload(disk.path(rel), rel)
                except Exception:
                    self._next_upload = time.monotonic() + UPLOAD_RETRY
                    raise
                disk.remove(rel)  # only now: the store confirmed every byte
            self._uploads.pop(0)

    def _abandon(self) -> None:
        """After a failed write: drop the file (renamed at the next batch) and a remote connection."""
        if self._file is not None:
            try:
                self._file.close()
            except Exception:  # noqa: BLE001 - the connection or the disk is gone
                pass
            self._broken.append(inprogress_name(self._rel))
            self._file = None
        self.files.drop()
