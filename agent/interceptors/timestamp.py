"""timestamp: the chunk's read time as a tag, for routing and partitioning by time downstream."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import ClassVar

from logflume.chunk import Chunk
from logflume.interceptor import Interceptor, check_tags, with_tags
from logflume.settings import Bool, Setting, Str


class TimestampInterceptor(Interceptor):
    """Tags each chunk with the time it was read (Flume's timestamp header): milliseconds or a strftime format."""

    settings: ClassVar[dict[str, Setting]] = {
        "tag": Setting(Str(), "timestamp", "Tag name to set"),
        "format": Setting(Str(), "ms", "'ms' (milliseconds since the epoch) or a strftime format, e.g. '%Y-%m-%d'"),
        "utc": Setting(Bool(), True, "Format in UTC (else local time)"),
        "preserve_existing": Setting(Bool(), False, "Keep the tag when the chunk already has it"),
    }

    def configure(self) -> None:
        fmt = self.config.format
        if fmt != "ms" and "%" not in fmt:
            raise ValueError(f"format {fmt!r}: expected 'ms' or a strftime format with % fields")
        self._last: tuple[int, str] = (-1, "")
        check_tags({self.config.tag: self._value(1_767_225_599_999)})  # a sample value: 2025-12-31 23:59:59

    def _value(self, ms: int) -> str:
        if self.config.format == "ms":
            return str(ms)
        second = ms // 1000
        if self._last[0] != second:  # chunks of one batch share their second: format once
            t = time.gmtime(second) if self.config.utc else time.localtime(second)
            self._last = (second, time.strftime(self.config.format, t))
        return self._last[1]

    def intercept(self, chunks: Sequence[Chunk]) -> Sequence[Chunk]:
        tag, keep = self.config.tag, self.config.preserve_existing
        for chunk in chunks:
            with_tags(chunk, {tag: self._value(chunk.timestamp)}, keep)
        return chunks
