"""Local demux engine: input files cut into splits at sync markers, one task per split, all cores.

A split is a byte range of one file; the SequenceFile reader starts at the
first sync marker inside it and stops at the first one past its end (Hadoop's
rule), so adjacent splits read every record exactly once and big files use
every core.  Each task writes its own ``part-NNNNN`` file per partition.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobs.outputs import write_partitions
from jobs.records import DemuxStats, ProcessorSpec, RecordSplitter, bad_chunks_file
from jobs.sinkfiles import InputFile, read_chunks

#: Default split size: large enough to amortise a task, small enough to balance cores.
SPLIT_SIZE = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Task:
    index: int
    path: str
    start: int
    end: int


@dataclass
class TaskResult:
    index: int
    stats: DemuxStats
    files: list[str] = field(default_factory=list)


def plan_tasks(files: list[InputFile], split_size: int = SPLIT_SIZE) -> list[Task]:
    """Cut each file into ``split_size`` ranges; numbered in path order, so part names are stable."""
    tasks: list[Task] = []
    for f in files:
        start = 0
        while True:
            end = min(f.size, start + split_size)
            tasks.append(Task(len(tasks), f.path, start, end))
            if end >= f.size:
                break
            start = end
    return tasks


def run_task(task: Task, in_fs: Any, out_fs: Any, out_root: str, spec: ProcessorSpec, fmt: str) -> TaskResult:
    bad = bad_chunks_file(out_fs, out_root, task.index)
    splitter = RecordSplitter(spec, lambda r: bad.add(r.key(), r.data))
    records = (pr for chunk in read_chunks(in_fs, task.path, task.start, task.end) for pr in splitter.split(chunk))
    try:
        files = write_partitions(records, out_fs, out_root, task.index, fmt)
        bad_file = bad.close()
    except BaseException:
        bad.abort()
        raise
    return TaskResult(task.index, splitter.stats, files + ([bad_file] if bad_file else []))


_WORKER: dict[str, Any] = {}


def _init_worker(in_fs: Any, out_fs: Any, out_root: str, spec: ProcessorSpec, fmt: str) -> None:
    _WORKER.update(in_fs=in_fs, out_fs=out_fs, out_root=out_root, spec=spec, fmt=fmt)


def _run_in_worker(task: Task) -> TaskResult:
    w = _WORKER
    return run_task(task, w["in_fs"], w["out_fs"], w["out_root"], w["spec"], w["fmt"])


def run(tasks: list[Task], in_fs: Any, out_fs: Any, out_root: str, spec: ProcessorSpec, fmt: str,
        workers: int | None = None, progress: Callable[[TaskResult], None] | None = None) -> list[TaskResult]:
    """Run every task, on ``workers`` processes (default: all cores); results in task order."""
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks) or 1))
    results: list[TaskResult] = []
    if workers == 1:
        for t in tasks:
            results.append(run_task(t, in_fs, out_fs, out_root, spec, fmt))
            if progress:
                progress(results[-1])
        return results
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(in_fs, out_fs, out_root, spec, fmt)) as pool:
        for result in pool.imap_unordered(_run_in_worker, tasks):
            results.append(result)
            if progress:
                progress(result)
    return sorted(results, key=lambda r: r.index)
