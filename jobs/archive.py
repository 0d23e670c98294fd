"""``logflume archive``: sink files -> hourly archive SequenceFiles, every byte exactly once.

Reads finished sink files, drops duplicate and overlapping bytes once they
are proven identical (see :mod:`jobs.dedup`), groups what is left by datatype
and the UTC hour of each chunk's timestamp, sorts it by (source, stream,
epoch, seq_id), merges each stream's adjacent small chunks (:mod:`jobs.coalesce`)
and writes ``<output>/<datatype>/<yyyy-mm-dd>/<HH>/archive-<batch>.seq``.
No chunk can stop it: chunks with unusable metadata go to
``<output>/_errors/errors-<batch>.seq``, chunks whose bytes disagree with bytes
already kept to ``<output>/_conflicts/conflicts-<batch>.seq`` (see
:mod:`jobs.setaside`).  Work is done in batches committed through
:mod:`jobs.manifest`: a run that dies at any point leaves a batch the next run
rolls back and does again.  Chunks for an hour archived by an earlier batch
(late arrivals) go to that batch's own new file in the hour.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from jobs.arg_types import duration_ms_arg, size_arg
from jobs.coalesce import DEFAULT_WINDOW_MS, coalesce
from jobs.dedup import Deduplicator, DedupStats
from jobs.errors import JobError
from jobs.hidden_temp import hidden_temp
from jobs.layout import partition_name, utc_day_hour
from jobs.manifest import Committed, Manifest, Pending, sync_file
from jobs.setaside import CONFLICTS_DIR, ERRORS_DIR, Rejected, SetAsideFile
from jobs.sinkfiles import list_finished, open_fs, parse_record, read_chunks
from logflume.chunk import Chunk
from sinks.naming import inprogress_name

WRITER_NAME = "logflume-archive"
DEFAULT_BATCH = 256 * 1024 * 1024
#: Exit status when the run completed and committed, but set aside conflicting chunks.
EXIT_CONFLICTS = 3


@dataclass
class ArchiveOptions:
    input: str
    output: str
    batch_size: int = DEFAULT_BATCH
    compression: str = "NONE"
    codec: str | None = None
    dry_run: bool = False
    #: Adjacent chunks of a stream whose timestamps lie within this many ms are merged (0: none).
    merge_window_ms: int = DEFAULT_WINDOW_MS


@dataclass
class ArchiveSummary(DedupStats):
    """A run's totals: the de-duplication's (summed over its batches, ``conflicts`` = chunks set aside to
    ``_conflicts``), plus the archive's own counts."""

    batches: int = 0
    input_files: int = 0
    output_files: int = 0
    chunks_written: int = 0  # archive records: chunks_out after adjacent small chunks were merged
    bad_chunks: int = 0  # records set aside to _errors (unusable metadata)
    recovered_batches: int = 0  # interrupted batches rolled back (and done again)
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)
    set_aside: list[str] = field(default_factory=list)  # _errors and _conflicts files written


def group_by_hour(kept: list[Chunk]) -> dict[tuple[str, str, str], list[Chunk]]:
    """(datatype dir, day, hour) -> chunks, keeping the (source, stream, epoch, seq_id) order."""
    groups: dict[tuple[str, str, str], list[Chunk]] = {}
    for c in kept:
        day, hour = utc_day_hour(c.timestamp)
        groups.setdefault((partition_name(c.datatype), day, hour), []).append(c)
    return groups


