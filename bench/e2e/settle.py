"""Start every contender from a clean page cache: ``sync``, then wait until dirty pages are written back.

Without it a run pays for the write-back of whatever ran before it: the 1 GiB of generated input,
the previous contender's output.  That is how the old ``limit`` measured 425 MB/s while a copy
minutes later ran at 2.1-2.5 GB/s (issue 20).  What was found and how long it took to settle is
kept with each result, so a run that could not settle (another process writing all the time) says so.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

DIRTY_LIMIT = 32 << 20  # Dirty + Writeback at most this many bytes counts as settled
TIMEOUT = 60.0


def dirty_bytes() -> tuple[int, int]:
    """(Dirty, Writeback) from /proc/meminfo, in bytes."""
    dirty = writeback = 0
    with open("/proc/meminfo", "rb") as f:
        for line in f:
            if line.startswith(b"Dirty:"):
                dirty = int(line.split()[1]) << 10
            elif line.startswith(b"Writeback:"):
                writeback = int(line.split()[1]) << 10
    return dirty, writeback


def settle(limit: int = DIRTY_LIMIT, timeout: float = TIMEOUT, interval: float = 0.1) -> dict[str, Any]:
    """``sync`` until Dirty + Writeback <= ``limit`` or ``timeout`` passed; return what was seen."""
    t0 = time.monotonic()
    before = dirty_bytes()
    os.sync()
    now = dirty_bytes()
    last_sync = time.monotonic()
    while sum(now) > limit and time.monotonic() - t0 < timeout:
        time.sleep(interval)
        if time.monotonic() - last_sync >= 2.0:  # others keep dirtying pages: write them back again
            os.sync()
            last_sync = time.monotonic()
        now = dirty_bytes()
    return {"dirty_before": before[0], "writeback_before": before[1], "dirty_after": now[0],
            "writeback_after": now[1], "settle_seconds": round(time.monotonic() - t0, 3),
            "settled": sum(now) <= limit}


def run_settled(cases: Iterable[tuple[str, Callable[[], dict[str, Any]]]], kind: str,
                summary: Callable[[dict[str, Any]], str],
                errors: tuple[type[BaseException], ...] = (RuntimeError, TimeoutError, OSError, ValueError),
                ) -> list[dict[str, Any]]:
    """Run each (name, case) after :func:`settle`: its row, with the 1-minute load before it and what settle
    found, and ``case`` naming it (a row's ``contender`` is free text); a case that raises one of ``errors``
    gives an error row instead, so one contender's failure does not cost the others' figures.  Prints a line
    a case (``summary(row)`` when measured)."""
    rows = []
    for name, case in cases:
        st = settle()
        load = os.getloadavg()[0]
        try:
            row = case()
        except errors as exc:
            row = {"contender": name, "error": str(exc)[-300:]}
        row["case"] = name
        row["loadavg_1m_before"] = load
        row["settle"] = st
        rows.append(row)
        if "error" in row:
            print(f"  {kind} {name}: not measured: {row['error']}", flush=True)
        else:
            print(f"  {kind} {row['contender']}: {summary(row)}", flush=True)
    return rows
