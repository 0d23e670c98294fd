"""Archive and demux throughput on generated sink files, against plain reading of the same files.

    .venv/bin/python bench/bench_jobs.py               # 1 GiB of sink files
    .venv/bin/python bench/bench_jobs.py --size-mb 128 # quicker

Generates sink files (syslog RFC 3164 and 5424, access-log and JSON streams,
~2% unparsable lines; ~5% of chunks delivered twice, as retries are), then
measures in the same run:

* baseline — read every file with the SequenceFile reader and count the
  records of every chunk, no processing (one core);
* archive  — ``jobs.archive`` (one core: de-duplication is one ordered pass);
* demux    — ``jobs.demux`` local engine on ``--workers`` processes, to
  Parquet (the default) and to JSON Lines; and the per-record path it
  replaced (``process()`` per record, JSON Lines, one core) for the before;
* demux with the Spark engine in ``local[2]`` (``--spark``; needs pyspark and Java);

and prints MB/s and records/s per core for each, each job's ratio to the
baseline and the peak RSS of demux's worker processes.  Everything is written
under a temporary directory removed at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jobs.archive import ArchiveOptions, Archiver  # noqa: E402
from jobs.demux import load_spec  # noqa: E402
from jobs.demux import run as demux_run  # noqa: E402
from logflume.chunk import Chunk  # noqa: E402
from logflume.sequencefile import BYTES_WRITABLE, TEXT, SequenceFileReader, SequenceFileWriter  # noqa: E402

T0 = 1_764_000_000_000
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()


def _line(kind: str, rng: random.Random, i: int) -> bytes:
    if rng.random() < 0.02:  # unparsable: truncated or foreign lines, as real logs have
        return rng.choice((b'{"ts":"2025-11-24T16:00:0', b"-- MARK --", b"\x16\x03\x01 binary junk",
                           b"Traceback (most recent call last):")) + b"\n"
    if kind == "SysLog" and i % 4 == 3:
        return (f"<{rng.randrange(192)}>1 2025-11-24T16:{rng.randrange(60):02d}:{rng.randrange(60):02d}."
                f"{rng.randrange(1000):03d}Z web{rng.randrange(50)} app{i % 7} {rng.randrange(1, 65535)} "
                f"ID{i % 40} - request {i} served in {rng.randrange(900)} ms\n").encode()
    if kind == "SysLog":
        return (f"<{rng.randrange(192)}>Nov {rng.randrange(1, 29):2d} {rng.randrange(24):02d}:"
                f"{rng.randrange(60):02d}:{rng.randrange(60):02d} web{rng.randrange(50)} "
                f"sshd[{rng.randrange(1, 65535)}]: Accepted publickey for user{i % 97} from 10.0.{i % 255}.{i % 7} "
                f"port {rng.randrange(1024, 65535)} ssh2\n").encode()
    if kind == "NginxAccess":
        return (f'10.{i % 255}.{rng.randrange(255)}.{rng.randrange(255)} - - [24/Nov/2025:16:{rng.randrange(60):02d}:'
                f'{rng.randrange(60):02d} +0000] "GET /api/v1/items/{i}?page={rng.randrange(9)} HTTP/1.1" '
                f'{rng.choice((200, 200, 200, 304, 404, 500))} {rng.randrange(100000)} "https://example.com/" '
                f'"Mozilla/5.0 (X11; Linux x86_64) bench/{i % 13}"\n').encode()
    return (f'{{"ts":"2025-11-24T16:{rng.randrange(60):02d}:{rng.randrange(60):02d}Z","level":"'
            f'{rng.choice(("info", "warn", "error"))}","msg":"request done","id":{i},"ms":{rng.random() * 100:.3f},'
            f'"user":"u{i % 1000}"}}\n').encode()


def generate(root: Path, size: int, seed: int = 7, chunk_size: int = 1 << 20, file_size: int = 64 << 20) -> int:
    """Sink files totalling about ``size`` bytes; returns the number of records written."""
    rng = random.Random(seed)
    kinds = ("SysLog", "NginxAccess", "AppJSON")
    pools = {k: [_line(k, rng, i) for i in range(20000)] for k in kinds}
    offsets = {}
    written = records = n_file = 0
    while written < size:
        path = root / "2025-11-24" / f"collector{n_file % 3}-{1764000000 + n_file}-{n_file}.seq"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            w = SequenceFileWriter(f, key_class=TEXT, value_class=BYTES_WRITABLE)
            in_file = 0
            while in_file < file_size and written < size:
                s = rng.randrange(12)
                kind = kinds[s % 3]
                key = (f"host{s}", f"/var/log/{kind}.log", "1")
                pool = pools[kind]
                start = rng.randrange(len(pool))
                lines, n = [], 0
                while n < chunk_size:
                    ln = pool[(start + len(lines)) % len(pool)]
                    lines.append(ln)
                    n += len(ln)
                data = b"".join(lines)
                pos = offsets.get(key, 0)
                offsets[key] = pos + len(data)
                c = Chunk(key[0], key[1], kind, pos + len(data), key[2], data, tags={"env": "bench"},
                          timestamp=T0 + written // 1000)
                w.append_chunk(c)
                records += len(lines)
                if rng.random() < 0.05:  # a retry: the same chunk again
                    w.append_chunk(c)
                    records += len(lines)
                    in_file += len(data)
                    written += len(data)
                in_file += len(data)
                written += len(data)
            w.close()
        n_file += 1
    return records


def baseline(root: Path) -> tuple[int, int, float]:
    """(bytes, records, seconds): read every chunk and count its records, nothing else."""
    t = time.perf_counter()
    nbytes = nrec = 0
    for p in sorted(root.rglob("*.seq")):
        with open(p, "rb") as f:
            for c in SequenceFileReader(f).iter_chunks():
                nbytes += len(c.data)
                nrec += bytes(c.data).count(b"\n") if isinstance(c.data, memoryview) else c.data.count(b"\n")
    return nbytes, nrec, time.perf_counter() - t


def per_record(archive: Path, out: Path, spec: object) -> tuple[int, int, float]:
    """The path demux took before batch processors: RecordSplitter (process() per record) to JSON Lines."""
    from bench.per_record_demux import write_partitions
    from jobs.records import RecordSplitter
    from jobs.sinkfiles import list_finished, open_fs, read_chunks

    fs, root = open_fs(str(archive))
    out_fs, out_root = open_fs(str(out))
    t = time.perf_counter()
    splitter = RecordSplitter(spec, lambda r: None)
    for i, f in enumerate(list_finished(fs, root)):
        records = (pr for c in read_chunks(fs, f.path) for pr in splitter.split(c))
        write_partitions(records, out_fs, out_root, i)
    st = splitter.stats
    return st.bytes, st.records + st.errors, time.perf_counter() - t


def cpu_seconds() -> float:
    """CPU time of this process and of every child it has waited for (demux's workers, Spark's JVM)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


