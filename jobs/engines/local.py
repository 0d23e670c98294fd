"""Local demux engine: input files cut into splits at sync markers, one task per split, all cores.

A split is a byte range of one file; the SequenceFile reader starts at the
first sync marker inside it and stops at the first one past its end (Hadoop's
rule), so adjacent splits read every record exactly once and big files use
every core.  Each task writes its own ``part-<batch>-<task>`` file per
partition, under a staged (hidden) name that the demux commit publishes.

Memory: a task holds at most ``memory // 32`` bytes of chunks waiting to be
parsed as one batch, the Arrow columns of that batch (a vectorized processor
keeps some twenty intermediate columns alive until it returns: up to ~20x the
batch) and at most ``memory // 4`` of rows waiting to be written as a row
group; so a worker's peak stays within about ``memory`` above the ~90 MiB of
the interpreter and Arrow (measured: 64 MiB -> 196 MiB peak RSS, 256 MiB ->
301 MiB, 1 GiB -> 388 MiB).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobs.outputs import TableFiles, staged_name
from jobs.records import BAD_CHUNKS, ChunkBatcher, DemuxStats, ProcessorSpec, TypeStats
from jobs.setaside import SetAsideFile
from jobs.sinkfiles import InputFile, read_chunks

#: Default split size: large enough to amortise a task, small enough to balance cores.
SPLIT_SIZE = 64 * 1024 * 1024
#: Default memory per worker process (see the module docstring).
MEMORY = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Task:
    index: int
    path: str
    start: int
    end: int
    batch: int = 0  # the demux commit batch this task belongs to (0: no manifest)


@dataclass
class TaskResult:
    index: int
    stats: DemuxStats
    files: list[str] = field(default_factory=list)
    by_type: dict[str, TypeStats] = field(default_factory=dict)


def plan_tasks(files: list[InputFile], split_size: int = SPLIT_SIZE, batch: int = 0, first: int = 0) -> list[Task]:
    """Cut each file into ``split_size`` ranges; numbered in path order from ``first``, so part names are stable."""
    tasks: list[Task] = []
    for f in files:
        start = 0
        while True:
            end = min(f.size, start + split_size)
            tasks.append(Task(first + len(tasks), f.path, start, end, batch))
            if end >= f.size:
                break
            start = end
    return tasks


def part_stem(batch: int, task: int) -> str:
    """``part-<batch>-<task>``: every output of a batch carries its number, for rollback."""
    return f"part-{batch:06d}-{task:05d}"


def run_batch_task(task: Task, in_fs: Any, out_fs: Any, out_root: str, spec: ProcessorSpec, fmt: str,
                   memory: int = MEMORY, progress: Callable[[int], None] | None = None) -> TaskResult:
    """One split through the batch processors into staged part files; all or nothing.

    Returns the staged names (published by the demux commit).  ``progress`` is
    told the input bytes of each batch parsed.
    """
    root = out_root.rstrip("/")
    bad_path = f"{root}/{BAD_CHUNKS}/chunks-{task.batch:06d}-{task.index:05d}.seq"
    bad = SetAsideFile(out_fs, staged_name(bad_path), "demux")
    batcher = ChunkBatcher(spec, max(1 << 16, memory // 32), lambda r: bad.add(r.key(), r.data))
    files = TableFiles(out_fs, root, part_stem(task.batch, task.index), fmt, max(1 << 16, memory // 4))
    try:
        done = 0
        for chunk in read_chunks(in_fs, task.path, task.start, task.end):
            for part, table in batcher.add(chunk):
                files.add(part, table)
            if progress and batcher.stats.bytes > done:
                progress(batcher.stats.bytes - done)
                done = batcher.stats.bytes
        for part, table in batcher.finish():
            files.add(part, table)
        if progress and batcher.stats.bytes > done:
            progress(batcher.stats.bytes - done)
        staged = files.close()
        bad_file = bad.close()
    except BaseException:
        files.abort()
        bad.abort()
        raise
    return TaskResult(task.index, batcher.stats, staged + ([bad_file] if bad_file else []), batcher.by_type)


_WORKER: dict[str, Any] = {}


def _die_with_parent() -> None:
    """A worker outliving a killed demux would go on writing files of a batch the next run redoes (Linux)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _init_worker(in_fs: Any, out_fs: Any, out_root: str, spec: ProcessorSpec, fmt: str, memory: int,
                 counter: Any) -> None:
    _die_with_parent()
    _WORKER.update(in_fs=in_fs, out_fs=out_fs, out_root=out_root, spec=spec, fmt=fmt, memory=memory,
                   counter=counter)


def _count(counter: Any) -> Callable[[int], None] | None:
    if counter is None:
        return None

    def add(n: int) -> None:
        with counter.get_lock():
            counter.value += n

    return add


def _run_in_worker(task: Task) -> TaskResult:
    w = _WORKER
    return run_batch_task(task, w["in_fs"], w["out_fs"], w["out_root"], w["spec"], w["fmt"], w["memory"],
                          _count(w["counter"]))


class Pool:
    """Worker processes for a whole demux run (every batch); ``bytes_done`` counts input parsed so far."""

    def __init__(self, in_fs: Any, out_fs: Any, out_root: str, spec: ProcessorSpec, fmt: str,
                 workers: int | None = None, memory: int = MEMORY) -> None:
        self.args = (in_fs, out_fs, out_root, spec, fmt, memory)
        self.workers = max(1, workers or os.cpu_count() or 1)
        methods = multiprocessing.get_all_start_methods()
        self.ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
        self.counter = self.ctx.Value("q", 0)
        self._pool: Any = None

    def bytes_done(self) -> int:
        return self.counter.value

    def run(self, tasks: list[Task], poll: Callable[[], None] | None = None) -> list[TaskResult]:
        """Every task's result, in task order; ``poll`` is called now and then while they run."""
        if self.workers == 1 or len(tasks) <= 1:
            add = _count(self.counter)
            out = []
            for t in tasks:
                out.append(run_batch_task(t, *self.args, progress=lambda n: (add(n), poll and poll())))
            return out
        if self._pool is None:
            self._pool = self.ctx.Pool(self.workers, initializer=_init_worker, initargs=(*self.args, self.counter))
        results: list[TaskResult] = []
        it = self._pool.imap_unordered(_run_in_worker, tasks)
        while len(results) < len(tasks):
            try:
                results.append(it.next(timeout=0.2))
            except multiprocessing.TimeoutError:
                pass
            if poll:
                poll()
        return sorted(results, key=lambda r: r.index)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
