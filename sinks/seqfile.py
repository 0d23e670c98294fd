"""SeqFileSink: the collector's sink files, Hadoop SequenceFiles of chunks under a store root.

Layout: ``<root>/<yyyy-mm-dd>/<collector>-<yyyymmddHHMMSS>-<n>.seq`` (UTC).  A file
being written is named ``.<final name>.inprogress`` (Hadoop and Spark skip names
that start with ``.``) and renamed once closed; files roll by ``roll_size`` and
``roll_interval``.  ``deliver`` returns only once the batch is durable per
``sync`` (``every_batch``: flushed and fsynced locally, flushed to the server
on remote stores).  Stores that cannot append or flush (object stores) get
files staged on local disk and uploaded whole when they roll; the local copy
is deleted only once the upload is confirmed.

After a crash, or a failed write, in-progress files of this collector are
recovered: everything up to the last whole record is kept and the file gets
its final name.  What was acknowledged was flushed, so it survives; a batch
that failed half-way may leave some of its records behind, which the sender
then sends again (a bounded duplicate, removed by archive).
"""

from __future__ import annotations

import datetime as dt
import glob
import os
import re
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, ClassVar

from logflume import __version__
from logflume.chunk import Chunk
from logflume.errors import ConfigError, DeliveryError, StartupError
from logflume.secrets import redact_url
from logflume.sequencefile import SequenceFileError, SequenceFileReader, SequenceFileWriter
from logflume.settings import AnyValue, Duration, Enum, MapOf, Optional, Setting, Size, Str
from logflume.sink import Sink
from logflume.statefile import STATE_FILE_MODE, make_state_dir
from sinks.storage import SFTP_PROTOCOLS, check_storage_options, open_filesystem

#: Header metadata of every sink file: who wrote it and which layout its records follow.
FORMAT_VERSION = "1"
WRITER_KEY = "logflume.writer"
FORMAT_KEY = "logflume.format"
COLLECTOR_KEY = "logflume.collector"

#: Remote protocols whose open files take partial flushes (the hflush equivalent): written in place.
#: Every other remote store (s3, gs, abfs, webhdfs, memory, ...) gets files staged locally.
STREAMING_PROTOCOLS = frozenset({"sftp", "ssh", "hdfs", "arrow_hdfs"})
#: Protocols where one PUT makes a whole object appear at once (no hidden name and rename needed).
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl", "oss", "memory"})

_INPROGRESS = ".inprogress"
_FINAL = re.compile(r"^(?P<collector>.+)-(?P<stamp>\d{14})-(?P<n>\d+)\.seq$")
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: One directory of a ``path`` template: literal letters, digits, ``.``, ``_``, ``-``, ``=`` and placeholders.
_PATH_PART = re.compile(r"^(?:[A-Za-z0-9=_-]|\.(?!\.)|\{(?:date|hour)\})+$")
_PATH_FIELD = re.compile(r"\{(date|hour)\}")
_COPY_PIECE = 8 << 20
#: Bytes per SFTP write request (paramiko's MAX_REQUEST_SIZE; servers accept at least this).
_SFTP_REQUEST = 32768


def inprogress_name(final_rel: str) -> str:
    """``d/x.seq`` -> ``d/.x.seq.inprogress``: the name a file has while it is written."""
    head, _, base = final_rel.rpartition("/")
    return f"{head}/.{base}{_INPROGRESS}" if head else f".{base}{_INPROGRESS}"


def final_name(inprogress_rel: str) -> str:
    """Inverse of :func:`inprogress_name`."""
    head, _, base = inprogress_rel.rpartition("/")
    base = base[1 : -len(_INPROGRESS)]
    return f"{head}/{base}" if head else base