_CPU = {"last": 0.0}


def row(name: str, nbytes: int, nrec: int, secs: float, cores: int, base: float | None) -> str:
    """MB/s per core by wall time, and MB per CPU second (what other load on the machine does not change)."""
    mbps = nbytes / 1e6 / secs / cores
    ratio = f"{mbps / base:6.2f}x" if base else "  1.00x"
    now = cpu_seconds()
    cpu, _CPU["last"] = now - _CPU["last"], now
    _CPU[name] = nbytes / 1e6 / cpu if cpu > 0 else 0.0
    return (f"{name:<22} {nbytes / 1e6:10.1f} {secs:8.2f} {cores:5d} {mbps:12.1f} {nrec / secs / cores:14,.0f} "
            f"{ratio} {nbytes / 1e6 / cpu if cpu > 0 else 0:10.1f}")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mb", type=int, default=1024, help="sink files to generate, MiB (default 1024)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="demux processes (default: all cores)")
    p.add_argument("--dir", default=None, help="work directory (default: a temporary one, removed)")
    p.add_argument("--memory", type=int, default=None, help="demux memory per worker, bytes (default 256MiB)")
    p.add_argument("--spark", action="store_true", help="also demux with the Spark engine in local[2]")
    args = p.parse_args(argv)
    work = Path(args.dir or tempfile.mkdtemp(prefix="logflume-bench-jobs-"))
    try:
        sink = work / "sink"
        t = time.perf_counter()
        generate(sink, args.size_mb << 20)
        print(f"generated {args.size_mb} MiB of sink files in {time.perf_counter() - t:.1f}s under {work}")
        print(f"{'stage':<22} {'MB':>10} {'seconds':>8} {'cores':>5} {'MB/s/core':>12} {'records/s/core':>14} "
              f"{'vs base':>7} {'MB/CPU-s':>10}")
        _CPU["last"] = cpu_seconds()
        nbytes, nrec, secs = baseline(sink)
        base = nbytes / 1e6 / secs
        print(row("read (baseline)", nbytes, nrec, secs, 1, None))

        s = Archiver(ArchiveOptions(str(sink), str(work / "archive"))).run()
        print(row("archive", s.bytes_in, nrec, s.seconds, 1, base)
              + f"   ({s.duplicates_dropped} duplicate chunks dropped)")

        spec = load_spec(None, [])
        w = args.workers
        results = {}
        for fmt in ("parquet", "jsonl"):
            before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            d = demux_run(str(work / "archive"), str(work / f"demux-{fmt}"), spec, fmt=fmt, workers=w,
                          memory=args.memory)
            rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            results[fmt] = d
            print(row(f"demux {fmt} x{w}", d.bytes, d.records + d.errors, d.seconds, w, base)
                  + f"   ({d.records} records, {d.errors} errors; worker peak RSS "
                    f"{max(rss, before) / 1024:.0f} MiB{'' if rss > before else ' (or less)'})")
        nb, nr, secs = per_record(work / "archive", work / "demux-before", spec)
        print(row("demux per-record x1", nb, nr, secs, 1, base) + "   (before: process() per record, jsonl)")
        before = _CPU["demux per-record x1"]
        print(f"demux parquet vs per-record, per core: {_CPU[f'demux parquet x{w}'] / before:.1f}x by CPU time, "
              f"{results['parquet'].bytes / results['parquet'].seconds / w / (nb / secs):.1f}x by wall time")
        if args.spark:
            # local[2] runs the executors inside the driver's JVM: pyspark's default 1 GiB heap runs out
            os.environ.setdefault("PYSPARK_SUBMIT_ARGS", "--driver-memory 4g pyspark-shell")
            try:
                d = demux_run(str(work / "archive"), str(work / "demux-spark"), spec, engine="spark",
                              master="local[2]")
                print(row("demux spark local[2]", d.bytes, d.records + d.errors, d.seconds, 2, base)
                      + f"   ({d.records} records, {d.errors} errors)")
            except Exception as exc:  # the engine is optional: say why it did not run
                print(f"demux spark local[2]: not run: {exc!r}")
        return 0
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
