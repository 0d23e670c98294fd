"""``logflume demux``: chunks -> parsed records, partitioned by datatype and day.

Reads sink or archive files, splits each chunk into records (at its record
ends, else at newlines), runs the processor configured for the chunk's
datatype and writes ``<output>/<datatype>/<yyyy-mm-dd>/part-NNNNN.<fmt>``.
Records a processor rejects go to ``<output>/_errors/<datatype>/<yyyy-mm-dd>/``
with the reason; chunks whose metadata cannot be used go whole, in sink-file
format, to ``<output>/_errors/_chunks/``.  The day is the UTC day the chunk was read (its timestamp):
always present, unlike a parseable time inside every record.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from jobs.errors import JobError
from jobs.outputs import FORMATS, require_format
from jobs.records import DemuxStats, ProcessorSpec
from jobs.sinkfiles import is_hidden, list_finished, open_fs
from logflume.errors import ConfigError
from logflume.settings import Invalid, parse_size


@dataclass
class DemuxSummary:
    engine: str
    input_files: int = 0
    input_bytes: int = 0
    tasks: int = 0
    chunks: int = 0
    records: int = 0
    errors: int = 0
    bytes: int = 0
    bad_chunks: int = 0
    output_files: int = 0
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)

    def add(self, stats: DemuxStats) -> None:
        self.chunks += stats.chunks
        self.records += stats.records
        self.errors += stats.errors
        self.bytes += stats.bytes
        self.bad_chunks += stats.bad_chunks


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
    """Refuse to mix two runs' part files; ``--overwrite`` removes the old output first."""
    if fs.exists(root):
        existing = [p for p in fs.find(root) if not is_hidden(p[len(root):].lstrip("/"))]
        if existing and not overwrite:
            raise JobError(f"output {root} already holds {len(existing)} file(s); choose an empty output or pass "
                           f"--overwrite to replace it")
        if overwrite:
            fs.rm(root, recursive=True)
    fs.makedirs(root, exist_ok=True)


def run(input_url: str, output_url: str, spec: ProcessorSpec, fmt: str = "jsonl", engine: str = "local",
        workers: int | None = None, split_size: int | None = None, master: str | None = None,
        overwrite: bool = False, progress: bool = False) -> DemuxSummary:
    require_format(fmt)
    t0 = time.monotonic()
    in_fs, in_root = open_fs(input_url)
    files = list_finished(in_fs, in_root)
    out_fs, out_root = open_fs(output_url)
    prepare_output(out_fs, out_root, overwrite)
    summary = DemuxSummary(engine, input_files=len(files), input_bytes=sum(f.size for f in files))
    if engine == "local":
        from jobs.engines import local

        tasks = local.plan_tasks(files, split_size or local.SPLIT_SIZE)
        summary.tasks = len(tasks)
        done = [0]

        def show(result: local.TaskResult) -> None:
            done[0] += 1
            sys.stderr.write(f"\rdemux {done[0]}/{len(tasks)} tasks")
            if done[0] == len(tasks):
                sys.stderr.write("\n")
            sys.stderr.flush()

        for result in local.run(tasks, in_fs, out_fs, out_root, spec, fmt, workers, show if progress else None):
            summary.add(result.stats)
            summary.outputs.extend(result.files)
    elif engine == "spark":
        from jobs.engines import spark

        stats, outputs, tasks = spark.run(files, in_fs, output_url, spec, fmt, master=master)
        summary.add(stats)
        summary.outputs.extend(outputs)
        summary.tasks = tasks
    else:
        raise ValueError(f"unknown engine {engine!r}; expected local or spark")
    summary.output_files = len(summary.outputs)
    summary.seconds = time.monotonic() - t0
    return summary


def _size(text: str) -> int:
    try:
        n = parse_size(text)
    except Invalid:
        raise argparse.ArgumentTypeError(f"expected a size such as 64MiB, got {text!r}") from None
    if n < 1024:
        raise argparse.ArgumentTypeError("expected a size of at least 1KiB")
    return n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="logflume demux", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, help="sink or archive files: directory or file, path or fsspec URL")
    p.add_argument("--output", required=True, help="output root: path or fsspec URL")
    p.add_argument("--format", choices=tuple(FORMATS), default="jsonl",
                   help="jsonl (default), parquet (needs the parquet extra) or seq (SequenceFile Text/Text)")
    p.add_argument("--config", help="YAML: processors: {DATATYPE: TYPE or {type: TYPE, ...settings}}, default: TYPE")
    p.add_argument("--processor", action="append", default=[], metavar="DATATYPE=TYPE",
                   help="processor for a datatype (built-in name, entry point or package.module:Class); repeatable")
    p.add_argument("--engine", choices=("local", "spark"), default="local")
    p.add_argument("--workers", type=int, default=None, help="local engine: processes (default: all cores)")
    p.add_argument("--split-size", type=_size, default=None, help="local engine: bytes per task (default 64MiB)")
    p.add_argument("--master", default=None, help="spark engine: master URL (default: from spark-submit, "
                   "else local[*])")
    p.add_argument("--overwrite", action="store_true", help="replace an output directory that is not empty")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress line even on a terminal")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.workers is not None and args.workers < 1:
        print("logflume demux: --workers must be at least 1", file=sys.stderr)
        return 2
    try:
        spec = load_spec(args.config, args.processor)
        summary = run(args.input, args.output, spec, args.format, args.engine, args.workers, args.split_size,
                      args.master, args.overwrite, progress=not args.no_progress and sys.stderr.isatty())
    except ConfigError as exc:
        print(f"logflume demux: {exc}", file=sys.stderr)
        return 2
    except (JobError, FileNotFoundError, ValueError) as exc:
        print(f"logflume demux: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(asdict(summary)))
    else:
        s = summary
        mb = s.bytes / 1e6
        print(f"demux ({s.engine}): {s.input_files} file(s), {s.chunks} chunks, {mb:.1f} MB -> {s.records} records, "
              f"{s.errors} to _errors, {s.bad_chunks} bad chunk(s) to _errors/_chunks, {s.output_files} output "
              f"file(s); {s.seconds:.2f}s "
              f"({mb / s.seconds if s.seconds else 0:.1f} MB/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
