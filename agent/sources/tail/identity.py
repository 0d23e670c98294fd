"""Which file is this? A fingerprint of its first bytes, with device + inode as hints.

Device and inode alone are not enough: a deleted file's inode is soon given
to a new file, and resuming the new file at the old file's offset would skip
its first bytes; a copy (copytruncate) or a file whose device number changed
has other numbers but the same bytes.  The fingerprint (a hash of the first
``FINGERPRINT_BYTES``, or of as many as the file had when first seen) is what
decides.  A file seen while shorter than that is re-fingerprinted over more
bytes as it grows, after checking that what was already hashed did not change.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

#: How many leading bytes identify a file (Filebeat's fingerprint default is 1 KiB).
FINGERPRINT_BYTES = 1024


def fingerprint(data: bytes) -> str:
    """blake2b-128 hex of a file's leading bytes."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def read_head(fd: int) -> bytes:
    """The leading bytes that identify an open file (as many as it has, up to the maximum)."""
    return os.pread(fd, FINGERPRINT_BYTES, 0)


@dataclass
class FileIdentity:
    dev: int
    ino: int
    fp_len: int  # how many leading bytes ``fp`` covers
    fp: str  # blake2b-128 hex of those bytes

    @property
    def key(self) -> tuple[int, int]:
        return (self.dev, self.ino)

    @classmethod
    def of_fd(cls, fd: int, st: os.stat_result | None = None) -> FileIdentity:
        """Identity of an open file, fingerprinting as many leading bytes as it has (up to the maximum)."""
        st = st or os.fstat(fd)
        return cls.of_head(st, read_head(fd))

    @classmethod
    def of_head(cls, st: os.stat_result, head: bytes) -> FileIdentity:
        return cls(st.st_dev, st.st_ino, len(head), fingerprint(head))

    @property
    def full(self) -> bool:
        """Does the fingerprint cover the maximum (a file shorter than that may still change identity)?"""
        return self.fp_len >= FINGERPRINT_BYTES

    def head_matches(self, head: bytes) -> bool:
        """Do these leading bytes (of any file) start with the bytes this fingerprint covers?"""
        return len(head) >= self.fp_len and fingerprint(head[:self.fp_len]) == self.fp

    def matches(self, fd: int) -> bool:
        """True when the open file has the same device, inode and leading bytes."""
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != self.key:
            return False
        if self.fp_len == 0:
            return True
        head = os.pread(fd, self.fp_len, 0)
        return len(head) == self.fp_len and fingerprint(head) == self.fp

    def extend(self, fd: int, size: int) -> None:
        """Hash more leading bytes once the file has them (call only after :meth:`matches`)."""
        if self.fp_len < FINGERPRINT_BYTES and size > self.fp_len:
            head = read_head(fd)
            self.fp_len, self.fp = len(head), fingerprint(head)

    def epoch(self) -> str:
        """The epoch string of a file first seen with this identity."""
        return f"{self.dev}:{self.ino}:{self.fp[:16]}"
