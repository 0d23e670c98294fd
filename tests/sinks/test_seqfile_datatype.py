"""``{datatype}`` in a seqfile store's path: a file per datatype, each rolling on its own, a bounded number open.

Real files on local disk (and a staged memory:// store), a real SIGKILLed writer process for recovery.
"""

from __future__ import annotations

import gc
import os
import subprocess
import tracemalloc
from pathlib import Path

import fsspec
import pytest

from logflume.chunk import Chunk
from logflume.component import Context
from logflume.errors import ConfigError
from sinks.seqfile import SeqFileSink
from tests.conftest import sink_file_order
from tests.store.conftest import SSHD, Sshd, check_delivery, make_sink, read_chunks, run_until_acked, wait_for

from .conftest import DATATYPES, DIRS, TypedChunkMaker, files_by_dir

pytestmark = pytest.mark.timeout(90)



def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_each_datatype_gets_its_own_files_rolling_on_its_own(tmp_path: Path, context: Context) -> None:
    root = tmp_path / "store"
    sink = make_sink(SeqFileSink, "s", {"url": str(root), "path": "logs/{datatype}/{date}", "roll_size": "20KiB"},
                     context)
    sink.start()
    maker, sent = TypedChunkMaker(size=3000), []
    try:
        for i in range(12):
            # Nginx every batch, app:json every other, Syslog once: three files open, rolling apart
            streams = [s for s, dt in DATATYPES.items()
                       if dt == "Nginx" or (dt == "app:json" and i % 2 == 0) or (dt == "Syslog" and i == 0)]
            batch = [maker.chunk(s) for s in streams for _ in range(2)]
            sink.deliver(batch)
            sent += batch
            assert sink.open_files <= 3
            hidden = sorted(p.relative_to(root).parts[1] for p in root.glob("logs/*/*/.*.inprogress"))
            assert len(hidden) == len(set(hidden)), "one file in progress per datatype"
        assert sink.open_files == 3
    finally:
        sink.stop()
    assert not list(root.glob("logs/*/*/.*")), "every file finished at stop"
    by_dir = files_by_dir(root / "logs")
    assert set(by_dir) == set(DIRS.values())
    for dt, d in DIRS.items():
        got = read_chunks(by_dir[d])
        assert {c.datatype for c in got} == {dt}, f"{d} holds only {dt}"
        check_delivery([c for c in sent if c.datatype == dt], got, max_duplicates=0)
    # 24 Nginx chunks (72 KB) roll into several files, 2 Syslog chunks stay in one: each rolls on its own
    assert len(by_dir["Nginx"]) >= 3 and len(by_dir["Syslog"]) == 1
    assert context.metrics.value("seqfile_files_evicted_total", kind="sink", component="s") == 0


def test_roll_interval_closes_each_datatype_file_by_its_own_age(tmp_path: Path, context: Context) -> None:
    root = tmp_path / "store"
    sink = make_sink(SeqFileSink, "s", {"url": str(root), "path": "{datatype}/{date}", "roll_interval": "1s"},
                     context)
    sink.start()
    maker = TypedChunkMaker(size=500)
    try:
        sink.deliver([maker.chunk(s) for s in DATATYPES])
        wait_for(lambda: sink.open_files == 0, 20, message="every datatype's file closed by age")
        assert sorted(files_by_dir(root)) == sorted(DIRS.values())
    finally:
        sink.stop()


def test_a_hostile_stream_of_10k_datatypes_keeps_descriptors_and_memory_bounded(tmp_path: Path,
                                                                                  context: Context) -> None:
    # fsyncs of 10k tiny files would take minutes on a loaded disk: tmpfs when there is one
    base = Path("/dev/shm") if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else tmp_path
    root = base / f"logflume-test-{os.getpid()}-{tmp_path.name}"
    limit, n = 8, 10_000
    sink = make_sink(SeqFileSink, "s", {"url": str(root), "path": "{datatype}/{date}", "max_open_files": limit},
                     context)
    sink.start()
    fds0 = _open_fds()
    grew = None
    try:
        for first in range(0, n, 100):  # 100 new datatypes a batch, each one chunk
            if first == 4000:  # what stays allocated over 2000 more datatypes (a leak per datatype would show)
                gc.collect()
                tracemalloc.start()
            sink.deliver([Chunk("evil", "s", f"dt{i}:x", i + 1, "e", f"{i}\n".encode())
                          for i in range(first, first + 100)])
            if first == 5900:
                gc.collect()
                grew = tracemalloc.get_traced_memory()[0]
                tracemalloc.stop()
            assert sink.open_files <= limit
            assert _open_fds() <= fds0 + limit + 2, "descriptors bounded by max_open_files"
        assert context.metrics.value("seqfile_open_files", kind="sink", component="s") == limit
        assert context.metrics.value("seqfile_files_evicted_total", kind="sink", component="s") == n - limit
    finally:
        tracemalloc.stop()
        sink.stop()
    try:
        assert grew is not None and grew < 256 << 10, f"2000 more datatypes kept {grew} bytes allocated"
        dirs = sorted(p.name for p in root.iterdir())
        assert len(dirs) == n and dirs[0] == "dt0%3Ax"
        files = sorted(root.glob("*/*/*.seq"))
        assert len(files) == n, "each datatype's file finished when it was evicted (or at stop)"
        got = read_chunks(files)
        assert sorted(c.seq_id for c in got) == list(range(1, n + 1)), "nothing lost, nothing doubled"
        assert all(p.parts[-3] == c.datatype.replace(":", "%3A") for p, c in zip(files, got, strict=True))
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)


