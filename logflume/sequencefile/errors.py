"""Errors raised while reading or writing SequenceFiles.

Every reading error carries the byte offset where the file stopped making
sense, so crash recovery can truncate a torn file and a person can look at the
bytes with ``xxd -s OFFSET``.
"""

from __future__ import annotations


class SequenceFileError(Exception):
    """A SequenceFile that cannot be read (or a value that cannot be written)."""

    def __init__(self, offset: int | None, reason: str) -> None:
        self.offset = offset
        self.reason = reason
        super().__init__(reason if offset is None else f"{reason} (at byte {offset})")


class CorruptFileError(SequenceFileError):
    """The bytes contradict the format: bad magic, wrong sync marker, impossible length."""


class TruncatedFileError(SequenceFileError):
    """The file ends inside a header, record or block (a torn write)."""