class Archiver:
    """Runs batches until every finished input is archived."""

    def __init__(self, opts: ArchiveOptions, progress: Callable[[int, int, int], None] | None = None) -> None:
        self.opts = opts
        self.in_fs, self.in_root = open_fs(opts.input)
        self.out_fs, self.out_root = open_fs(opts.output)
        same_fs = self.in_fs.unstrip_protocol("/") == self.out_fs.unstrip_protocol("/")
        if same_fs and (self.out_root + "/").startswith(self.in_root.rstrip("/") + "/"):
            raise JobError(f"output {opts.output} is inside input {opts.input}: archive files would be read back "
                           f"as sink files; choose an output outside the input")
        self.manifest = Manifest(self.out_fs, self.out_root)
        self.progress = progress
        self.summary = ArchiveSummary()

    def url(self, path: str) -> str:
        return self.in_fs.unstrip_protocol(path)

    def run(self) -> ArchiveSummary:
        t0 = time.monotonic()
        committed = self.manifest.load()
        pending = self.manifest.pending()
        if pending is not None and not self.opts.dry_run:
            if pending.batch > committed.batches:  # else: killed after its commit, nothing to undo
                self.rollback(pending.batch)
                self.summary.recovered_batches += 1
            self.manifest.clear_pending()
        todo = [f for f in list_finished(self.in_fs, self.in_root) if self.url(f.path) not in committed.done]
        total = sum(f.size for f in todo)
        done_bytes = 0
        while todo:
            take, size = [], 0
            while todo and (not take or size + todo[0].size <= self.opts.batch_size):
                f = todo.pop(0)
                take.append(f)
                size += f.size
            pending = Pending(committed.batches + 1, {self.url(f.path): f.size for f in take})
            if not self.opts.dry_run:
                self.manifest.begin(pending)
            committed = self.run_batch(pending, committed)
            done_bytes += size
            if self.progress:
                self.progress(done_bytes, total, committed.batches)
        self.summary.seconds = time.monotonic() - t0
        return self.summary

    def rollback(self, batch: int) -> None:
        """Remove every output (and temporary) of an uncommitted batch: all carry its number."""
        root = self.out_root
        n = f"{batch:06d}"
        patterns = [f"{root}/*/*/*/archive-{n}.seq", inprogress_name(f"{root}/*/*/*/archive-{n}.seq")]
        for folder, stem in ((ERRORS_DIR, "errors"), (CONFLICTS_DIR, "conflicts")):
            out = f"{root}/{folder}/{stem}-{n}.seq"
            patterns += [out, hidden_temp(out)]
        for pattern in patterns:
            for path in self.out_fs.glob(pattern):
                self.out_fs.rm(path)

    def run_batch(self, pending: Pending, committed: Committed) -> Committed:
        chunks: list[Chunk] = []
        rejected: list[Rejected] = []
        origin: dict[int, str] = {}  # id(chunk) -> input URL, for conflict reports
        for url in sorted(pending.inputs):
            for item in read_chunks(self.in_fs, self.in_fs._strip_protocol(url)):
                if isinstance(item, Rejected):
                    rejected.append(item)
                else:
                    chunks.append(item)
                    origin[id(item)] = url
        dedup = Deduplicator.from_state(committed.state, self.read_archived)
        kept = dedup.run(chunks)
        groups = group_by_hour(kept)
        outputs = []
        written = 0
        for key, group in sorted(groups.items()):
            group = coalesce(group, self.opts.merge_window_ms)
            written += len(group)
            path, runs = self.write_group(pending.batch, key, group)
            outputs.append(path)
            rel = path[len(self.out_root):].lstrip("/")
            for stream, start, end, offset in runs:
                dedup.locate(stream, start, end, None if self.opts.dry_run else rel, offset)
        set_aside = [p for p in (
            self.set_aside(ERRORS_DIR, "errors", pending.batch, [(r.key(), r.data) for r in rejected]),
            self.set_aside(CONFLICTS_DIR, "conflicts", pending.batch,
                           [(c.key(lambda ch: origin.get(id(ch), "")), c.chunk.data) for c in dedup.conflicts]),
        ) if p is not None]
        s = self.summary
        s.batches += 1
        s.input_files += len(pending.inputs)
        s.output_files += len(outputs)
        s.chunks_written += written
        s.outputs.extend(outputs)
        s.set_aside.extend(set_aside)
        s.add(dedup.stats)
        s.bad_chunks += len(rejected)
        totals = dict(committed.totals)
        for name, value in asdict(dedup.stats).items():
            totals[name] = totals.get(name, 0) + value
        totals["output_files"] = totals.get("output_files", 0) + len(outputs)
        totals["chunks_written"] = totals.get("chunks_written", 0) + written
        totals["bad_chunks"] = totals.get("bad_chunks", 0) + len(rejected)
        new = Committed(pending.batch, {**committed.done, **pending.inputs}, dedup.state(), totals)
        if not self.opts.dry_run:
            self.manifest.commit(new)
        return new

    def write_group(self, batch: int, key: tuple[str, str, str], chunks: list[Chunk]
                    ) -> tuple[str, list[tuple[tuple[str, str, str], int, int, int]]]:
        """Write one hour's archive file; returns its path and, per stream in it, (key, first byte,
        end, offset of a sync point just before the stream's first record)."""
        from logflume.sequencefile import BYTES_WRITABLE, TEXT, SequenceFileWriter

        rel = f"{key[0]}/{key[1]}/{key[2]}/archive-{batch:06d}.seq"
        final = f"{self.out_root}/{rel}"
        runs = _stream_runs(chunks)
        if self.opts.dry_run:
            return final, [(k, chunks[i].start, chunks[j - 1].seq_id, 0) for k, i, j in runs]
        folder = final.rsplit("/", 1)[0]
        tmp = inprogress_name(final)  # hidden from the readers, as a sink's file is while it is written
        self.out_fs.makedirs(folder, exist_ok=True)
        # Everything in the file derives from the batch's inputs, so a redo writes the same bytes.
        meta = {"logflume.writer": WRITER_NAME, "logflume.format": "1", "logflume.batch": str(batch)}
        located = []
        with self.out_fs.open(tmp, "wb") as f:
            w = SequenceFileWriter(f, key_class=TEXT, value_class=BYTES_WRITABLE, compression=self.opts.compression,
                                   codec=self.opts.codec, metadata=meta,
                                   sync_marker=hashlib.md5(rel.encode()).digest())
            for k, i, j in runs:
                located.append((k, chunks[i].start, chunks[j - 1].seq_id, _sync_point(w)))
                for c in chunks[i:j]:
                    w.append_chunk(c)
            w.close()
            sync_file(f)
        self.out_fs.mv(tmp, final)
        return final, located

    def set_aside(self, folder: str, stem: str, batch: int, records: list[tuple[dict[str, Any], Any]]) -> str | None:
        """Write a batch's set-aside chunks to ``<output>/<folder>/<stem>-<batch>.seq``; None if there are none."""
        path = f"{self.out_root}/{folder}/{stem}-{batch:06d}.seq"
        if not records or self.opts.dry_run:
            return path if records else None
        out = SetAsideFile(self.out_fs, path, WRITER_NAME, {"logflume.batch": str(batch)})
        try:
            for key, data in records:
                out.add(key, data)
            return out.close()
        except BaseException:
            out.abort()
            raise

    def read_archived(self, rel: str, offset: int, key: tuple[str, str, str]) -> list[Chunk]:
        """The chunks of stream ``key`` an earlier batch wrote to archive file ``rel`` from sync point ``offset``."""
        from logflume.sequencefile import SequenceFileReader

        out: list[Chunk] = []
        with self.out_fs.open(f"{self.out_root}/{rel}", "rb") as f:
            for k, v in SequenceFileReader(f, start=offset).iter_raw():
                item = parse_record(k, v, rel)
                if isinstance(item, Rejected):
                    raise JobError(f"{rel}: archived record is not a usable chunk: {item.reason}")
                if item.key != key:
                    break
                out.append(item)
        return out


