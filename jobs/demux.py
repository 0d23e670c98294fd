"""``logflume demux``: chunks -> parsed records as Parquet, partitioned by datatype, day and hour.

Reads sink or archive files, splits each chunk into records (at its record
ends, else at newlines), parses them a batch at a time with the processor
configured for the chunk's datatype and writes
``<output>/datatype=<dt>/date=<yyyy-mm-dd>/hour=<HH>/part-<batch>-<task>.parquet``
(or ``.jsonl``/``.seq``).  Records a processor rejects go to
``<output>/_errors/datatype=…/date=…/hour=…/`` with the reason; chunks whose
metadata cannot be used go whole, in sink-file format, to
``<output>/_errors/_chunks/``.  The day and hour are the UTC time the chunk
was read (its timestamp): always present, unlike a parseable time inside every record.

Exactly once: input is taken in batches committed through :mod:`jobs.manifest`
(``<output>/_manifest/``), as archive does.  A batch's files are written under
hidden staged names; the commit records its inputs as done, then the files are
renamed into place.  A run that dies before the commit leaves only hidden
files, which the next run removes before doing the batch again; one that dies
after it has its renames finished by the next run.  Input already committed is
skipped, so a re-run adds nothing and a later run adds only new files.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from jobs.arg_types import size_arg
from jobs.errors import JobError
from jobs.manifest import Committed, Manifest, Pending
from jobs.outputs import FORMATS, final_name, require_format
from jobs.records import DemuxStats, ProcessorSpec, TypeStats
from jobs.sinkfiles import InputFile, is_hidden, list_finished, open_fs
from logflume.errors import ConfigError

#: Input bytes per commit by default: what a crash can make the next run redo.
BATCH_SIZE = 1024 * 1024 * 1024
JOB = "demux"


@dataclass
class DemuxSummary:
    engine: str
    input_files: int = 0
    input_bytes: int = 0
    skipped_files: int = 0  # committed by an earlier run
    batches: int = 0
    recovered_batches: int = 0  # interrupted batches rolled back (and done again)
    tasks: int = 0
    chunks: int = 0
    records: int = 0
    errors: int = 0
    bytes: int = 0
    bad_chunks: int = 0
    output_files: int = 0
    seconds: float = 0.0
    mb_per_s: float = 0.0
    by_datatype: dict[str, dict[str, int]] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)

    def add(self, stats: DemuxStats) -> None:
        self.chunks += stats.chunks
        self.records += stats.records
        self.errors += stats.errors
        self.bytes += stats.bytes
        self.bad_chunks += stats.bad_chunks

    def add_types(self, by_type: dict[str, TypeStats]) -> None:
        for dt, ts in by_type.items():
            mine = self.by_datatype.setdefault(dt, asdict(TypeStats()))
            for k, v in asdict(ts).items():
                mine[k] += v


def load_spec(config: str | None, overrides: list[str]) -> ProcessorSpec:
    """Processor choice per datatype: the YAML file, then ``--processor DATATYPE=TYPE`` on top."""
    raw: dict[str, Any] = {}
    if config:
        from logflume.config import load_yaml

        raw = load_yaml(config) or {}
        if not isinstance(raw, dict):
            raise ConfigError(config, "", "expected a mapping with keys processors, default")
    procs_raw = raw.get("processors") or {}
    if not isinstance(procs_raw, dict):
        raise ConfigError(config, "processors", "expected a mapping of datatype to processor")
    procs = dict(procs_raw)
    for item in overrides:
        dt, sep, kind = item.partition("=")
        if not sep or not dt or not kind:
            raise ConfigError(None, "--processor", f"expected DATATYPE=TYPE, got {item!r}")
        procs[dt] = kind
    return ProcessorSpec.from_config({**raw, "processors": procs}, config)


def prepare_output(fs: Any, root: str, overwrite: bool) -> None:
    """Refuse to mix two runs' part files; ``--overwrite`` removes the old output first (Spark engine)."""
    if fs.exists(root):
        existing = [p for p in fs.find(root) if not is_hidden(p[len(root):].lstrip("/"))]
        if existing and not overwrite:
            raise JobError(f"output {root} already holds {len(existing)} file(s); choose an empty output or pass "
                           f"--overwrite to replace it")
        if overwrite:
            fs.rm(root, recursive=True)
    fs.makedirs(root, exist_ok=True)


def _batch_files(fs: Any, root: str, batch: int) -> list[str]:
    """Every file a batch wrote, staged or published (all carry its number)."""
    name = re.compile(rf"^\.*(part|chunks)-{batch:06d}-")
    if not fs.exists(root):
        return []
    return [p for p in fs.find(root) if name.match(p.rsplit("/", 1)[-1])
            and not p[len(root):].lstrip("/").startswith("_manifest/")]


def publish(fs: Any, staged: list[str]) -> None:
    """Rename a committed batch's staged files into place."""
    for path in staged:
        fs.mv(path, final_name(path))


