"""SeqFileSink: the collector's sink files, Hadoop SequenceFiles of chunks under a store root.

Layout: ``<root>/<path>/<collector>-<yyyymmddHHMMSS>-<n>.seq`` (UTC), ``path`` a
template (``{date}`` by default).  A file being written is named
``.<final name>.inprogress`` (Hadoop and Spark skip names that start with ``.``)
and renamed once closed; files roll by ``roll_size`` and ``roll_interval``.

With ``{datatype}`` in the path each chunk goes to the file of its datatype: one
open file per datatype, each rolling on its own, at most ``max_open_files`` at
once (the least recently written is closed like a roll to make room), so a
sender inventing datatypes costs small files, never descriptors or memory.

``deliver`` returns only once the batch is durable per ``sync`` (``every_batch``:
every file it wrote flushed and fsynced locally, flushed to the server on remote
stores).  Stores that cannot append or flush (object stores) get
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
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from logflume import __version__
from logflume.chunk import Chunk
from logflume.errors import ConfigError, DeliveryError, StartupError
from logflume.secrets import redact_url
from logflume.sequencefile import SequenceFileError, SequenceFileReader, SequenceFileWriter
from logflume.settings import Duration, Enum, Int, Optional, Setting, Size, Str
from logflume.sink import Sink
from sinks.naming import FINAL, INPROGRESS, datatype_dir, final_name, inprogress_name, safe_collector_name
from sinks.storage import STORE_SETTINGS, LocalFiles, RemoteFiles, StoreFiles, check_storage_options

#: Header metadata of every sink file: who wrote it and which layout its records follow.
FORMAT_VERSION = "1"
WRITER_KEY = "logflume.writer"
FORMAT_KEY = "logflume.format"
COLLECTOR_KEY = "logflume.collector"


_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
#: Fields of a ``path`` template and the directory-name pattern each expands to.
PATH_FIELDS = {"date": r"\d{4}-\d{2}-\d{2}", "hour": r"\d{2}", "datatype": r"[^/]+"}
#: One directory of a ``path`` template: literal letters, digits, ``.``, ``_``, ``-``, ``=`` and fields.
_PATH_PART = re.compile(r"^(?:[A-Za-z0-9=_-]|\.(?!\.)|\{(?:date|hour|datatype)\})+$")
_PATH_FIELD = re.compile(r"\{(date|hour|datatype)\}")
_ANY_FIELD = re.compile(r"\{([^{}/]*)\}")


@dataclass(slots=True)
class _OpenFile:
    """One file being written: the open file, its writer, its final name and its sync state."""

    file: Any
    writer: SequenceFileWriter
    rel: str  # final relative name
    opened: float
    new_name: bool = True  # its directory entry is not fsynced yet
    dirty: bool = True  # bytes written since the last sync
    last_sync: float = 0.0


def _dirs_pattern(path: str) -> re.Pattern[str]:
    """A regex for the directories a ``path`` template gives, the (escaped) datatype captured as ``datatype``."""
    out, seen = [], False
    for piece in re.split(r"(\{[a-z]+\})", path):
        if piece == "{datatype}":
            out.append("(?P=datatype)" if seen else f"(?P<datatype>{PATH_FIELDS['datatype']})")
            seen = True
        elif piece.startswith("{"):
            out.append(PATH_FIELDS[piece[1:-1]])
        else:
            out.append(re.escape(piece))
    return re.compile("^" + "".join(out) + "$")


def layouts_overlap(a: str, b: str) -> bool:
    """Whether two ``path`` templates may name the same directory: two stores of one root and collector name
    with such layouts would each take the other's in-progress files for its own at start.

    Directories of different depth never meet; two literal ones meet if equal; a literal meets a templated one
    if it fits the template; two templated ones are taken to meet unless their literal starts or ends differ.
    """
    pa, pb = a.split("/"), b.split("/")
    return len(pa) == len(pb) and all(_parts_overlap(x, y) for x, y in zip(pa, pb, strict=True))


def _parts_overlap(x: str, y: str) -> bool:
    tx, ty = _PATH_FIELD.search(x) is not None, _PATH_FIELD.search(y) is not None
    if not tx and not ty:
        return x == y
    if not tx or not ty:
        literal, template = (x, y) if not tx else (y, x)
        return _dirs_pattern(template).match(literal) is not None
    (hx, *_, lx), (hy, *_, ly) = _PATH_FIELD.split(x), _PATH_FIELD.split(y)
    n, m = min(len(hx), len(hy)), min(len(lx), len(ly))
    return hx[:n] == hy[:n] and (m == 0 or lx[-m:] == ly[-m:])


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


class SeqFileSink(Sink):
    """Writes chunks into rolling SequenceFiles (Text metadata JSON -> BytesWritable bytes)."""

    counts_output = True  # also a collector's store, where no runner counts

    settings: ClassVar[dict[str, Setting]] = {
        "channel": Setting(Str(), "", "Channel this sink takes from (not needed when it is a collector's store)"),
        "url": Setting(Str(), doc="Store root: a local directory or an fsspec URL (sftp://host/dir, s3://bucket/x)"),
        "path": Setting(Str(), "{date}", "Directory of new files under url, a template: {date} = UTC yyyy-mm-dd, "
                                         "{hour} = UTC HH when the file is opened, {datatype} = the chunk's "
                                         "datatype, escaped (e.g. audit/{date}, {datatype}/{date})"),
        "max_open_files": Setting(Int(min=1), 64, "With {datatype} in path: files open at once (one per datatype);"
                                                  " the least recently written is closed to open another"),
        "roll_size": Setting(Size(min=1), "1GiB", "Close the file and start a new one once it reaches this size"),
        "roll_interval": Setting(Duration(), "5m", "Close a file this long after it was opened, even if small"),
        "sync": Setting(Enum("every_batch", "interval", "none"), "every_batch",
                        "every_batch: flush+fsync before each ack; interval: every sync_period; none: at roll"),
        "sync_period": Setting(Duration(), "1s", "With sync: interval, how often to flush and fsync"),
        "direct_io": Setting(Enum("auto", "on", "off"), "auto",
                             "Write local files with O_DIRECT (not through the page cache) where the file system "
                             "allows; auto: when sync is every_batch, where every byte is fsynced at once anyway"),
        "compression": Setting(Enum("NONE", "RECORD", "BLOCK"), "NONE", "SequenceFile compression"),
        "codec": Setting(Optional(Enum("deflate", "gzip", "lz4", "snappy")), None,
                         "Codec for RECORD/BLOCK (default deflate): DefaultCodec, GzipCodec, Lz4Codec, SnappyCodec"),
        "block_size": Setting(Size(min=1), 1_000_000, "BLOCK: end a block once its keys+values reach this size"),
        "collector_name": Setting(Optional(Str()), None, "Name in file names and header (default: the agent name)"),
        **STORE_SETTINGS,
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
        unknown = [f for f in _ANY_FIELD.findall(cfg.path) if f not in PATH_FIELDS]
        if unknown:
            raise ConfigError(file, f"{self.name}.path", f"unknown field {{{unknown[0]}}}: expected {{date}}, "
                                                         f"{{hour}} or {{datatype}}, got {cfg.path!r}")
        if not all(_PATH_PART.match(part) and not part.startswith(".") for part in parts):
            raise ConfigError(file, f"{self.name}.path", "expected directories of letters, digits, '.', '_', '-', '=' "
                                                         "and {date} / {hour} / {datatype}, separated by '/' (none "
                                                         f"starting with '.'), got {cfg.path!r}")
        self._dirs_glob = _PATH_FIELD.sub("*", cfg.path)
        self.partitioned = "{datatype}" in cfg.path
        self._dirs_re = _dirs_pattern(cfg.path)
        url = cfg.url
        if not url:
            raise ConfigError(file, f"{self.name}.url", "expected a directory or fsspec URL, got ''")
        check_storage_options(url, cfg.storage_options, file, f"{self.name}.storage_options")
        self.files = StoreFiles(url, cfg.storage_options, cfg.timeout, cfg.staging, self._staging_dir,
                                private=self.private_files)
        self.remote, self.staged, self.protocol = self.files.remote, self.files.staged, self.files.protocol
        self.local_root = self.files.local_root
        self.metadata = {WRITER_KEY: f"logflume {__version__}", FORMAT_KEY: FORMAT_VERSION,
                         COLLECTOR_KEY: self.collector}
        self._lock = threading.RLock()
        #: Open files by escaped datatype ("" without {datatype}), least recently written first.
        self._open: OrderedDict[str, _OpenFile] = OrderedDict()
        self._max_open = cfg.max_open_files if self.partitioned else 1
        self._broken: list[str] = []  # in-progress files (on files.disk) to recover before writing on
        self._uploads: list[str] = []  # staged finished files waiting for their upload
        self._n = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False
        self.bytes_written = 0  # file bytes written since start (headers and framing included)
        self._m_closed = self.metrics.counter("seqfile_files_closed", "Sink files closed and given their final name")
        self._m_recovered = self.metrics.counter("seqfile_files_recovered", "In-progress files recovered after a crash")
        self._m_uploaded = self.metrics.counter("seqfile_files_uploaded", "Staged files uploaded to the store")
        self._m_open = self.metrics.gauge("seqfile_open_files", "Sink files open for writing (one per datatype "
                                                                "with {datatype} in path)")
        self._m_evicted = self.metrics.counter("seqfile_files_evicted", "Files closed early to stay within "
                                                                        "max_open_files")

    # -- plugin surface -----------------------------------------------------

    def writes(self) -> list[str]:
        return [self.config.url] if self.remote else ["file:" + self.local_root + "/**"]

    def describe(self) -> dict[str, Any]:
        return {"type": type(self).__name__, "url": redact_url(self.config.url), "staged": self.staged,
                "collector": self.collector, "compression": self.config.compression, "codec": self.codec,
                "path": self.config.path, "open_files": len(self._open)}

    def start(self) -> None:
        try:
            with self._lock:
                self._stop.clear()
                self.files.connect()
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
                self._close_all()
                self._repair()
            except Exception as exc:  # noqa: BLE001 - left in progress, recovered at the next start
                self.log.warning("sink %s: could not finish its files at stop (recovered at next start): %s",
                                 self.name, exc)
                self._abandon()
            self.files.close()  # a later start connects afresh

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
                    key = datatype_dir(chunk.datatype) if self.partitioned else ""
                    of = self._open.get(key)
                    if of is None:
                        of = self._open_file(key)
                    else:
                        self._open.move_to_end(key)
                    writer = of.writer
                    before = writer.position
                    writer.append_chunk(chunk)
                    self.bytes_written += writer.position - before
                    of.dirty = True
                    if writer.position >= roll_size:
                        self._close_file(key)
                policy = self.config.sync
                if self._open and (policy == "every_batch" or (
                        policy == "interval" and time.monotonic() - self._last_sync() >= self.config.sync_period)):
                    self._sync_dirty()
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
            self._sync_dirty()

    def roll(self) -> bool:
        """Close the open files now (if any) so they get their final names; True if one was closed."""
        with self._lock:
            if not self._open:
                return False
            try:
                self._close_all()
            except Exception as exc:
                self._abandon()
                raise DeliveryError(f"sink {self.name}: closing a file on {redact_url(self.config.url)} failed: "
                                    f"{exc!r}") from exc
            return True

    @property
    def open_file_bytes(self) -> int:
        """Bytes in the files being written (0 if none is open)."""
        return sum(of.writer.position for of in list(self._open.values()))

    @property
    def open_files(self) -> int:
        """Files open for writing now (at most ``max_open_files``)."""
        return len(self._open)

    # -- naming (a subclass may lay files out differently) --------------------

    #: Whether local files are owner-only (buffers of private logs) rather than the umask's mode (the store's
    #: product, which jobs may read as another user: share it with ``UMask=``, see docs/store.md).
    private_files: ClassVar[bool] = False
    @property
    def inprogress_glob(self) -> str:
        """Glob, relative to the root, that finds in-progress files of any collector."""
        return f"{self._dirs_glob}/.*.seq{INPROGRESS}"

    @property
    def final_glob(self) -> str:
        """Glob, relative to the root, that finds finished files of any collector."""
        return f"{self._dirs_glob}/*.seq"

    def owns(self, final_rel: str) -> bool:
        """Whether a finished file's name is one this sink writes (its collector, its layout)."""
        m = FINAL.match(final_rel.rsplit("/", 1)[-1])
        return bool(m and m.group("collector") == self.collector)

    def next_name(self, datatype: str = "") -> str:
        """Relative final name of a new file: ``<path>/<collector>-<yyyymmddHHMMSS>-<n>.seq`` (UTC).

        ``datatype`` is the escaped datatype (:func:`~sinks.naming.datatype_dir`) that ``{datatype}`` becomes.
        """
        now = dt.datetime.now(dt.UTC)
        folder = self.config.path.replace("{date}", f"{now:%Y-%m-%d}").replace("{hour}", f"{now:%H}")
        folder = folder.replace("{datatype}", datatype)
        name = f"{folder}/{self.collector}-{now:%Y%m%d%H%M%S}-{self._n}.seq"
        self._n += 1
        return name

    def datatype_of(self, rel: str) -> str:
        """The escaped datatype in a file's directory ("" if the layout has none or the file is not in it)."""
        m = self._dirs_re.match(rel.rpartition("/")[0])
        return m.group("datatype") if m and self.partitioned else ""

    # -- internals ------------------------------------------------------------

    def _staging_dir(self) -> str:
        return self.config.staging_dir or str(self.context.state_dir("sink", self.name) / "staging")

    def _scan_leftovers(self) -> None:
        """Queue this collector's in-progress files for recovery, and staged files for upload."""
        disk = self.files.disk
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
        if not self.files.connected:
            self.files.connect()
        while self._broken:
            self._recover(self._broken[0])
            self._broken.pop(0)
        while self._uploads:
            self._upload(self._uploads[0])
            self._uploads.pop(0)

    def _recover(self, rel: str) -> None:
        disk = self.files.disk
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
        if disk.exists(final):  # never overwrite a finished file; stay in the datatype's directory
            final = self._free_name(self.datatype_of(final))
            disk.makedirs(final.rpartition("/")[0])
        disk.rename(rel, final)
        self._m_recovered.inc()
        self.log.warning("sink %s: recovered %s: kept %d whole records (%d of %d bytes)",
                         self.name, disk.path(final), records, good, size)
        if self.staged:
            self._uploads.append(final)

    def _upload(self, rel: str) -> None:
        disk, target = self.files.disk, self.files.target
        assert isinstance(target, RemoteFiles) and disk is not None
        local = disk.path(rel)
        if not os.path.exists(local):
            return
        target.upload(local, rel)
        disk.remove(rel)  # only now: the store confirmed every byte
        self._m_uploaded.inc()

    def _free_name(self, datatype: str = "") -> str:
        disk = self.files.disk
        assert disk is not None
        while True:
            rel = self.next_name(datatype)
            if not disk.exists(rel) and not disk.exists(inprogress_name(rel)) and (
                self.files.target is disk or self.files.target is None or not self.files.target.exists(rel)
            ):
                return rel

    def _open_file(self, key: str) -> _OpenFile:
        """Open the file for ``key`` (an escaped datatype, or ""), first closing the least recently written
        one if ``max_open_files`` are open."""
        while len(self._open) >= self._max_open:
            self._close_file(next(iter(self._open)))
            self._m_evicted.inc()
        disk = self.files.disk
        assert disk is not None
        rel = self._free_name(key)
        disk.makedirs(rel.rpartition("/")[0])
        f = disk.create(inprogress_name(rel), direct=self._direct(disk))
        try:
            writer = SequenceFileWriter(f, compression=self.config.compression, codec=self.codec,
                                        metadata=self.metadata, block_size=self.config.block_size)
        except Exception:
            try:
                f.close()
            finally:
                self._broken.append(inprogress_name(rel))
            raise
        self.bytes_written += writer.position
        now = time.monotonic()
        of = self._open[key] = _OpenFile(f, writer, rel, opened=now, last_sync=now)
        self._m_open.set(len(self._open))
        return of

    def _direct(self, disk: LocalFiles) -> bool:
        """Whether new files on ``disk`` are written with O_DIRECT (local disks only; see ``direct_io``)."""
        mode = self.config.direct_io
        return disk.local and (mode == "on" or (mode == "auto" and self.config.sync == "every_batch"))

    def _last_sync(self) -> float:
        """When the least recently synced dirty file was synced (now if none is dirty)."""
        return min((of.last_sync for of in self._open.values() if of.dirty), default=time.monotonic())

    def _sync(self, of: _OpenFile) -> None:
        disk = self.files.disk
        assert disk is not None
        of.writer.flush()
        disk.sync(of.file, inprogress_name(of.rel), of.new_name)
        of.new_name = False
        of.dirty = False
        of.last_sync = time.monotonic()

    def _sync_dirty(self) -> None:
        """Flush and fsync every file written since its last sync (one per datatype the batch held)."""
        for of in list(self._open.values()):
            if of.dirty:
                self._sync(of)

    def _close_all(self) -> None:
        while self._open:
            self._close_file(next(iter(self._open)))

    def _close_file(self, key: str) -> None:
        """Flush, fsync, close and rename the open file of ``key``; upload it if staged."""
        of = self._open.get(key)
        if of is None:
            return
        disk = self.files.disk
        assert disk is not None
        self._sync(of)
        of.writer.close()
        of.file.close()
        del self._open[key]
        self._m_open.set(len(self._open))
        rel = of.rel
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
        """After a failed write: drop the open files (recovered later) and the connection (reconnected later).

        The connection goes first: closing a remote file waits for the server's replies, and a server that
        stopped answering would cost a timeout per open file.
        """
        dropped = list(self._open.values())
        self._open.clear()
        self._m_open.set(0)
        self.files.drop()
        for of in dropped:
            try:
                of.file.close()
            except Exception:  # noqa: BLE001 - the connection is gone
                pass
            self._broken.append(inprogress_name(of.rel))

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
                    for key, of in list(self._open.items()):
                        if now - of.opened >= cfg.roll_interval:
                            self._close_file(key)
                        elif of.dirty and cfg.sync == "interval" and now - of.last_sync >= cfg.sync_period:
                            self._sync(of)
                    if (self._broken or self._uploads or self.files.target is None) and now >= next_repair:
                        next_repair = now + 5.0
                        self._repair()
                except Exception as exc:  # noqa: BLE001 - a background step must not kill the thread
                    self.log.warning("sink %s: background roll/repair failed: %s", self.name, exc)
                    self.metrics.errors.inc()
                    self._abandon()
