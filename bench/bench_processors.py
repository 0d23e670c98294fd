"""MB per CPU second of each built-in batch processor alone, on the lines ``bench_jobs.py`` generates.

Demux's end-to-end figure mixes datatypes, record cutting and the Parquet writer; this one isolates
the parsing.  For each processor it runs, in the same process and on the same batches, the
compiled pass (``jobs/processors/_columns.c``), the Arrow path that runs where that is not built
(compute kernels; Arrow's JSON reader for json), and the per-record path (``process()`` per
record) as the baseline.

    .venv/bin/python bench/bench_processors.py [--mb 32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

import pyarrow as pa

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_jobs import T0, _line  # noqa: E402
from logflume.processor import BatchContext, RecordContext, build_processor  # noqa: E402

BATCH = 8192  # records per process_batch call (demux's batches are of this order)


def lines(kind: str, mb: int) -> list[bytes]:
    rng = random.Random(7)
    out, size, i = [], 0, 0
    while size < mb << 20:
        line = _line(kind, rng, i).rstrip(b"\n")
        out.append(line)
        size += len(line) + 1
        i += 1
    return out


def cpu() -> float:
    return time.process_time()  # this process's CPU time, finer than os.times()' clock ticks


def run(proc, batches: list[pa.Array], contexts: list[BatchContext], per_record: bool) -> float:
    """CPU seconds to parse every batch."""
    start = cpu()
    for arr, where in zip(batches, contexts, strict=True):
        result = proc.process_each(arr, where) if per_record else proc.process_batch(arr, where)
        assert result.fields.num_rows == len(arr)
    return cpu() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=32, help="MiB of lines per datatype (default 32)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per contender (default 3)")
    args = ap.parse_args()
    import jobs.processors.access as access_module
    import jobs.processors.json as json_module
    import jobs.processors.syslog as syslog_module

    compiled = syslog_module._compiled
    print(f"{args.mb} MiB per datatype, batches of {BATCH}; load average {os.getloadavg()[0]:.1f}; "
          f"MB per CPU second, best of {args.rounds} alternating rounds")
    cases = [("syslog", "SysLog"), ("access", "NginxAccess"), ("json", "Json")]
    for name, kind in cases:
        data = lines(kind, args.mb)
        nbytes = sum(len(x) + 1 for x in data)
        batches = [pa.array(data[i:i + BATCH], pa.binary()) for i in range(0, len(data), BATCH)]
        ctx = RecordContext("h", "/s", "e", 0, kind, T0)
        contexts = [BatchContext.of_chunk(ctx, list(range(len(b)))) for b in batches]
        proc = build_processor(name)
        module = {"syslog": syslog_module, "access": access_module, "json": json_module}[name]
        contenders: list[tuple[str, bool, object]] = []
        if compiled is not None:
            contenders.append(("compiled pass", False, compiled))
        contenders.append(("Arrow reader" if name == "json" else "Arrow kernels", False, None))
        contenders.append(("per record (baseline)", True, None))
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            for label, per_record, pass_ in contenders:
                module._compiled = pass_
                secs = run(proc, batches, contexts, per_record)
                best[label] = min(best.get(label, float("inf")), secs)
        module._compiled = compiled
        base = nbytes / 1e6 / best["per record (baseline)"]
        for label, *_ in contenders:
            mbs = nbytes / 1e6 / best[label]
            print(f"  {name:7} {label:24} {mbs:8.1f} MB/CPU-s  {len(data) / best[label]:12,.0f} records/CPU-s  "
                  f"{mbs / base:6.1f}x per record")


if __name__ == "__main__":
    main()