class Demux:
    """Runs the local engine over every input file not yet committed, a batch at a time."""

    def __init__(self, input_url: str, output_url: str, spec: ProcessorSpec, fmt: str = "parquet",
                 workers: int | None = None, split_size: int | None = None, batch_size: int = BATCH_SIZE,
                 memory: int | None = None, overwrite: bool = False,
                 progress: Callable[[int, int, float], None] | None = None) -> None:
        from jobs.engines import local

        require_format(fmt)
        self.spec, self.fmt, self.workers = spec, fmt, workers
        self.split_size = split_size or local.SPLIT_SIZE
        self.batch_size, self.memory = batch_size, memory or local.MEMORY
        self.in_fs, self.in_root = open_fs(input_url)
        self.out_fs, self.out_root = open_fs(output_url)
        self.out_root = self.out_root.rstrip("/")
        self.overwrite = overwrite
        self.progress = progress
        self.manifest = Manifest(self.out_fs, self.out_root)
        self.summary = DemuxSummary(self.engine)

    #: The engine's name in the summary; an engine subclass overrides it and :meth:`pool`.
    engine = "local"

    def pool(self) -> Any:
        """What runs a batch's tasks: ``run(tasks, poll) -> [TaskResult]``, ``bytes_done()``, ``close()``."""
        from jobs.engines import local

        return local.Pool(self.in_fs, self.out_fs, self.out_root, self.spec, self.fmt, self.workers, self.memory)

    def url(self, f: InputFile) -> str:
        return self.in_fs.unstrip_protocol(f.path)

    def _open_output(self) -> Committed:
        fs, root = self.out_fs, self.out_root
        if self.overwrite and fs.exists(root):
            fs.rm(root, recursive=True)
        fs.makedirs(root, exist_ok=True)
        if not fs.exists(self.manifest.committed_path) and not fs.exists(self.manifest.pending_path):
            existing = [p for p in fs.find(root) if not is_hidden(p[len(root):].lstrip("/"))]
            if existing:
                raise JobError(f"output {root} already holds {len(existing)} file(s) and no demux manifest; choose "
                               f"an empty output or pass --overwrite to replace it")
            return Committed(job=JOB)
        committed = self.manifest.load()
        if fs.exists(self.manifest.committed_path) and committed.job != JOB:
            raise JobError(f"output {root} holds {committed.job} output (its _manifest); choose another output")
        pending = self.manifest.pending()
        if pending is not None:
            if pending.batch > committed.batches:  # died before its commit: nothing of it counts
                for path in _batch_files(fs, root, pending.batch):
                    fs.rm(path)
                self.summary.recovered_batches += 1
            else:  # died after its commit: finish publishing
                publish(fs, [p for p in _batch_files(fs, root, pending.batch)
                             if p.rsplit("/", 1)[-1].startswith(".") and p.endswith(".staged")])
            self.manifest.clear_pending()
        committed.job = JOB
        return committed

    def run(self) -> DemuxSummary:
        t0 = time.monotonic()
        s = self.summary
        files = list_finished(self.in_fs, self.in_root)
        committed = self._open_output()
        todo = [f for f in files if self.url(f) not in committed.done]
        s.input_files, s.skipped_files = len(todo), len(files) - len(todo)
        s.input_bytes = sum(f.size for f in todo)
        pool = self.pool()
        last = [0.0]

        def poll(final: bool = False) -> None:
            now = time.monotonic()
            if self.progress and (final or now - last[0] >= 0.25):
                last[0] = now  # chunk bytes parsed, against file sizes (which add keys and framing): ends at 100%
                self.progress(s.input_bytes if final else min(pool.bytes_done(), s.input_bytes), s.input_bytes,
                              now - t0)

        try:
            while todo:
                take, size = [], 0
                while todo and (not take or size + todo[0].size <= self.batch_size):
                    f = todo.pop(0)
                    take.append(f)
                    size += f.size
                committed = self.run_batch(pool, take, committed, poll)
        finally:
            pool.close()
        poll(final=True)
        s.seconds = time.monotonic() - t0
        s.mb_per_s = round(s.bytes / 1e6 / s.seconds, 2) if s.seconds else 0.0
        return s

    def run_batch(self, pool: Any, take: list[InputFile], committed: Committed,
                  poll: Callable[[], None]) -> Committed:
        from jobs.engines import local

        n = committed.batches + 1
        inputs = {self.url(f): f.size for f in take}
        self.manifest.begin(Pending(n, inputs))
        tasks = local.plan_tasks(take, self.split_size, batch=n)
        results = pool.run(tasks, poll)
        staged = [p for r in results for p in r.files]
        s = self.summary
        s.batches += 1
        s.tasks += len(tasks)
        totals = dict(committed.totals)
        batch_stats = DemuxStats()
        for r in results:
            s.add(r.stats)
            s.add_types(r.by_type)
            batch_stats.add(r.stats)
        for k, v in asdict(batch_stats).items():
            totals[k] = totals.get(k, 0) + v
        totals["output_files"] = totals.get("output_files", 0) + len(staged)
        new = Committed(n, {**committed.done, **inputs}, [], totals, job=JOB)
        self.manifest.commit(new, clear_pending=False)
        publish(self.out_fs, staged)
        self.manifest.clear_pending()
        s.output_files += len(staged)
        s.outputs.extend(final_name(p) for p in staged)
        return new


