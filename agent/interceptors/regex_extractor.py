"""regex_extractor: tags from the stream name (a file's path), e.g. ``/var/log/(?P<app>[^/]+)/``."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import ClassVar

from logflume.chunk import MAX_TAG_VALUE_LEN, Chunk
from logflume.interceptor import Interceptor, with_tags
from logflume.settings import Bool, Enum, Regex, Setting, Str

#: Control characters in a path would make collectors refuse the chunk: they become '?'.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Streams whose tags are remembered (a tail source follows at most a few thousand files).
_CACHE_MAX = 4096


class RegexExtractorInterceptor(Interceptor):
    """Sets a tag per named group of ``pattern`` searched in the chunk's stream (or datatype).

    A chunk whose stream does not match keeps its tags.  The result is cached per stream, so the
    regex runs once per file, not once per chunk.
    """

    settings: ClassVar[dict[str, Setting]] = {
        "pattern": Setting(Regex(), doc="Regular expression with named groups: each group that matched sets a tag"),
        "field": Setting(Enum("stream", "datatype"), "stream", "What the pattern is searched in"),
        "prefix": Setting(Str(), "", "Prefix of the tag names (e.g. 'k8s.')"),
        "preserve_existing": Setting(Bool(), False, "Keep a tag the chunk already has"),
    }

    def configure(self) -> None:
        self.regex = re.compile(self.config.pattern)
        if not self.regex.groupindex:
            raise ValueError(f"pattern {self.config.pattern!r} has no named group (?P<name>...): it would set no tag")
        problem = Chunk("x", "x", "Raw", 0, "", b"", tags={self.config.prefix + g: "" for g in self.regex.groupindex}
                        ).metadata_error()
        if problem:
            raise ValueError(f"prefix and group names make tag names collectors refuse: {problem}")
        self._cache: dict[str, dict[str, str]] = {}

    def _tags(self, value: str) -> dict[str, str]:
        tags = self._cache.get(value)
        if tags is None:
            m = self.regex.search(value)
            tags = {}
            if m is not None:
                tags = {self.config.prefix + k: _CONTROL.sub("?", v[:MAX_TAG_VALUE_LEN])
                        for k, v in m.groupdict().items() if v is not None}
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[value] = tags
        return tags

    def intercept(self, chunks: Sequence[Chunk]) -> Sequence[Chunk]:
        stream_field = self.config.field == "stream"
        keep = self.config.preserve_existing
        for chunk in chunks:
            tags = self._tags(chunk.stream if stream_field else chunk.datatype)
            if tags:
                with_tags(chunk, tags, keep)
        return chunks