def safe_collector_name(name: str) -> str:
    """A host or agent name made fit for a file name that Hadoop does not skip."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip("._-")
    return cleaned or "collector"


def sink_file_order(name: str) -> tuple[str, int, str]:
    """Sort key giving sink files of one collector in the order they were opened."""
    base = name.rsplit("/", 1)[-1]
    m = _FINAL.match(base)
    return (m.group("stamp"), int(m.group("n")), base) if m else ("", 0, base)


def good_prefix(f: Any) -> tuple[int, int]:
    """(bytes up to the end of the last whole record, whole records) of a possibly torn SequenceFile."""
    try:
        reader = SequenceFileReader(f)
    except SequenceFileError:
        return 0, 0  # torn inside the header: nothing was acknowledged from it
    good, count = reader.last_record_end, 0
    records = reader.iter_raw()
    while True:
        try:
            next(records)
        except StopIteration:
            return reader.last_record_end, count
        except SequenceFileError:
            return good, count
        count += 1
        good = reader.last_record_end


class _Files:
    """Where files go: a local directory (fsync, rename) or an fsspec filesystem (flush, mv).

    ``private`` files and the directories made for them are owner-only (0600/0700);
    others get the umask's mode.
    """

    local = True

    def __init__(self, root: str, private: bool = False) -> None:
        self.root = root
        self.private = private

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def makedirs(self, rel: str) -> None:
        path = self.path(rel) if rel else self.root
        if self.private:
            make_state_dir(path)
        else:
            os.makedirs(path, exist_ok=True)

    def create(self, rel: str) -> Any:
        mode = STATE_FILE_MODE if self.private else 0o666
        fd = os.open(self.path(rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        return os.fdopen(fd, "wb")  # buffered: big writes go straight from the caller's buffer

    def sync(self, f: Any, rel: str, new_name: bool) -> None:
        f.flush()
        os.fsync(f.fileno())
        if new_name:
            self.sync_dir(rel)

    def sync_dir(self, rel: str) -> None:
        fd = os.open(os.path.dirname(self.path(rel)), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def exists(self, rel: str) -> bool:
        return os.path.lexists(self.path(rel))

    def rename(self, src: str, dst: str) -> None:
        os.rename(self.path(src), self.path(dst))
        self.sync_dir(dst)

    def remove(self, rel: str) -> None:
        os.remove(self.path(rel))
        self.sync_dir(rel)

    def size(self, rel: str) -> int:
        return os.path.getsize(self.path(rel))

    def open_read(self, rel: str) -> Any:
        return open(self.path(rel), "rb")

    def truncate(self, rel: str, size: int) -> None:
        os.truncate(self.path(rel), size)
        fd = os.open(self.path(rel), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def glob(self, pattern: str) -> list[str]:
        n = len(self.root) + 1
        return sorted(p[n:] for p in glob.glob(f"{glob.escape(self.root)}/{pattern}", include_hidden=True))

    def close(self) -> None:
        pass


class _RemoteFiles(_Files):
    """An fsspec filesystem; ``flush`` is the hflush-equivalent (the server has the bytes)."""

    local = False

    def __init__(self, fs: Any, root: str, timeout: float) -> None:
        super().__init__(root.rstrip("/") or "/")
        self.fs = fs
        self.timeout = timeout
        self.object_store = bool(set(_protocols(fs)) & OBJECT_STORES)
        self._made: set[str] = set()
        #: Whether the SFTP server fsyncs on request (None: not asked yet).
        self.server_fsync: bool | None = None
        ftp = getattr(fs, "ftp", None)
        if ftp is not None:  # SFTP: bound every round trip, so a vanished server fails the write
            ftp.get_channel().settimeout(timeout)

    def path(self, rel: str) -> str:
        return f"{self.root.rstrip('/')}/{rel}" if rel else self.root

    def makedirs(self, rel: str) -> None:
        if rel not in self._made:  # a round trip per path level on SFTP: once per directory is enough
            self.fs.makedirs(self.path(rel), exist_ok=True)
            self._made.add(rel)

    def create(self, rel: str) -> Any:
        ftp = getattr(self.fs, "ftp", None)
        if ftp is not None:
            return _SftpWriter(ftp.open(self.path(rel), "wb"))
        return self.fs.open(self.path(rel), "wb")

    def sync(self, f: Any, rel: str, new_name: bool) -> None:
        f.flush()
        if self.server_fsync is not False and isinstance(f, _SftpWriter):
            self._sftp_fsync(f)

    def _sftp_fsync(self, f: Any) -> None:
        """Ask an OpenSSH server to fsync the file (extension ``fsync@openssh.com``), where it can."""
        from paramiko.sftp import CMD_EXTENDED

        try:
            f.sftp._request(CMD_EXTENDED, "fsync@openssh.com", f.handle)
        except OSError as exc:
            transport = f.sftp.sock.get_transport()
            if self.server_fsync is None and exc.errno is None and transport is not None and transport.is_active():
                self.server_fsync = False  # the server does not offer it: flushed is the best we get
                return
            raise
        self.server_fsync = True

    def sync_dir(self, rel: str) -> None:
        pass

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel))

    def rename(self, src: str, dst: str) -> None:
        self.fs.mv(self.path(src), self.path(dst))

    def remove(self, rel: str) -> None:
        self.fs.rm(self.path(rel))

    def size(self, rel: str) -> int:
        return int(self.fs.info(self.path(rel))["size"])

    def open_read(self, rel: str) -> Any:
        return self.fs.open(self.path(rel), "rb")

    def truncate(self, rel: str, size: int) -> None:
        ftp = getattr(self.fs, "ftp", None)
        if ftp is not None:  # SFTP can truncate in place
            ftp.truncate(self.path(rel), size)
            return
        tmp = rel + ".truncating"
        with self.fs.open(self.path(rel), "rb") as src, self.fs.open(self.path(tmp), "wb") as dst:
            left = size
            while left:
                piece = src.read(min(left, _COPY_PIECE))
                if not piece:
                    raise OSError(f"{self.path(rel)} shrank while being recovered")
                dst.write(piece)
                left -= len(piece)
        self.fs.rm(self.path(rel))
        self.fs.mv(self.path(tmp), self.path(rel))

    def upload(self, local_path: str, rel: str) -> None:
        """Copy a whole local file to ``rel``; it appears there complete or not at all."""
        self.makedirs(rel.rpartition("/")[0])
        if self.object_store:  # a PUT is atomic
            self.fs.put_file(local_path, self.path(rel))
        else:
            tmp = inprogress_name(rel)
            self.fs.put_file(local_path, self.path(tmp))
            self.fs.mv(self.path(tmp), self.path(rel))
        size = os.path.getsize(local_path)
        got = self.size(rel)
        if got != size:
            raise OSError(f"upload of {local_path} to {self.path(rel)} left {got} of {size} bytes")

    def glob(self, pattern: str) -> list[str]:
        base = self.root.rstrip("/")
        n = len(base) + 1
        found = self.fs.glob(f"{base}/{pattern}")
        return sorted(p[n:] for p in found if p.startswith(base + "/"))

    def close(self) -> None:
        client = getattr(self.fs, "client", None)
        if client is not None:  # a dead SFTP session: drop it, the next attempt reconnects
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail any way
                pass


class _SftpWriter:
    """Writes to an SFTP file with requests in flight, and ``flush`` waits until the server acked each one.

    paramiko's own file either waits a round trip per 32 KiB request or, pipelined,
    drops the server's error replies; and its buffered ``write`` re-copies the rest
    of a big buffer for every request.  Here a big value goes out as zero-copy
    slices of the caller's buffer, ``window`` requests at a time.
    """

    def __init__(self, f: Any, window: int = 64) -> None:
        self.file = f
        self.sftp = f.sftp
        self.handle = f.handle
        self.window = window
        self.pos = 0
        self._pending: deque[int] = deque()

    def write(self, data: Any) -> int:
        from paramiko.sftp import CMD_WRITE, int64

        view = memoryview(data)
        if view.ndim != 1 or view.format != "B":
            view = view.cast("B")
        step = _SFTP_REQUEST
        for off in range(0, len(view), step):
            piece = bytes(view[off : off + step])  # the one copy: into the SSH packet
            num = self.sftp._async_request(type(None), CMD_WRITE, self.handle, int64(self.pos), piece)
            self._pending.append(num)
            self.pos += len(piece)
            if len(self._pending) >= self.window:
                self._wait_one()
        return len(view)

    def _wait_one(self) -> None:
        from paramiko.sftp import CMD_STATUS

        t, _msg = self.sftp._read_response(self._pending.popleft())  # raises on an error status
        if t != CMD_STATUS:
            raise OSError("SFTP server answered a write with something other than a status")

    def flush(self) -> None:
        while self._pending:
            self._wait_one()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.file.close()


def _protocols(fs: Any) -> tuple[str, ...]:
    proto = fs.protocol
    return (proto,) if isinstance(proto, str) else tuple(proto)


class SeqFileSink(Sink):
    """Writes chunks into rolling SequenceFiles (Text metadata JSON -> BytesWritable bytes)."""

    settings: ClassVar[dict[str, Setting]] = {
        "channel": Setting(Str(), "", "Channel this sink takes from (not needed when it is a collector's store)"),
        "url": Setting(Str(), doc="Store root: a local directory or an fsspec URL (sftp://host/dir, s3://bucket/x)"),
        "path": Setting(Str(), "{date}", "Directory of new files under url, a template: {date} = UTC yyyy-mm-dd, "
                                         "{hour} = UTC HH when the file is opened (e.g. audit/{date})"),
        "roll_size": Setting(Size(min=1), "1GiB", "Close the file and start a new one once it reaches this size"),
        "roll_interval": Setting(Duration(), "5m", "Close a file this long after it was opened, even if small"),
        "sync": Setting(Enum("every_batch", "interval", "none"), "every_batch",
                        "every_batch: flush+fsync before each ack; interval: every sync_period; none: at roll"),
        "sync_period": Setting(Duration(), "1s", "With sync: interval, how often to flush and fsync"),
        "compression": Setting(Enum("NONE", "RECORD", "BLOCK"), "NONE", "SequenceFile compression"),
        "codec": Setting(Optional(Enum("deflate", "gzip", "lz4", "snappy")), None,
                         "Codec for RECORD/BLOCK (default deflate): DefaultCodec, GzipCodec, Lz4Codec, SnappyCodec"),
        "block_size": Setting(Size(min=1), 1_000_000, "BLOCK: end a block once its keys+values reach this size"),
        "collector_name": Setting(Optional(Str()), None, "Name in file names and header (default: the agent name)"),
        "staging": Setting(Enum("auto", "always", "never"), "auto",
                           "Stage files locally, upload on roll: auto = all remote stores but sftp and hdfs"),
        "staging_dir": Setting(Optional(Str()), None, "Local directory for staged files (default: the state dir)"),
        "storage_options": Setting(MapOf(AnyValue()), {}, "Passed to the fsspec filesystem (key_filename, ...); "
                                   "SFTP: known_hosts, host_key_fingerprint (see docs/store.md)"),
        "timeout": Setting(Duration(), "30s", "Network timeout of remote stores (connect and each round trip)"),
    }

    def configure(self) -> None:
        cfg = self.config
        file = self.context.config_file
        if cfg.compression == "NONE" and cfg.codec is not None:
            raise ConfigError(file, f"{self.name}.codec", "a codec needs compression RECORD or BLOCK")
        self.codec = None if cfg.compression == "NONE" else (cfg.codec or "deflate")
        if cfg.collector_name is not None:
            if not _NAME_OK.match(cfg.collector_name):
                raise ConfigError(file, f"{self.name}.collector_name",
                                  "expected letters, digits, '.', '_' or '-', not starting with '.', '_' or '-', "
                                  f"got {cfg.collector_name!r}")
            self.collector = cfg.collector_name
        else:
            self.collector = safe_collector_name(self.context.agent_name)
        parts = cfg.path.split("/")
        if not all(_PATH_PART.match(part) and not part.startswith(".") for part in parts):
            raise ConfigError(file, f"{self.name}.path", "expected directories of letters, digits, '.', '_', '-', '=' "
                                                         "and {date} / {hour}, separated by '/' (none starting with "
                                                         f"'.'), got {cfg.path!r}")
        self._dirs_glob = _PATH_FIELD.sub("*", cfg.path)
        url = cfg.url
        if not url:
            raise ConfigError(file, f"{self.name}.url", "expected a directory or fsspec URL, got ''")
        check_storage_options(url, cfg.storage_options, file, f"{self.name}.storage_options")
        self.remote = "://" in url and not url.startswith("file://")
        self.local_root = os.path.abspath(url[len("file://"):] if url.startswith("file://") else url)
        if self.remote:
            self.protocol = url.split("://", 1)[0]
            staged = cfg.staging == "always" or (cfg.staging == "auto" and self.protocol not in STREAMING_PROTOCOLS)
        else:
            self.protocol = "file"
            staged = False
        self.staged = staged
        self.metadata = {WRITER_KEY: f"logflume {__version__}", FORMAT_KEY: FORMAT_VERSION,
                         COLLECTOR_KEY: self.collector}
        self._lock = threading.RLock()
        self._target: _Files | None = None  # where finished files end up
        self._disk: _Files | None = None  # where files are written (the target, or the staging dir)
        self._file: Any = None
        self._writer: SequenceFileWriter | None = None
        self._rel = ""  # final relative name of the open file
        self._opened = 0.0
        self._new_name = False
        self._dirty = False
        self._last_sync = 0.0
        self._broken: list[str] = []  # in-progress files (on _disk) to recover before writing on
        self._uploads: list[str] = []  # staged finished files waiting for their upload
        self._n = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False
        self.bytes_written = 0  # file bytes written since start (headers and framing included)
        self._m_closed = self.metrics.counter("seqfile_files_closed", "Sink files closed and given their final name")
        self._m_recovered = self.metrics.counter("seqfile_files_recovered", "In-progress files recovered after a crash")
        self._m_uploaded = self.metrics.counter("seqfile_files_uploaded", "Staged files uploaded to the store")

    # -- plugin surface -----------------------------------------------------

    def writes(self) -> list[str]:
        return [self.config.url] if self.remote else ["file:" + self.local_root + "/**"]

    def describe(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "url": redact_url(self.config.url), "staged": self.staged,
                "collector": self.collector, "compression": self.config.compression, "codec": self.codec}

    def start(self) -> None:
        try:
            with self._lock:
                self._stop.clear()
                self._connect()
                self._scan_leftovers()
                self._repair()
                self._started = True
        except Exception as exc:  # OSError, and paramiko's or other fsspec back ends' own types
            self._abandon()
            raise StartupError(f"sink {self.name}: cannot use store {redact_url(self.config.url)}: {exc}") from exc
        self._thread = threading.Thread(target=self._tick_loop, name=f"seqfile-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        with self._lock:
            if not self._started:
                return
            self._started = False
            try:
                self._close_file()
                self._repair()
            except Exception as exc:  # noqa: BLE001 - left in progress, recovered at the next start
                self.log.warning("sink %s: could not finish its files at stop (recovered at next start): %s",
                                 self.name, exc)
                self._abandon()
            for files in {id(self._target): self._target, id(self._disk): self._disk}.values():
                if files is not None:
                    files.close()
            self._target = self._disk = None  # a later start connects afresh

    def deliver(self, chunks: Sequence[Chunk]) -> None:
        nbytes = sum(len(c.data) for c in chunks)
        self.metrics.chunks_in.inc(len(chunks))
        self.metrics.bytes_in.inc(nbytes)
        with self._lock:
            if not self._started:
                raise DeliveryError(f"sink {self.name} is not started")
            try:
                self._repair()
                roll_size = self.config.roll_size
                for chunk in chunks:
                    if self._writer is None:
                        self._open_file()
                    writer = self._writer
                    assert writer is not None
                    before = writer.position
                    writer.append_chunk(chunk)
                    self.bytes_written += writer.position - before
                    self._dirty = True
                    if writer.position >= roll_size:
                        self._close_file()
                if self._writer is not None:
                    policy = self.config.sync
                    if policy == "every_batch" or (
                        policy == "interval" and time.monotonic() - self._last_sync >= self.config.sync_period
                    ):
                        self._sync()
            except DeliveryError:
                self.metrics.errors.inc()
                raise
            except Exception as exc:
                self.metrics.errors.inc()
                self._abandon()
                raise DeliveryError(f"sink {self.name}: writing to {redact_url(self.config.url)} failed: "
                                    f"{exc!r}") from exc
        self.metrics.chunks_out.inc(len(chunks))
        self.metrics.bytes_out.inc(nbytes)

    def flush(self) -> None:
        with self._lock:
            if self._writer is not None:
                self._sync()

    def roll(self) -> bool:
        """Close the open file now (if any) so it gets its final name; True if one was closed."""
        with self._lock:
            if self._writer is None:
                return False
            try:
                self._close_file()
            except Exception as exc:
                self._abandon()
                raise DeliveryError(f"sink {self.name}: closing a file on {redact_url(self.config.url)} failed: "
                                    f"{exc!r}") from exc
            return True

    @property
    def open_file_bytes(self) -> int:
        """Bytes in the file being written (0 if none is open)."""
        writer = self._writer
        return writer.position if writer is not None else 0

    # -- naming (a subclass may lay files out differently) --------------------

    #: Whether local files are owner-only (buffers of private logs) rather than the umask's mode (the store's
    #: product, which jobs may read as another user: share it with ``UMask=``, see docs/store.md).
    private_files: ClassVar[bool] = False
    @property
    def inprogress_glob(self) -> str:
        """Glob, relative to the root, that finds in-progress files of any collector."""
        return f"{self._dirs_glob}/.*.seq{_INPROGRESS}"

    @property
    def final_glob(self) -> str:
        """Glob, relative to the root, that finds finished files of any collector."""
        return f"{self._dirs_glob}/*.seq"

    def owns(self, final_rel: str) -> bool:
        """Whether a finished file's name is one this sink writes (its collector, its layout)."""
        m = _FINAL.match(final_rel.rsplit("/", 1)[-1])
        return bool(m and m.group("collector") == self.collector)

    def next_name(self) -> str:
        """Relative final name of a new file: ``<path>/<collector>-<yyyymmddHHMMSS>-<n>.seq`` (UTC)."""
        now = dt.datetime.now(dt.UTC)
        folder = self.config.path.replace("{date}", f"{now:%Y-%m-%d}").replace("{hour}", f"{now:%H}")
        name = f"{folder}/{self.collector}-{now:%Y%m%d%H%M%S}-{self._n}.seq"
        self._n += 1
        return name

    # -- internals ------------------------------------------------------------

    def _connect(self) -> None:
        cfg = self.config
        if not self.remote:
            self._target = _Files(self.local_root, private=self.private_files)
        elif self._target is None:
            options = dict(cfg.storage_options)
            if self.protocol in SFTP_PROTOCOLS:
                options.setdefault("timeout", cfg.timeout)
                options.setdefault("banner_timeout", cfg.timeout)
                options.setdefault("auth_timeout", cfg.timeout)
            fs, root = open_filesystem(cfg.url, options)
            self._target = _RemoteFiles(fs, root, cfg.timeout)
        if self.staged:
            staging = self.config.staging_dir or str(self.context.state_dir("sink", self.name) / "staging")
            self._disk = _Files(os.path.abspath(staging), private=True)
        else:
            self._disk = self._target
        self._disk.makedirs("")
        if self._target is not self._disk:
            self._target.makedirs("")

    def _scan_leftovers(self) -> None:
        """Queue this collector's in-progress files for recovery, and staged files for upload."""
        disk = self._disk
        assert disk is not None
        for rel in disk.glob(self.inprogress_glob):
            if self.owns(final_name(rel)) and rel not in self._broken:
                self._broken.append(rel)
        if self.staged:
            for rel in disk.glob(self.final_glob):
                if self.owns(rel) and rel not in self._uploads:
                    self._uploads.append(rel)

    def _repair(self) -> None:
        """Recover broken in-progress files and finish pending uploads; raise if the store is still away."""
        if self._target is None or self._disk is None:
            self._connect()
        while self._broken:
            self._recover(self._broken[0])
            self._broken.pop(0)
        while self._uploads:
            self._upload(self._uploads[0])
            self._uploads.pop(0)

    def _recover(self, rel: str) -> None:
        disk = self._disk
        assert disk is not None
        if not disk.exists(rel):
            return
        size = disk.size(rel)
        with disk.open_read(rel) as f:
            good, records = good_prefix(f)
        if records == 0:
            disk.remove(rel)
            self.log.info("sink %s: removed in-progress file %s with no whole record", self.name, disk.path(rel))
            return
        if good < size:
            disk.truncate(rel, good)
        final = final_name(rel)
        if disk.exists(final):  # never overwrite a finished file
            final = self._free_name()
        disk.rename(rel, final)
        self._m_recovered.inc()
        self.log.warning("sink %s: recovered %s: kept %d whole records (%d of %d bytes)",
                         self.name, disk.path(final), records, good, size)
        if self.staged:
            self._uploads.append(final)

    def _upload(self, rel: str) -> None:
        disk, target = self._disk, self._target
        assert isinstance(target, _RemoteFiles) and disk is not None
        local = disk.path(rel)
        if not os.path.exists(local):
            return
        target.upload(local, rel)
        disk.remove(rel)  # only now: the store confirmed every byte
        self._m_uploaded.inc()

    def _free_name(self) -> str:
        disk = self._disk
        assert disk is not None
        while True:
            rel = self.next_name()
            if not disk.exists(rel) and not disk.exists(inprogress_name(rel)) and (
                self._target is disk or self._target is None or not self._target.exists(rel)
            ):
                return rel

    def _open_file(self) -> None:
        disk = self._disk
        assert disk is not None
        rel = self._free_name()
        disk.makedirs(rel.rpartition("/")[0])
        path = inprogress_name(rel)
        f = disk.create(path)
        self._file, self._rel = f, rel
        try:
            self._writer = SequenceFileWriter(f, compression=self.config.compression, codec=self.codec,
                                              metadata=self.metadata, block_size=self.config.block_size)
        except Exception:
            self._abandon()
            raise
        self.bytes_written += self._writer.position
        self._opened = time.monotonic()
        self._last_sync = self._opened
        self._new_name = True
        self._dirty = True

    def _sync(self) -> None:
        writer, disk = self._writer, self._disk
        assert writer is not None and disk is not None
        writer.flush()
        disk.sync(self._file, inprogress_name(self._rel), self._new_name)
        self._new_name = False
        self._dirty = False
        self._last_sync = time.monotonic()

    def _close_file(self) -> None:
        """Flush, fsync, close and rename the open file; upload it if staged."""
        if self._writer is None:
            return
        disk = self._disk
        assert disk is not None
        self._sync()
        self._writer.close()
        self._file.close()
        rel = self._rel
        self._file = self._writer = None
        self._rel = ""
        try:
            disk.rename(inprogress_name(rel), rel)
        except Exception:
            self._broken.append(inprogress_name(rel))  # complete: recovery just renames it
            raise
        self._m_closed.inc()
        if self.staged:
            self._uploads.append(rel)
            try:
                self._upload(rel)
                self._uploads.remove(rel)
            except Exception as exc:  # noqa: BLE001 - the file is safe on local disk; retried before the next write
                self.log.warning("sink %s: upload of %s failed, will retry: %s", self.name, rel, exc)

    def _abandon(self) -> None:
        """After a failed write: drop the open file (recovered later) and the connection (reconnected later)."""
        if self._file is not None:
            try:
                self._file.close()
            except Exception:  # noqa: BLE001 - the connection may be gone
                pass
            self._broken.append(inprogress_name(self._rel))
        self._file = self._writer = None
        self._rel = ""
        if self.remote and self._target is not None:
            self._target.close()
            self._target = None
            if not self.staged:
                self._disk = None

    def _tick_loop(self) -> None:
        """Roll files by age, fsync by period, and retry recovery and uploads, while no batch comes."""
        cfg = self.config
        tick = max(0.05, min(1.0, cfg.roll_interval / 4, cfg.sync_period / 2 if cfg.sync == "interval" else 1.0))
        next_repair = 0.0
        while not self._stop.wait(tick):
            with self._lock:
                if not self._started:
                    continue
                now = time.monotonic()
                try:
                    if self._writer is not None and now - self._opened >= cfg.roll_interval:
                        self._close_file()
                    elif (self._writer is not None and self._dirty and cfg.sync == "interval"
                          and now - self._last_sync >= cfg.sync_period):
                        self._sync()
                    if (self._broken or self._uploads or self._target is None) and now >= next_repair:
                        next_repair = now + 5.0
                        self._repair()
                except Exception as exc:  # noqa: BLE001 - a background step must not kill the thread
                    self.log.warning("sink %s: background roll/repair failed: %s", self.name, exc)
                    self.metrics.errors.inc()
                    self._abandon()
