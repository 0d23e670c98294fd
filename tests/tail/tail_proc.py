"""A process that runs one TailSource into a DurableFileOutput: for SIGKILL tests of the source alone.

``python -m tests.tail.tail_proc SETTINGS_JSON DATA_DIR OUT`` runs until SIGTERM; with
``TAIL_PROC_UID`` set it drops to that user (and group) id before starting.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from agent.sources.tail import TailSource
from logflume.chunk import Chunk
from logflume.component import Context
from logflume.settings import parse_settings
from logflume.signals import DaemonSignals
from logflume.source import SourceOutput
from logflume.testing.recording_sink import append_chunks, open_chunk_file


class DurableFileOutput(SourceOutput):
    """A source output whose commit is an fsynced append (read back with ``read_chunks``): a durable channel
    (a chunk torn by the last kill is cut off when the next process opens it)."""

    def __init__(self, path: str | Path) -> None:
        self.fd = open_chunk_file(path)

    def deliver(self, chunks: Sequence[Chunk]) -> None:
        append_chunks(self.fd, chunks)


def main() -> int:
    raw, data_dir, out = json.loads(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    values = parse_settings(TailSource.schema(), {"channels": ["ch"], **raw}, "sources.t", None)
    source = TailSource("t", values, Context(agent_name="testhost", data_dir=data_dir))
    uid = int(os.environ.get("TAIL_PROC_UID", "-1"))
    if uid >= 0:  # run unprivileged (a root process reads every file): everything is imported by now
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    signals = DaemonSignals(logging.getLogger("tail_proc"), reload=False)
    signals.install()
    source.start(DurableFileOutput(out))
    print("started", flush=True)
    signals.wait()
    source.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