def run(input_url: str, output_url: str, spec: ProcessorSpec, fmt: str = "parquet", engine: str = "local",
        workers: int | None = None, split_size: int | None = None, master: str | None = None,
        overwrite: bool = False, progress: Callable[[int, int, float], None] | None = None,
        batch_size: int = BATCH_SIZE, memory: int | None = None) -> DemuxSummary:
    if engine == "local":
        return Demux(input_url, output_url, spec, fmt, workers, split_size, batch_size, memory, overwrite,
                     progress).run()
    if engine != "spark":
        raise ValueError(f"unknown engine {engine!r}; expected local or spark")
    from jobs.engines import spark

    return spark.SparkDemux(input_url, output_url, spec, fmt, workers, split_size, batch_size, memory, overwrite,
                            progress, master=master).run()


_size = size_arg(1024, "of at least 1KiB")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="logflume demux", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, help="sink or archive files: directory or file, path or fsspec URL")
    p.add_argument("--output", required=True, help="output root: path or fsspec URL")
    p.add_argument("--format", choices=tuple(FORMATS), default="parquet",
                   help="parquet (default, zstd), jsonl or seq (SequenceFile Text/Text); all need pyarrow")
    p.add_argument("--config", help="YAML: processors: {DATATYPE: TYPE or {type: TYPE, ...settings}}, default: TYPE")
    p.add_argument("--processor", action="append", default=[], metavar="DATATYPE=TYPE",
                   help="processor for a datatype (built-in name, entry point or package.module:Class); repeatable")
    p.add_argument("--engine", choices=("local", "spark"), default="local")
    p.add_argument("--workers", type=int, default=None, help="local engine: processes (default: all cores)")
    p.add_argument("--split-size", type=_size, default=None, help="local engine: bytes per task (default 64MiB)")
    p.add_argument("--memory", type=_size, default=None,
                   help="local engine: memory per worker process, which bounds its peak (default 256MiB)")
    p.add_argument("--batch-size", type=_size, default=BATCH_SIZE,
                   help="local engine: input bytes per commit, what a crash makes the next run redo (default 1GiB)")
    p.add_argument("--master", default=None, help="spark engine: master URL (default: from spark-submit, "
                   "else local[*])")
    p.add_argument("--overwrite", action="store_true", help="replace the output (and its manifest) first")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    return p


def progress_bar(stream: Any) -> Callable[[int, int, float], None]:
    """A one-line bar: share of the input parsed, MB so far and MB/s."""
    def show(done: int, total: int, seconds: float) -> None:
        frac = min(1.0, done / total) if total else 1.0
        bar = "#" * int(frac * 30)
        rate = done / 1e6 / seconds if seconds > 0 else 0.0
        stream.write(f"\rdemux [{bar:<30}] {frac:6.1%} {done / 1e6:,.1f}/{total / 1e6:,.1f} MB {rate:,.1f} MB/s ")
        if frac >= 1.0:
            stream.write("\n")
        stream.flush()

    return show


def format_summary(s: DemuxSummary) -> str:
    """The closing report: totals, then per datatype records, errors, MB."""
    mb = s.bytes / 1e6
    head = (f"demux ({s.engine}): {s.input_files} file(s) in {s.batches} batch(es)"
            + (f", {s.skipped_files} done before" if s.skipped_files else "")
            + (f", rolled back {s.recovered_batches} interrupted batch" if s.recovered_batches else "")
            + f"; {s.chunks} chunks, {mb:,.1f} MB -> {s.records} records, {s.errors} to _errors, "
              f"{s.bad_chunks} bad chunk(s) to _errors/_chunks, {s.output_files} output file(s); "
              f"{s.seconds:.2f}s ({s.mb_per_s:,.1f} MB/s)")
    lines = [head]
    if s.by_datatype:
        width = max(len(dt) for dt in s.by_datatype)
        lines.append(f"  {'datatype':<{width}} {'records':>12} {'errors':>10} {'MB':>10}")
        for dt, t in sorted(s.by_datatype.items()):
            lines.append(f"  {dt:<{width}} {t['records']:>12,} {t['errors']:>10,} {t['bytes'] / 1e6:>10,.1f}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.workers is not None and args.workers < 1:
        print("logflume demux: --workers must be at least 1", file=sys.stderr)
        return 2
    show = not args.no_progress and sys.stderr.isatty()
    try:
        spec = load_spec(args.config, args.processor)
        summary = run(args.input, args.output, spec, args.format, args.engine, args.workers, args.split_size,
                      args.master, args.overwrite, progress=progress_bar(sys.stderr) if show else None,
                      batch_size=args.batch_size, memory=args.memory)
    except ConfigError as exc:
        print(f"logflume demux: {exc}", file=sys.stderr)
        return 2
    except (JobError, OSError, ValueError) as exc:
        print(f"logflume demux: {exc}", file=sys.stderr)
        return 1
    if args.json:
        out = asdict(summary)
        out.pop("outputs")
        print(json.dumps(out))
    else:
        print(format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
