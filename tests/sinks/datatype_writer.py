"""Helper process for the crash test: a ``{datatype}/{date}`` store fed chunks of three datatypes.

Usage: ``python -m tests.sinks.datatype_writer ROOT STATE_DIR``.  Prints ``ACK <stream> <seq_id>`` once
``deliver`` returned, until killed.
"""

from __future__ import annotations

import sys
from pathlib import Path

from logflume.component import Context
from logflume.settings import parse_settings
from sinks.seqfile import SeqFileSink
from tests.sinks.conftest import TypedChunkMaker


def main() -> None:
    root, state = sys.argv[1], sys.argv[2]
    raw = {"url": root, "path": "{datatype}/{date}", "roll_size": "200KiB"}
    sink = SeqFileSink("store", parse_settings(SeqFileSink.schema(), raw, "store", None),
                       Context(agent_name="coll1", data_dir=Path(state)))
    sink.start()
    maker = TypedChunkMaker(size=3000)
    out = sys.stdout
    while True:
        batch = maker.batch(5)
        sink.deliver(batch)
        out.write("".join(f"ACK {c.stream} {c.seq_id}\n" for c in batch))
        out.flush()


if __name__ == "__main__":
    main()
