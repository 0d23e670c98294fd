"""ConsoleSink: prints records, or one summary line per chunk, to stdout or stderr."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import ClassVar

from logflume.chunk import Chunk
from logflume.settings import Enum, Setting
from logflume.sink import Sink


class ConsoleSink(Sink):
    settings: ClassVar[dict[str, Setting]] = {
        "format": Setting(Enum("records", "summary"), "summary", "Print the raw records or one line per chunk"),
        "target": Setting(Enum("stdout", "stderr"), "stdout", "Where to print"),
    }

    def deliver(self, chunks: Sequence[Chunk]) -> None:
        out = sys.stdout if self.config.target == "stdout" else sys.stderr
        buf = out.buffer
        for c in chunks:
            if self.config.format == "records":
                buf.write(c.data)
                if len(c.data) and c.data[-1:] != b"\n":
                    buf.write(b"\n")
            else:
                n = sum(1 for _ in c.record_spans())
                buf.write(
                    f"{c.source} {c.stream} datatype={c.datatype} epoch={c.epoch} "
                    f"offsets={c.start}..{c.seq_id} bytes={len(c)} records={n}"
                    f"{' flags=' + ','.join(c.flags) if c.flags else ''}\n".encode()
                )
        buf.flush()
        self.metrics.chunks_in.inc(len(chunks))
        self.metrics.bytes_in.inc(sum(len(c) for c in chunks))
