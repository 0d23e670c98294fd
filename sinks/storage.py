"""Stores: opening a URL as an fsspec filesystem, and the file operations sinks write through.

:func:`open_filesystem` gives a fresh connection, SFTP servers proven by their host key.
:class:`LocalFiles` and :class:`RemoteFiles` are what a sink writes, syncs and renames
through, local disk and remote store alike (``RemoteFiles`` uploads staged files to object
stores and streams to SFTP with :class:`SftpWriter`).

fsspec's SFTP filesystem trusts any host key (paramiko's ``AutoAddPolicy``) and
never reads ``known_hosts``, so whoever can redirect the connection receives
every log line.  SFTP URLs get :class:`sinks.sftp.VerifiedSFTPFileSystem`
instead, configured by two ``storage_options`` keys:

* ``known_hosts``: path of the known_hosts file;
* ``host_key_fingerprint``: ``SHA256:...`` (as ``ssh-keygen -lf`` prints), or a list of them.
"""

from __future__ import annotations

import glob
import io
import os
import re
from collections import deque
from collections.abc import Callable
from typing import Any

import fsspec

from logflume.errors import ConfigError
from logflume.settings import AnyValue, Duration, Enum, MapOf, Optional, Setting, Str
from logflume.statefile import STATE_FILE_MODE, make_state_dir
from sinks.direct_file import DirectBuffer, open_direct
from sinks.naming import inprogress_name

#: Remote protocols whose open files take partial flushes (the hflush equivalent): written in place.
#: Every other remote store (s3, gs, abfs, webhdfs, memory, ...) gets files staged locally.
STREAMING_PROTOCOLS = frozenset({"sftp", "ssh", "hdfs", "arrow_hdfs"})
#: Protocols where one PUT makes a whole object appear at once (no hidden name and rename needed).
OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl", "oss", "memory"})
#: Protocols served by paramiko's SFTP (fsspec's ``sftp``/``ssh``).
SFTP_PROTOCOLS = frozenset({"sftp", "ssh"})
#: storage_options keys logflume reads itself (sinks/sftp.py); the rest go to paramiko or fsspec.
HOST_KEY_OPTIONS = ("known_hosts", "host_key_fingerprint")
_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}")


def protocol_of(url: str) -> str:
    """``sftp://h/x`` -> ``sftp``; a local path -> ``file``."""
    return url.split("://", 1)[0] if "://" in url else "file"


def check_storage_options(url: str, options: dict[str, Any], file: str | None, path: str) -> None:
    """ConfigError for host-key options that are malformed, or given for a store that is not SFTP."""
    sftp = protocol_of(url) in SFTP_PROTOCOLS
    if "host_key_policy" in options:
        raise ConfigError(file, f"{path}.host_key_policy", "not accepted: host keys are always verified; expected "
                          "known_hosts or host_key_fingerprint")
    for key in HOST_KEY_OPTIONS:
        if key in options and not sftp:
            raise ConfigError(file, f"{path}.{key}", f"only for sftp:// stores, not {protocol_of(url)}")
    if "known_hosts" in options and not isinstance(options["known_hosts"], str):
        raise ConfigError(file, f"{path}.known_hosts", f"expected a file path, got {options['known_hosts']!r}")
    fingerprints = options.get("host_key_fingerprint")
    if fingerprints is not None:
        items = fingerprints if isinstance(fingerprints, list) else [fingerprints]
        for i, fp in enumerate(items):
            if not isinstance(fp, str) or not _FINGERPRINT.fullmatch(fp):
                where = f"{path}.host_key_fingerprint" + (f"[{i}]" if isinstance(fingerprints, list) else "")
                raise ConfigError(file, where, f"expected SHA256:<43 base64 characters> (as printed by "
                                               f"`ssh-keygen -lf KEY.pub`), got {fp!r}")


def open_filesystem(url: str, options: dict[str, Any]) -> tuple[Any, str]:
    """A fresh (uncached) filesystem for ``url`` and the root path in it; SFTP verifies the host key."""
    if protocol_of(url) in SFTP_PROTOCOLS:
        from sinks.sftp import VerifiedSFTPFileSystem  # paramiko is imported only by stores that need it

        kwargs = {**VerifiedSFTPFileSystem._get_kwargs_from_urls(url), **options}
        return (VerifiedSFTPFileSystem(skip_instance_cache=True, **kwargs),
                VerifiedSFTPFileSystem._strip_protocol(url))
    return fsspec.core.url_to_fs(url, skip_instance_cache=True, **options)


#: Directories a remote store remembers having made (forgetting one costs a makedirs round trip, no more).
MAX_MADE = 1024
#: Bytes copied at a time when a staged file is uploaded.
COPY_PIECE = 8 << 20
#: Bytes per SFTP write request (paramiko's MAX_REQUEST_SIZE; servers accept at least this).
SFTP_REQUEST = 32768
#: Bytes a file read through over SFTP asks for at once (32 requests in flight), and holds at most.
SFTP_READ_AHEAD = 1 << 20


