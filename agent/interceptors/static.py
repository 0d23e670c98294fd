"""static: fixed tags on every chunk (Flume's static interceptor)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from logflume.chunk import Chunk
from logflume.interceptor import Interceptor, with_tags
from logflume.settings import Bool, Setting, Str
from logflume.source import ChunkTags


class StaticInterceptor(Interceptor):
    """Sets fixed tags on every chunk; unlike a source's ``tags`` it can keep values set upstream."""

    settings: ClassVar[dict[str, Setting]] = {
        "tags": Setting(ChunkTags(Str()), doc="Tags to set"),
        "preserve_existing": Setting(Bool(), True, "Keep a tag the chunk already has"),
    }

    def intercept(self, chunks: Sequence[Chunk]) -> Sequence[Chunk]:
        for chunk in chunks:
            with_tags(chunk, self.config.tags, self.config.preserve_existing)
        return chunks
