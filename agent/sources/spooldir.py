"""The ``spooldir`` source: Flume's spooling directory.

Producers drop *finished* files into a directory; each file (optionally only
names matching ``pattern``) is read once, as its own stream (its absolute
path), in chunks cut after the last newline before ``chunk_size``.  After the
file's last byte was committed to the channel it is renamed ``NAME.COMPLETED``
(or deleted, ``on_complete: delete``).

A file counts as complete once untouched for ``min_age``.  A file that changes
(size or mtime) after it was picked up is an error: it is logged, counted in
``files_failed`` and left in place, and it is not picked up again until it
changes again.  The offset reached in the current file is checkpointed after
every commit, so a restart resumes inside the file instead of sending it
again; a chunk is re-sent at most once (the one in flight at a crash).

Each file's epoch is ``dev:inode:size:mtime``: any change to a file starts a
new numbering, so ranges in one epoch always name the same bytes.
"""

from __future__ import annotations

import fnmatch
import json
import os
import stat
import time
from pathlib import Path
from typing import ClassVar

from logflume.chunk import Chunk
from logflume.chunking import RecordChunker
from logflume.errors import ChannelClosed, ConfigError, StartupError
from logflume.settings import Duration, Enum, Setting, Size, Str
from logflume.source import SourceOutput, ThreadedSource
from logflume.statefile import write_atomic

CHECKPOINT = "checkpoint.json"
#: Bytes read at a time (at most chunk_size); the chunker cuts chunks from them.
READ_BLOCK = 4 << 20


class FileChanged(Exception):
    """The file being ingested changed after it was picked up."""