def _stream_runs(chunks: list[Chunk]) -> list[tuple[tuple[str, str, str], int, int]]:
    """(key, first index, end index) of each stream's consecutive chunks (the list is sorted by key)."""
    runs = []
    i = 0
    for j in range(1, len(chunks) + 1):
        if j == len(chunks) or chunks[j].key != chunks[i].key:
            runs.append((chunks[i].key, i, j))
            i = j
    return runs


def _sync_point(w: Any) -> int:
    """Write a sync marker and return the offset from which a reader starts at the next record.

    A record-file marker is written where the writer stands; a block file's
    next block starts with one once the pending block is written.
    """
    before = w.position
    w.sync()
    return w.position if w.compression == "BLOCK" else before


_size = size_arg(1, "above 0")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="logflume archive", description=__doc__.split("\n\n")[0])
    p.add_argument("--input", required=True, help="sink files: a directory or file, local path or fsspec URL")
    p.add_argument("--output", required=True, help="archive root: local path or fsspec URL")
    p.add_argument("--batch-size", type=_size, default=DEFAULT_BATCH,
                   help="input bytes per commit (held in memory while a batch runs; default 256MiB)")
    p.add_argument("--compression", choices=("none", "record", "block"), default="none",
                   help="SequenceFile compression of archive files (default none)")
    p.add_argument("--codec", choices=("deflate", "gzip", "lz4", "snappy"), default=None,
                   help="codec for record/block compression (default deflate)")
    p.add_argument("--merge-window", type=duration_ms_arg, default=f"{DEFAULT_WINDOW_MS}ms",
                   help="merge a stream's adjacent small chunks whose timestamps lie within this long into one "
                        "record (the first timestamp is kept; 0: keep every chunk as sent; default 1s)")
    p.add_argument("--dry-run", action="store_true", help="read and de-duplicate, report, write nothing")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a terminal")
    return p