def test_more_datatypes_than_open_files_interleaved_lose_nothing_and_keep_order(tmp_path: Path,
                                                                                context: Context) -> None:
    root = tmp_path / "store"
    sink = make_sink(SeqFileSink, "s", {"url": str(root), "path": "{datatype}", "max_open_files": 4}, context)
    sink.start()
    sent: list[Chunk] = []
    offsets: dict[str, int] = {}
    try:
        for b in range(30):  # 12 datatypes round robin over 4 open files: nearly every chunk evicts one
            batch = []
            for k in range(6):
                dt = f"type{(b * 6 + k) % 12}"
                offsets[dt] = offsets.get(dt, 0) + 10
                batch.append(Chunk("h", f"stream-{dt}", dt, offsets[dt], "e", f"{b:04d}-{k} {dt:>5}\n".encode()))
            sink.deliver(batch)
            sent += batch
            assert sink.open_files <= 4
    finally:
        sink.stop()
    for i in range(12):
        files = sorted((root / f"type{i}").glob("*.seq"), key=lambda p: sink_file_order(p.name))
        got = read_chunks(files)
        check_delivery([c for c in sent if c.datatype == f"type{i}"], got, max_duplicates=0)


def test_sigkill_leaves_a_file_in_progress_per_datatype_and_a_restart_recovers_each_in_place(
        tmp_path: Path) -> None:
    root, state = tmp_path / "store", tmp_path / "state"
    acked = run_until_acked("tests.sinks.datatype_writer", [str(root), str(state)], tmp_path, acks_before_kill=300)
    inprogress = sorted(p.relative_to(root).parts[0] for p in root.glob("*/*/.*.seq.inprogress"))
    assert inprogress == sorted(DIRS.values()), "the kill left one file in progress per datatype"

    # a finished file already holding one of the names: the recovered one must still stay in its datatype
    taken = next(root.glob("app%3Ajson/*/.*.inprogress"))
    clash = taken.with_name(taken.name[1:-len(".inprogress")])
    if not clash.exists():
        clash.write_bytes(b"")
    context = Context(agent_name="coll1", data_dir=state)
    sink = make_sink(SeqFileSink, "store", {"url": str(root), "path": "{datatype}/{date}"}, context)
    sink.start()
    sink.stop()
    if clash.stat().st_size == 0:
        clash.unlink()
    assert not list(root.glob("*/*/.*")), "every in-progress file recovered on start"
    assert context.metrics.value("seqfile_files_recovered_total", kind="sink", component="store") == 3
    by_dir = files_by_dir(root)
    assert sorted(by_dir) == sorted(DIRS.values())
    got: set[tuple[str, int]] = set()
    for dt, d in DIRS.items():
        chunks = read_chunks(by_dir[d])
        assert {c.datatype for c in chunks} == {dt}
        got |= {(c.stream, c.seq_id) for c in chunks}
    missing = acked - got
    assert not missing, f"{len(missing)} acknowledged chunks lost, e.g. {sorted(missing)[:3]}"