class SpoolDirSource(ThreadedSource):
    settings: ClassVar[dict[str, Setting]] = {
        "dir": Setting(Str(), doc="The spooling directory (not recursive)"),
        "pattern": Setting(Str(), "*", "Only file names matching this glob are ingested"),
        "ignore": Setting(Str(), "", "File names matching this glob are skipped (names starting with . always are)"),
        "completed_suffix": Setting(Str(), ".COMPLETED", "Suffix added to a file once ingested (on_complete: rename)"),
        "on_complete": Setting(Enum("rename", "delete"), "rename", "What to do with a fully committed file"),
        "min_age": Setting(Duration(), "1s", "A file is picked up once its mtime is at least this old"),
        "poll_interval": Setting(Duration(), "1s", "How often the directory is listed"),
        "chunk_size": Setting(Size(min=1024), "64MiB", "Chunks are cut after the last newline before this size"),
    }

    def configure(self) -> None:
        if not self.config.completed_suffix and self.config.on_complete == "rename":
            raise ConfigError(self.context.config_file, f"sources.{self.name}.completed_suffix",
                              "expected a non-empty suffix (or on_complete: delete)")
        self.dir = Path(self.config.dir).absolute()
        self.files_done = self.metrics.counter("files_completed", "Files fully ingested")
        self.files_failed = self.metrics.counter("files_failed", "Files that changed while being ingested")
        self._failed: set[tuple] = set()

    def reads(self) -> list[str]:
        return [f"file:{self.dir}/*"]

    def start(self, output: SourceOutput) -> None:  # type: ignore[override]
        if not self.dir.is_dir():
            raise StartupError(f"source {self.name}: spooling directory {self.dir} does not exist")
        if not os.access(self.dir, os.R_OK | os.W_OK | os.X_OK):
            raise StartupError(f"source {self.name}: spooling directory {self.dir} is not readable and writable")
        self._state_path = self.context.state_dir("source", self.name) / CHECKPOINT
        self._state = self._load_state()
        super().start(output)

    # -- checkpoint ---------------------------------------------------------
    def _load_state(self) -> dict:
        try:
            state = json.loads(self._state_path.read_text(encoding="utf-8"))
            if isinstance(state, dict):
                self._failed = {tuple(f) for f in state.get("failed", [])}
                return state
        except (OSError, ValueError):
            pass
        return {}

    def _save_state(self) -> None:
        self._failed = {f for f in self._failed if os.path.exists(f[0])}
        self._state["failed"] = sorted(list(f) for f in self._failed)
        write_atomic(self._state_path, json.dumps(self._state).encode())

    # -- picking files ------------------------------------------------------------
    def candidates(self) -> list[Path]:
        """Complete, not yet ingested files, oldest first (the checkpointed file before all)."""
        c = self.config
        now = time.time()
        found = []
        try:
            entries = list(os.scandir(self.dir))
        except OSError as exc:
            self.log.warning("source %s: cannot list %s: %s", self.name, self.dir, exc)
            return []
        current = (self._state.get("file") or {}).get("path")
        for e in entries:
            name = e.name
            if name.startswith(".") or (c.completed_suffix and name.endswith(c.completed_suffix)):
                continue
            if not fnmatch.fnmatchcase(name, c.pattern) or (c.ignore and fnmatch.fnmatchcase(name, c.ignore)):
                continue
            try:
                if not e.is_file(follow_symlinks=False):
                    continue
                st = e.stat(follow_symlinks=False)
            except OSError:
                continue
            if now - st.st_mtime < c.min_age:
                continue
            if self._key(e.path, st) in self._failed:
                continue
            found.append((e.path != current, st.st_mtime_ns, name, Path(e.path)))
        return [p for *_, p in sorted(found)]

    @staticmethod
    def _key(path: str, st: os.stat_result) -> tuple:
        return (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def run(self) -> None:
        while not self.stopping.is_set():
            for path in self.candidates():
                if self.stopping.is_set():
                    return
                self.ingest(path)
            self.stopping.wait(self.config.poll_interval)

    # -- one file -------------------------------------------------------------
    def ingest(self, path: Path) -> None:
        try:
            # Listed as a regular file, but it may have been swapped since: never read through a symbolic
            # link (ELOOP) and never wait on a FIFO for a writer that does not come.
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            return
        except OSError as exc:
            self.metrics.errors.inc()
            self.log.error("source %s: cannot open %s: %s", self.name, path, exc)
            return
        with os.fdopen(fd, "rb", buffering=0) as fh:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                self.metrics.errors.inc()
                self.log.error("source %s: %s is no longer a regular file; skipped", self.name, path)
                return
            key = self._key(str(path), st)
            epoch = f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
            saved = self._state.get("file") or {}
            offset = int(saved.get("offset", 0)) if saved.get("epoch") == epoch and saved.get("path") == str(path) \
                else 0
            if offset:
                self.log.info("source %s: resuming %s at byte %d of %d", self.name, path, offset, st.st_size)
            self._state["file"] = {"path": str(path), "epoch": epoch, "offset": offset}
            try:
                self._read(fh, path, st, epoch, offset)
            except FileChanged as exc:
                self.files_failed.inc()
                self.metrics.errors.inc()
                self.log.error("source %s: %s changed while being ingested (%s); left in place, not retried "
                               "until it changes again", self.name, path, exc)
                self._failed.add(key)
                self._state.pop("file", None)
                self._save_state()
                return
        self._complete(path, key)

    def _read(self, fh, path: Path, st: os.stat_result, epoch: str, offset: int) -> None:
        size = st.st_size
        chunker = RecordChunker(source=self.context.agent_name, stream=str(path), datatype=self.config.datatype,
                                tags=self.config.tags, epoch=epoch, start_offset=offset,
                                chunk_size=self.config.chunk_size)
        block = min(self.config.chunk_size, READ_BLOCK)
        pos = offset                 # file position of the next byte read
        fh.seek(offset)
        while pos < size:
            if self.stopping.is_set():
                raise ChannelClosed("stopping")
            data = fh.read(min(block, size - pos))
            if not data:
                raise FileChanged(f"shrank to {pos} bytes, expected {size}")
            pos += len(data)
            self.metrics.bytes_in.inc(len(data))
            self._send(fh, st, chunker.feed(data, 0.0))
        self._send(fh, st, chunker.finish())
        self._check_unchanged(fh, st)

    def _send(self, fh, st: os.stat_result, chunks: list[Chunk]) -> None:
        """Deliver the chunks one by one, checkpointing the file's offset after each commit."""
        for chunk in chunks:
            self._check_unchanged(fh, st)  # never send bytes of a file that changed meanwhile
            self.output.deliver([chunk])
            self.metrics.chunks_out.inc()
            self.metrics.bytes_out.inc(len(chunk.data))
            self._state["file"]["offset"] = chunk.seq_id
            self._save_state()

    @staticmethod
    def _check_unchanged(fh, st: os.stat_result) -> None:
        now = os.fstat(fh.fileno())
        if now.st_size != st.st_size or now.st_mtime_ns != st.st_mtime_ns:
            raise FileChanged(f"size {st.st_size} -> {now.st_size}, mtime {st.st_mtime_ns} -> {now.st_mtime_ns}")

    def _complete(self, path: Path, key: tuple) -> None:
        try:
            if self.config.on_complete == "delete":
                path.unlink(missing_ok=True)
            else:
                target = path.with_name(path.name + self.config.completed_suffix)
                if target.exists():
                    self.files_failed.inc()
                    self.metrics.errors.inc()
                    self.log.error("source %s: %s was ingested but %s already exists; left in place, not retried "
                                   "until it changes", self.name, path, target.name)
                    self._failed.add(key)
                    self._state.pop("file", None)
                    self._save_state()
                    return
                os.rename(path, target)
        except OSError as exc:
            self.metrics.errors.inc()
            self._failed.add(key)
            self.log.error("source %s: cannot %s %s after ingesting it: %s", self.name, self.config.on_complete,
                           path, exc)
        self.files_done.inc()
        self._state.pop("file", None)
        self._save_state()
