"""One followed file: its identity, open descriptor, chunker and committed position.

The descriptor, not the path, is what is read: once a file is open, renames
and deletion do not matter, and an inode cannot be reused while we hold it.
Reading uses ``pread`` at the chunker's position, so closing and reopening a
file (``max_open_files``, ``close_inactive``) never loses the place.

Two offsets are kept: where reading has got to (``read_pos``: emitted plus
held bytes) and what the channel has committed (``committed``).  Only the
latter goes into the position file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from agent.sources.tail.checkpoint import Position
from agent.sources.tail.identity import FileIdentity
from logflume.chunk import Chunk
from logflume.chunking import RecordChunker

log = logging.getLogger("logflume.source.tail")

#: Bytes read before checking the file was not truncated meanwhile (and feeding them to the chunker).
VERIFY_EVERY = 4 << 20

#: (stream, epoch, start_offset, datatype, tags) -> a chunker for that stream.
ChunkerFactory = Callable[[str, str, int, str, dict[str, str]], RecordChunker]


@dataclass
class ReadResult:
    chunks: list[Chunk] = field(default_factory=list)
    nread: int = 0
    eof: bool = False
    done: bool = False  # the file was read to its end and let go (deleted, or rotated away and quiet)


class TailedFile:
    def __init__(
        self,
        ident: FileIdentity,
        *,
        epoch: str,
        stream: str,
        path: str,
        datatype: str,
        tags: dict[str, str],
        offset: int,
        truncations: int,
        make_chunker: ChunkerFactory,
        now: float,
        last_seen: float,
    ) -> None:
        self.ident = ident
        self.stream = stream
        self.path = path
        self.datatype = datatype
        self.tags = tags
        self.truncations = truncations
        # Epochs after a truncation: this inode's numbers with the first generation's fingerprint.  A copy
        # continuing another file's generation gets epochs of its own if it is ever truncated itself.
        self.base_epoch = f"{ident.dev}:{ident.ino}:{epoch.split('#', 1)[0].rsplit(':', 1)[-1]}"
        self._make_chunker = make_chunker
        self.chunker = make_chunker(stream, epoch, offset, datatype, tags)
        self.committed = offset
        self.committed_epoch = epoch
        self.committed_truncations = truncations
        self.committed_ident = replace(ident)
        self._ending: list[Position] = []  # generations truncated away, not yet committed to their end
        self.ended: list[Position] = []  # ... committed: the source remembers them for their copies
        self.fd: int | None = None
        self.size = -1  # size at the last fstat
        self.last_active = now  # monotonic time bytes were last read (or the file was opened)
        self.last_seen = last_seen  # wall-clock time the file was last seen at a watched path
        self.rotated_at: float | None = None  # when it stopped being at a watched path
        self.wants_read = True  # a scan or event saw it grow since the last read to EOF
        self.at_eof = False
        self.deleted = False  # its last link is gone: nothing can find it again
        self.announced = False  # the position file on disk names it (its stream and current epoch)

    @property
    def epoch(self) -> str:
        return self.chunker.epoch

    @property
    def read_pos(self) -> int:
        return self.chunker.offset + self.chunker.pending_bytes

    @property
    def key(self) -> tuple[int, int]:
        return self.ident.key

    @property
    def lag(self) -> int:
        """Bytes of the file not yet committed to the channel."""
        return max(self.size - self.committed, 0)

    # -- descriptor -----------------------------------------------------------------------------

    def reopen(self) -> bool:
        """Open the file again by its last known path; False if that is no longer the same file."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return False
        try:
            same = self.ident.matches(fd)
        except OSError:
            same = False
        if not same:
            os.close(fd)
            return False
        self.fd = fd
        return True

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)

    # -- reading --------------------------------------------------------------------------------

    def read(self, now: float, budget: int, block: int, rotate_wait: float) -> ReadResult:
        """Read up to ``budget`` bytes into the chunker; handles truncation, deletion and rotation."""
        out = ReadResult()
        assert self.fd is not None
        st = os.fstat(self.fd)
        if st.st_size != self.size:
            if st.st_size < self.read_pos or not self._same_head():
                out.chunks += self._new_epoch(st)
            self.ident.extend(self.fd, st.st_size)
            self.size = st.st_size
        pos = self.read_pos
        while out.nread < budget and pos < st.st_size:
            # Read a slice, check the file was not truncated meanwhile, then feed it: the bytes
            # held before the check stay small whatever the budget.
            blocks, got = self._read_slice(pos, min(budget - out.nread, VERIFY_EVERY), block)
            if not got:
                break
            out.nread += got
            pos += got
            # A copytruncate between the fstat and the reads would have handed us the new content's
            # bytes at the old offsets: look again before trusting them.
            after = os.fstat(self.fd)
            if after.st_size < pos or not self._same_head():
                out.chunks += self._new_epoch(after)
                out.eof = False
                self.wants_read = True
                return out
            for data in blocks:
                out.chunks += self.chunker.feed(data, now)
        if pos >= st.st_size:
            out.eof = True
        if out.nread:
            self.last_active = now
            self.size = max(self.size, pos)
        self.at_eof = out.eof
        if out.eof:
            self.wants_read = False
            if st.st_nlink == 0:
                self.deleted = True
                if self.rotated_at is None:
                    self.rotated_at = now  # deleted while open: read to its end, then close
            if self.rotated_at is not None and now - max(self.last_active, self.rotated_at) >= rotate_wait:
                if os.fstat(self.fd).st_size <= pos:  # nothing was appended since we looked
                    out.chunks += self.chunker.finish()
                    out.done = True
                    return out
        out.chunks += self.chunker.poll(now, caught_up=out.eof)
        return out

    def _read_slice(self, pos: int, want: int, block: int) -> tuple[list[bytes], int]:
        """Up to ``want`` bytes from ``pos`` in ``block``-sized reads: (blocks, bytes read)."""
        assert self.fd is not None
        blocks: list[bytes] = []
        start = pos
        while want > 0:
            data = os.pread(self.fd, min(block, want), pos)  # EINTR is retried by Python itself (PEP 475)
            if not data:
                break
            blocks.append(data)
            want -= len(data)
            pos += len(data)
        return blocks, pos - start

    def _same_head(self) -> bool:
        assert self.fd is not None
        return self.ident.matches(self.fd)

    def _new_epoch(self, st: os.stat_result) -> list[Chunk]:
        """The file was truncated (copytruncate): send what was read, then number from 0 again."""
        assert self.fd is not None
        tail = self.chunker.finish()
        old = self.ident
        self._ending.append(Position(
            dev=old.dev, ino=old.ino, fp_len=old.fp_len, fp=old.fp, epoch=self.chunker.epoch, stream=self.stream,
            path=self.path, offset=self.chunker.offset, seq_id=self.chunker.offset, truncations=self.truncations,
            last_seen=self.last_seen, ended=True,
        ))
        self.truncations += 1
        epoch = f"{self.base_epoch}#{self.truncations}"
        log.info("%s was truncated (size %d < position %d, or its first bytes changed): reading it "
                 "again from 0 as epoch %s", self.path, st.st_size, self.read_pos, epoch)
        self.ident = FileIdentity.of_fd(self.fd, st)
        self.chunker = self._make_chunker(self.stream, epoch, 0, self.datatype, self.tags)
        self.size = -1
        self.announced = False  # no position on disk names the new epoch yet
        return tail

    def rewind(self) -> None:
        """Forget what was read but not committed (after an unexpected error): it is read again."""
        self.truncations = self.committed_truncations
        self._ending = []
        self.ident = replace(self.committed_ident)
        self.chunker = self._make_chunker(self.stream, self.committed_epoch, self.committed, self.datatype,
                                          self.tags)
        self.size = -1
        self.wants_read = True

    # -- committing -----------------------------------------------------------------------------

    def mark_committed(self) -> None:
        """Everything emitted so far is in the channel: it is now safe to checkpoint it."""
        self.committed = self.chunker.offset
        self.committed_epoch = self.chunker.epoch
        self.committed_truncations = self.truncations
        self.committed_ident = replace(self.ident)
        self.ended += self._ending
        self._ending = []

    def positions(self) -> list[Position]:
        """What the position file is to say of this file: its committed position; while a truncation is not
        committed yet, the generations truncated away (ended, at what was committed of them) and the new
        epoch at 0, so that a restart takes the file for that epoch, not for a new file."""
        if not self._ending:
            return [self.position()]
        out = []
        for pos in self._ending:
            done = self.committed if pos.epoch == self.committed_epoch else 0
            out.append(replace(pos, offset=done, seq_id=done))
        ident = self.ident
        out.append(Position(
            dev=ident.dev, ino=ident.ino, fp_len=ident.fp_len, fp=ident.fp, epoch=self.epoch, stream=self.stream,
            path=self.path, offset=0, seq_id=0, truncations=self.truncations, last_seen=self.last_seen,
        ))
        return out

    def position(self) -> Position:
        """The committed position; fingerprinted over as many bytes as were read of that generation."""
        ident = self.ident if self.epoch == self.committed_epoch else self.committed_ident
        return Position(
            dev=ident.dev, ino=ident.ino, fp_len=ident.fp_len, fp=ident.fp,
            epoch=self.committed_epoch, stream=self.stream, path=self.path, offset=self.committed,
            seq_id=self.committed, truncations=self.committed_truncations, last_seen=self.last_seen,
        )
