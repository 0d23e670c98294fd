"""mask: redact a pattern (card numbers, tokens) in place, keeping every byte's stream offset.

The mask overwrites each matched byte with ``char`` (newlines of
newline-delimited records are left alone, so records stay records), so a
masked chunk has the length and the record ends of the bytes it came from:
each record keeps its stream offset.  Its bytes are no longer the source's,
so the chunk moves to a derived epoch, ``EPOCH~<transform id>`` (see
``logflume/interceptor.py``): archive then drops duplicates and proves
overlaps among chunks masked the same way, and never compares masked with
unmasked bytes, or two masks with each other.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import ClassVar

from agent.interceptors.records import compile_pattern, matches_in_records
from logflume.chunk import Chunk
from logflume.interceptor import Interceptor, derive_epoch
from logflume.settings import Optional, Regex, Setting, Str

_NOT_NEWLINE = re.compile(rb"[^\n]")


class MaskInterceptor(Interceptor):
    """Overwrites every match of ``pattern`` (or only its group ``group``) with ``char``, byte for byte.

    Every chunk that passes moves to the derived epoch, masked or not, so one numbering space holds
    one version of the stream's bytes.
    """

    record_level: ClassVar[bool] = True
    settings: ClassVar[dict[str, Setting]] = {
        "pattern": Setting(Regex(), doc="Regular expression to redact (bytes, searched within each record)"),
        "group": Setting(Optional(Str()), None, "Redact only this named group of each match (e.g. keep a prefix)"),
        "char": Setting(Str(), "*", "The single ASCII character written over each redacted byte"),
    }

    def configure(self) -> None:
        self.regex = compile_pattern(self.config.pattern)
        group = self.config.group
        if group is not None and group not in self.regex.groupindex:
            raise ValueError(f"group {group!r} is not a named group of pattern {self.config.pattern!r}")
        char = self.config.char
        if len(char) != 1 or not 32 <= ord(char) < 127:
            raise ValueError(f"char {char!r}: expected one printable ASCII character")
        self.fill = char.encode()
        self.transform = self.transform_id()
        self.bytes_masked = self.metrics.counter("bytes_masked", "Bytes overwritten by a mask")

    def _spans(self, chunk: Chunk):
        group = self.config.group or 0
        for m in matches_in_records(self.regex, chunk):
            a, b = m.span(group)
            if b > a:
                yield a, b

    def intercept(self, chunks: Sequence[Chunk]) -> Sequence[Chunk]:
        out: list[Chunk] = []
        fill, newline_records = self.fill, None
        for chunk in chunks:
            data: bytearray | None = None
            newline_records = chunk.record_ends is None
            masked = 0
            for a, b in self._spans(chunk):
                if data is None:
                    data = bytearray(chunk.data)
                if newline_records:
                    data[a:b] = _NOT_NEWLINE.sub(fill, data[a:b])
                else:
                    data[a:b] = fill * (b - a)
                masked += b - a
            if masked:
                self.bytes_masked.inc(masked)
            out.append(dataclasses.replace(chunk, epoch=derive_epoch(chunk.epoch, self.transform),
                                           data=chunk.data if data is None else data))
        return out