def test_staged_store_uploads_each_datatype_under_its_directory(tmp_path: Path, context: Context) -> None:
    url = f"memory://bucket{os.getpid()}/{tmp_path.name}/logs"
    staging = tmp_path / "staging"
    sink = make_sink(SeqFileSink, "s", {"url": url, "path": "{datatype}/{date}", "roll_size": "10KiB",
                                        "staging_dir": str(staging), "max_open_files": 2}, context)
    assert sink.staged
    fs = fsspec.filesystem("memory")
    root = url[len("memory://"):]
    sink.start()
    maker, sent = TypedChunkMaker(size=4000), []
    try:
        for _ in range(6):
            batch = maker.batch(3)
            sink.deliver(batch)
            sent += batch
            local = [p for p in staging.rglob("*") if p.is_file()]
            assert len(local) <= 2 and all(p.name.endswith(".inprogress") for p in local), local
            assert not [p for p in fs.find(root) if p.endswith(".inprogress")]
    finally:
        sink.stop()
    assert not [p for p in staging.rglob("*") if p.is_file()]
    try:
        for dt, d in DIRS.items():
            remote = sorted(fs.glob(f"{root}/{d}/*/*.seq"), key=lambda p: sink_file_order(p.rsplit("/", 1)[-1]))
            got = read_chunks(remote, opener=fs.open)
            assert {c.datatype for c in got} == {dt}
            check_delivery([c for c in sent if c.datatype == dt], got, max_duplicates=0)
    finally:
        fs.rm(root, recursive=True)


def test_jobs_find_every_datatype_s_files(tmp_path: Path, context: Context) -> None:
    from jobs.sinkfiles import list_finished, open_fs

    root = tmp_path / "store"
    sink = make_sink(SeqFileSink, "s", {"url": str(root), "path": "{datatype}/{date}/{hour}"}, context)
    sink.start()
    maker = TypedChunkMaker(size=100)
    sink.deliver(maker.batch(6))
    sink.stop()
    fs, r = open_fs(str(root))
    found = list_finished(fs, r)
    assert sorted(f.rel.split("/")[0] for f in found) == sorted(DIRS.values())
    assert sorted(c.datatype for f in found for c in read_chunks([f.path])) == sorted(list(DATATYPES.values()) * 2)


@pytest.mark.parametrize(("path", "message"), [
    ("{foo}/{date}", "unknown field {foo}: expected {date}, {hour} or {datatype}"),
    ("{datatype}/{Date}", "unknown field {Date}"),
    ("a:{datatype}", "{date} / {hour} / {datatype}"),
])
def test_a_bad_path_template_is_refused_naming_file_key_and_fields(tmp_path: Path, path: str, message: str) -> None:
    from logflume.settings import parse_settings

    context = Context(agent_name="coll1", data_dir=tmp_path / "state", config_file="collector.yaml")
    with pytest.raises(ConfigError) as err:
        values = parse_settings(SeqFileSink.schema(), {"url": "/x", "path": path}, "routes.audit.store.primary",
                                "collector.yaml")
        SeqFileSink("routes.audit.store.primary", values, context)
    assert err.value.path == "routes.audit.store.primary.path"
    assert err.value.file == "collector.yaml"
    assert message in err.value.message


def test_max_open_files_is_a_positive_integer(context: Context) -> None:
    with pytest.raises(ConfigError) as err:
        make_sink(SeqFileSink, "s", {"url": "/x", "path": "{datatype}", "max_open_files": 0}, context)
    assert err.value.path == "s.max_open_files"
    sink = make_sink(SeqFileSink, "s", {"url": "/x", "path": "{datatype}/{date}"}, context)
    assert sink.partitioned and sink.config.max_open_files == 64


@pytest.mark.skipif(not os.path.exists(SSHD), reason="OpenSSH sshd is not installed (openssh-server)")
@pytest.mark.parametrize("sync", ["every_batch", "none"])
def test_sftp_files_of_several_datatypes_share_one_session(tmp_path: Path, context: Context, sync: str) -> None:
    # With sync none, writes of every datatype stay unanswered while another file rolls (open, rename): the
    # replies that call reads must still reach the writer they belong to.
    (tmp_path / "sshd").mkdir()
    sshd = Sshd(tmp_path / "sshd")
    sshd.start()
    root = tmp_path / "sftp-root"
    try:
        sink = make_sink(SeqFileSink, "s", {"url": sshd.url(root), "storage_options": sshd.storage_options(),
                                            "timeout": "5s", "path": "{datatype}/{date}", "roll_size": "24KiB",
                                            "sync": sync, "max_open_files": 2}, context)
        sink.start()
        maker, sent = TypedChunkMaker(size=3000), []
        try:
            for _ in range(10):
                batch = maker.batch(6)
                sink.deliver(batch)
                sent += batch
        finally:
            sink.stop()
    finally:
        sshd.close()
    by_dir = files_by_dir(root)
    assert sorted(by_dir) == sorted(DIRS.values())
    for dt, d in DIRS.items():
        check_delivery([c for c in sent if c.datatype == dt], read_chunks(by_dir[d]), max_duplicates=0)
    assert not list(root.glob("*/*/.*"))
