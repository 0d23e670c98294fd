"""UpperFileSink: appends the records upper-cased to a local file, fsynced before acknowledging."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import ClassVar

from logflume.chunk import Chunk
from logflume.settings import Setting, Str
from logflume.sink import Sink


class UpperFileSink(Sink):
    settings: ClassVar[dict[str, Setting]] = {"path": Setting(Str(), doc="Output file")}

    def deliver(self, chunks: Sequence[Chunk]) -> None:
        # Return only once the data is durable; raise to make the runtime roll back and retry.
        with open(self.config.path, "ab") as f:
            for chunk in chunks:
                f.write(bytes(chunk.data).upper())
            f.flush()
            os.fsync(f.fileno())
