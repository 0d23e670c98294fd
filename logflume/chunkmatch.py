"""Which chunks a rule takes, by their metadata: globs on datatype, stream and tags.

One matcher for every place that picks chunks by what they are: an agent's
multiplexing channel selector (``logflume.selector``) and a collector's store
routes (``collector.routing``) take the same ``match`` section and mean the
same by it.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

from logflume.chunk import Chunk
from logflume.settings import MapOf, Optional, Setting, Str, Values

#: The ``match`` section: every field given must match.
MATCH_SETTINGS: dict[str, Setting] = {
    "datatype": Setting(Optional(Str()), None, "Glob on the chunk's datatype"),
    "stream": Setting(Optional(Str()), None, "Glob on the chunk's stream: a file's path, a Scribe category, "
                                             "syslog:APP, ..."),
    "tags": Setting(MapOf(Str()), {}, "Tag name -> glob on its value; the chunk must carry every tag named"),
}


@dataclass(frozen=True)
class ChunkMatch:
    """What a rule takes: every field given must match (globs, case-sensitive); none given matches all."""

    datatype: str | None = None
    stream: str | None = None
    tags: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_values(cls, values: Values) -> ChunkMatch:
        """From a parsed ``match`` section (:data:`MATCH_SETTINGS`)."""
        return cls(values.datatype, values.stream, tuple(values.tags.items()))

    def matches(self, chunk: Chunk) -> bool:
        if self.datatype is not None and not fnmatch.fnmatchcase(chunk.datatype, self.datatype):
            return False
        if self.stream is not None and not fnmatch.fnmatchcase(chunk.stream, self.stream):
            return False
        for name, pattern in self.tags:
            value = chunk.tags.get(name)
            if value is None or not fnmatch.fnmatchcase(value, pattern):
                return False
        return True

    def render(self) -> dict[str, Any]:
        """The ``match`` section again, with only the fields given."""
        out: dict[str, Any] = {}
        if self.datatype is not None:
            out["datatype"] = self.datatype
        if self.stream is not None:
            out["stream"] = self.stream
        if self.tags:
            out["tags"] = dict(self.tags)
        return out
