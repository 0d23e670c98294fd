"""Helper process for the crash tests: delivers chunks to a store and prints each acknowledged one.

Usage: ``python -m tests.store.crash_writer CONFIG_JSON``; the config names the sink type, its settings,
the agent name and data dir.  Prints ``ACK <stream> <seq_id>`` once ``deliver`` returned, then more,
until killed (or after ``max_batches``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from logflume.component import Context
from logflume.registry import resolve
from logflume.settings import parse_settings
from tests.store.conftest import ChunkMaker


def main() -> None:
    cfg = json.loads(sys.argv[1])
    context = Context(agent_name=cfg["agent_name"], data_dir=Path(cfg["data_dir"]))
    cls = resolve("sink", cfg["type"])
    sink = cls("store", parse_settings(cls.schema(), cfg["settings"], "store", None), context)
    sink.start()
    maker = ChunkMaker(size=cfg.get("chunk_size", 3000))
    out = sys.stdout
    for _ in range(cfg.get("max_batches", 100_000)):
        batch = maker.batch(cfg.get("batch", 5))
        sink.deliver(batch)
        out.write("".join(f"ACK {c.stream} {c.seq_id}\n" for c in batch))
        out.flush()
    sink.stop()


if __name__ == "__main__":
    main()
