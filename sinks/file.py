"""FileSink: writes chunk bytes (the records, as read) into rolling files on any fsspec URL.

A file being written has an in-progress name (``.NAME.inprogress``) that
readers and globbing jobs skip; it is renamed to its final name when it rolls
(by ``roll_size`` or ``roll_interval``) or when the sink stops.  With
``sync: every_batch`` a batch is flushed (and fsynced on local disks) before
``deliver`` returns, so an acknowledged batch survives a crash; the final name
is given only to complete files.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from logflume.chunk import Chunk
from logflume.settings import AnyValue, Duration, Enum, MapOf, Setting, Size, Str
from logflume.sink import Sink
from sinks.naming import INPROGRESS, final_name, inprogress_name
from sinks.storage import check_storage_options, open_filesystem


class FileSink(Sink):
    settings: ClassVar[dict[str, Setting]] = {
        "url": Setting(Str(), doc="Directory to write into: a local path or any fsspec URL (sftp://, s3://, ...)"),
        "prefix": Setting(Str(), "logflume", "File name prefix; files are PREFIX-YYYYmmddHHMMSS-N.log"),
        "roll_size": Setting(Size(min=1), "128MiB", "Close the file and start a new one past this size"),
        "roll_interval": Setting(Duration(), "5m", "Close the file after this long even if small"),
        "sync": Setting(Enum("every_batch", "none"), "every_batch", "Flush+fsync before acknowledging each batch"),
        "storage_options": Setting(MapOf(AnyValue()), {}, "Passed to the fsspec filesystem (key_filename, ...); "
                                   "SFTP: known_hosts, host_key_fingerprint (see docs/store.md)"),
    }

    def configure(self) -> None:
        check_storage_options(self.config.url, self.config.storage_options, self.context.config_file,
                              f"sinks.{self.name}.storage_options")
        self._fs: Any = None
        self._root = ""
        self._file: Any = None
        self._path = ""
        self._final = ""
        self._size = 0
        self._opened = 0.0
        self._seq = 0

    def writes(self) -> list[str]:
        url = self.config.url
        return [f"file:{os.path.abspath(url)}/*" if "://" not in url else f"{url}/*"]

    def start(self) -> None:
        self._fs, self._root = open_filesystem(self.config.url, dict(self.config.storage_options))
        self._fs.makedirs(self._root, exist_ok=True)
        self._recover()

    def _recover(self) -> None:
        """Give in-progress files left by a crash their final names: what they hold was acknowledged."""
        for path in self._fs.ls(self._root, detail=False):
            base = path.rsplit("/", 1)[-1]
            if base.startswith(".") and base.endswith(INPROGRESS):
                self._fs.mv(path, f"{self._root}/{final_name(base)}")

    def _open(self) -> None:
        self._seq += 1
        stamp = time.strftime("%Y%m%d%H%M%S", time.gmtime())
        name = f"{self.config.prefix}-{stamp}-{os.getpid()}-{self._seq}.log"
        self._final = f"{self._root}/{name}"
        self._path = f"{self._root}/{inprogress_name(name)}"
        self._file = self._fs.open(self._path, "wb")
        self._size = 0
        self._opened = time.monotonic()

    def _close(self) -> None:
        if self._file is None:
            return
        self._file.close()
        self._fs.mv(self._path, self._final)
        self._file = None

    def deliver(self, chunks: Sequence[Chunk]) -> None:
        if self._file is not None and (
            self._size >= self.config.roll_size or time.monotonic() - self._opened >= self.config.roll_interval
        ):
            self._close()
        if self._file is None:
            self._open()
        for c in chunks:
            self._file.write(c.data)
            self._size += len(c.data)
        if self.config.sync == "every_batch":
            self._file.flush()
            fileno = getattr(self._file, "fileno", None)
            if fileno is not None:
                try:
                    os.fsync(fileno())
                except (OSError, ValueError, AttributeError, NotImplementedError):
                    pass
        self.metrics.chunks_in.inc(len(chunks))
        self.metrics.bytes_in.inc(sum(len(c) for c in chunks))

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def stop(self) -> None:
        self._close()