#: The settings of every sink that writes files to a store (``seqfile``, ``file``).
STORE_SETTINGS: dict[str, Setting] = {
    "staging": Setting(Enum("auto", "always", "never"), "auto",
                       "Stage files locally, upload on roll: auto = all remote stores but sftp and hdfs"),
    "staging_dir": Setting(Optional(Str()), None, "Local directory for staged files (default: the state dir)"),
    "storage_options": Setting(MapOf(AnyValue()), {}, "Passed to the fsspec filesystem (key_filename, ...); "
                               "SFTP: known_hosts, host_key_fingerprint (see docs/store.md)"),
    "timeout": Setting(Duration(), "30s", "Network timeout of remote stores (connect and each round trip)"),
}


class StoreFiles:
    """Where a sink's files go: ``target``, the store at ``url``, and ``disk``, where they are written: the
    target itself, or a local staging directory for stores that take whole files only (uploaded on roll).

    ``connect`` opens what is not open; after a failure ``drop`` lets a remote connection go (the next
    ``connect`` makes a fresh one, so a restarted server is picked up); ``close`` ends both.
    """

    def __init__(self, url: str, options: dict[str, Any], timeout: float, staging: str,
                 staging_dir: Callable[[], str], private: bool = False) -> None:
        self.url = url
        self.options = options
        self.timeout = timeout
        self.protocol = protocol_of(url)
        self.remote = self.protocol != "file"
        self.local_root = os.path.abspath(url[len("file://"):] if url.startswith("file://") else url)
        self.staged = self.remote and (staging == "always"
                                       or (staging == "auto" and self.protocol not in STREAMING_PROTOCOLS))
        self.staging_dir = staging_dir  # asked only when staged: the default one is made when asked
        self.private = private  # owner-only files on a local target (a buffer store's secondary)
        self.target: LocalFiles | None = None
        self.disk: LocalFiles | None = None

    @property
    def connected(self) -> bool:
        return self.target is not None and self.disk is not None

    def connect(self) -> None:
        if not self.remote:
            self.target = LocalFiles(self.local_root, private=self.private)
        elif self.target is None:
            options = dict(self.options)
            if self.protocol in SFTP_PROTOCOLS:
                for key in ("timeout", "banner_timeout", "auth_timeout"):
                    options.setdefault(key, self.timeout)
            fs, root = open_filesystem(self.url, options)
            self.target = RemoteFiles(fs, root, self.timeout)
        self.disk = LocalFiles(os.path.abspath(self.staging_dir()), private=True) if self.staged else self.target
        self.disk.makedirs("")
        if self.target is not self.disk:
            self.target.makedirs("")

    def drop(self) -> None:
        if self.remote and self.target is not None:
            self.target.close()
            self.target = None
            if not self.staged:
                self.disk = None

    def close(self) -> None:
        for files in {id(self.target): self.target, id(self.disk): self.disk}.values():
            if files is not None:
                files.close()
        self.target = self.disk = None


