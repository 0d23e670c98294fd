"""``python -X tracemalloc=8 -m bench.copies_hook agent|collector ...``: logflume, watched for big allocations.

A daemon thread takes a tracemalloc snapshot every few milliseconds and notes each block of at
least 1 MiB by the Python line that allocated it (a block seen in consecutive snapshots counts
once).  At exit the tally goes to ``$LOGFLUME_COPIES_TRACE/<command>.bigallocs.json``.  A block
that lives shorter than the interval can be missed; the strace counts of ``bench/copies.py`` are
the complete ones, this only names the lines.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path

BIG = 1 << 20
INTERVAL = 0.003


def _where(tb: tracemalloc.Traceback) -> str:
    frames = [f for f in tb if "tracemalloc" not in f.filename]
    repo = str(Path(__file__).resolve().parent.parent) + os.sep
    inner = [f"{f.filename.replace(repo, '')}:{f.lineno}" for f in reversed(frames[-3:])]  # innermost first
    return " < ".join(inner)


def watch(out: Path, stop: threading.Event) -> None:
    tally: dict[str, list[int]] = {}
    alive: set[tuple[str, int]] = set()
    go = out.parent / "watch-now"
    while not go.exists() and not stop.is_set():  # snapshots during start-up would only slow it
        time.sleep(0.05)
    while not stop.is_set():
        snap = tracemalloc.take_snapshot()
        now = set()
        for t in snap.traces:
            if t.size >= BIG:
                key = (_where(t.traceback), t.size)
                now.add(key)
                if key not in alive:
                    c = tally.setdefault(key[0], [0, 0])
                    c[0] += 1
                    c[1] += t.size
        alive = now
        rows = sorted(({"where": w, "count": c, "bytes": b} for w, (c, b) in tally.items()),
                      key=lambda r: -r["bytes"])
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows, indent=1))
        os.replace(tmp, out)
        time.sleep(INTERVAL)


def main() -> int:
    from logflume.cli import main as cli_main

    out = Path(os.environ["LOGFLUME_COPIES_TRACE"]) / f"{sys.argv[1]}.bigallocs.json"
    stop = threading.Event()
    threading.Thread(target=watch, args=(out, stop), daemon=True, name="copies-watch").start()
    atexit.register(stop.set)
    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