def _progress_bar(stream: Any) -> Callable[[int, int, int], None]:
    def show(done: int, total: int, batches: int) -> None:
        frac = done / total if total else 1.0
        bar = "#" * int(frac * 30)
        stream.write(f"\rarchive [{bar:<30}] {frac:6.1%} {done / 2**20:,.1f}/{total / 2**20:,.1f} MiB "
                     f"batch {batches}")
        if done >= total:
            stream.write("\n")
        stream.flush()

    return show


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.codec and args.compression == "none":
        print("logflume archive: --codec needs --compression record or block", file=sys.stderr)
        return 2
    opts = ArchiveOptions(args.input, args.output, args.batch_size, args.compression.upper(),
                          args.codec if args.compression != "none" else None, args.dry_run, args.merge_window)
    progress = None if args.no_progress or not sys.stderr.isatty() else _progress_bar(sys.stderr)
    try:
        summary = Archiver(opts, progress).run()
    except (JobError, OSError) as exc:
        print(f"logflume archive: {exc}", file=sys.stderr)
        return 1
    if args.json:
        out = asdict(summary)
        out["dry_run"] = args.dry_run
        print(json.dumps(out))
    else:
        s = summary
        what = "would write" if args.dry_run else "wrote"
        rec = f", rolled back {s.recovered_batches} interrupted batch" if s.recovered_batches else ""
        print(f"archive: {s.batches} batch(es){rec}: read {s.input_files} file(s), {s.chunks_in} chunks, "
              f"{s.bytes_in} bytes; {what} {s.output_files} file(s), {s.chunks_out} chunks as {s.chunks_written} "
              f"record(s), {s.bytes_out} bytes; "
              f"dropped {s.duplicates_dropped} duplicate chunk(s), trimmed {s.overlaps_trimmed} overlapping; "
              f"set aside {s.bad_chunks} bad chunk(s) to {ERRORS_DIR}, {s.conflicts} conflict(s) to "
              f"{CONFLICTS_DIR}; {s.seconds:.2f}s")
    if summary.conflicts:
        print(f"logflume archive: {summary.conflicts} chunk(s) disagree with bytes already archived for their range; "
              f"set aside in {CONFLICTS_DIR}/ (see docs/jobs.md)", file=sys.stderr)
        return EXIT_CONFLICTS
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