class LocalFiles:
    """Where files go: a local directory (fsync, rename) or an fsspec filesystem (flush, mv).

    ``private`` files and the directories made for them are owner-only (0600/0700);
    others get the umask's mode.
    """

    local = True

    def __init__(self, root: str, private: bool = False) -> None:
        self.root = root
        self.private = private
        self._stage: DirectBuffer | None = None  # made by the first direct create

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def makedirs(self, rel: str) -> None:
        path = self.path(rel) if rel else self.root
        if self.private:
            make_state_dir(path)
        else:
            os.makedirs(path, exist_ok=True)

    def create(self, rel: str, direct: bool = False) -> Any:
        """A new file open for writing; with ``direct``, written with ``O_DIRECT`` where the file system allows
        (see ``sinks/direct_file.py``), else through the page cache."""
        mode = STATE_FILE_MODE if self.private else 0o666
        fd = os.open(self.path(rel), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        if direct:
            if self._stage is None:
                self._stage = DirectBuffer()
            f = open_direct(fd, self._stage)
            if f is not None:
                return f
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


class RemoteFiles(LocalFiles):
    """An fsspec filesystem; ``flush`` is the hflush-equivalent (the server has the bytes)."""

    local = False

    def __init__(self, fs: Any, root: str, timeout: float) -> None:
        super().__init__(root.rstrip("/") or "/")
        self.fs = fs
        self.timeout = timeout
        self.object_store = bool(set(protocols_of_fs(fs)) & OBJECT_STORES)
        self._made: set[str] = set()  # directories known to exist, at most MAX_MADE
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
            if len(self._made) >= MAX_MADE:  # one directory per datatype and day: senders choose how many
                self._made.clear()
            self._made.add(rel)

    def create(self, rel: str, direct: bool = False) -> Any:
        """A new remote file open for writing (``direct`` is for local disks and ignored here)."""
        ftp = getattr(self.fs, "ftp", None)
        if ftp is not None:
            return SftpWriter(ftp.open(self.path(rel), "wb"))
        return self.fs.open(self.path(rel), "wb")

    def sync(self, f: Any, rel: str, new_name: bool) -> None:
        f.flush()
        if self.server_fsync is not False and isinstance(f, SftpWriter):
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
        """The file, to be read from start to end (recovery reads every record of an in-progress file)."""
        f = self.fs.open(self.path(rel), "rb")
        if hasattr(f, "readv"):  # paramiko's SFTPFile
            return io.BufferedReader(SftpReadAhead(f, self.size(rel)), buffer_size=SFTP_READ_AHEAD)
        return f

    def truncate(self, rel: str, size: int) -> None:
        ftp = getattr(self.fs, "ftp", None)
        if ftp is not None:  # SFTP can truncate in place
            ftp.truncate(self.path(rel), size)
            return
        tmp = rel + ".truncating"
        with self.fs.open(self.path(rel), "rb") as src, self.fs.open(self.path(tmp), "wb") as dst:
            left = size
            while left:
                piece = src.read(min(left, COPY_PIECE))
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


class SftpReadAhead(io.RawIOBase):
    """Reads of a remote file in :data:`SFTP_READ_AHEAD` blocks, each sent as pipelined requests (``readv``).

    paramiko's own buffered read sends one request of at most 32 KiB (8 KiB by default) and waits for its
    answer before the next: a collector restarted under load took 29 s to recover one 4.7 MB in-progress
    file of small records before it listened again.  Wrapped in an ``io.BufferedReader`` (seek, tell, small
    reads); ``size`` is the file's size when opened (a file being recovered no longer grows).
    """

    def __init__(self, f: Any, size: int) -> None:
        self.f = f
        self.size = size
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(base + offset, 0)
        return self.pos

    def readinto(self, buffer: Any) -> int:
        end = min(self.pos + len(buffer), self.size)
        if end <= self.pos:
            return 0
        pieces = [(off, min(SFTP_REQUEST, end - off)) for off in range(self.pos, end, SFTP_REQUEST)]
        view, n = memoryview(buffer).cast("B"), 0
        for data in self.f.readv(pieces):
            view[n : n + len(data)] = data
            n += len(data)
        self.pos += n
        return n

    def close(self) -> None:
        if not self.closed:
            self.f.close()
        super().close()


class SftpWriter:
    """Writes to an SFTP file with requests in flight, and ``flush`` waits until the server acked each one.

    paramiko's own file either waits a round trip per 32 KiB request or, pipelined,
    drops the server's error replies; and its buffered ``write`` re-copies the rest
    of a big buffer for every request.  Here a big value goes out as zero-copy
    slices of the caller's buffer, ``window`` requests at a time.

    Several writers (one per datatype) and the sink's own calls (open, rename) share
    one SFTP session, and whoever reads the session takes every reply that arrives:
    replies to this writer's requests read by another call are handed to
    :meth:`_async_response` and kept, so :meth:`flush` still sees (and checks) each.
    """

    def __init__(self, f: Any, window: int = 64) -> None:
        self.file = f
        self.sftp = f.sftp
        self.handle = f.handle
        self.window = window
        self.pos = 0
        self._pending: deque[int] = deque()
        self._replies: dict[int, tuple[int, Any]] = {}  # replies read by another call, by request number

    def write(self, data: Any) -> int:
        from paramiko.sftp import CMD_WRITE, int64

        view = memoryview(data)
        if view.ndim != 1 or view.format != "B":
            view = view.cast("B")
        step = SFTP_REQUEST
        for off in range(0, len(view), step):
            piece = bytes(view[off : off + step])  # the one copy: into the SSH packet
            num = self.sftp._async_request(self, CMD_WRITE, self.handle, int64(self.pos), piece)
            self._pending.append(num)
            self.pos += len(piece)
            if len(self._pending) >= self.window:
                self._wait_one()
        return len(view)

    def _async_response(self, t: int, msg: Any, num: int) -> None:
        """paramiko: a reply to one of our requests, read while waiting for another request's."""
        self._replies[num] = (t, msg)

    def _wait_one(self) -> None:
        from paramiko.sftp import CMD_STATUS

        num = self._pending.popleft()
        if num in self._replies:
            t, msg = self._replies.pop(num)
            if t == CMD_STATUS:
                self.sftp._convert_status(msg)  # raises on an error status
        else:
            t, _msg = self.sftp._read_response(num)  # raises on an error status
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


def protocols_of_fs(fs: Any) -> tuple[str, ...]:
    proto = fs.protocol
    return (proto,) if isinstance(proto, str) else tuple(proto)
