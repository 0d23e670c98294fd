"""BufferStore against a real SFTP primary (OpenSSH sshd on loopback) and a local secondary."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from collector.store import BufferStore
from logflume.chunk import Chunk
from logflume.component import Context
from logflume.errors import ConfigError, DeliveryError, TryLater
from logflume.sequencefile import SequenceFileReader
from sinks.seqfile import SeqFileSink

from .conftest import ChunkMaker, Sshd, check_delivery, final_files, make_sink, read_chunks, wait_for

pytestmark = pytest.mark.timeout(120)


def _store(sshd: Sshd, tmp_path: Path, context: Context, **extra) -> BufferStore:
    raw = {
        "primary": {"type": "seqfile", "url": sshd.url(tmp_path / "primary"), "roll_size": "40KiB",
                    "storage_options": sshd.storage_options(), "timeout": "5s", **extra.pop("primary", {})},
        "secondary": {"dir": str(tmp_path / "secondary"), "file_size": "16KiB", **extra.pop("secondary", {})},
        "retry_interval": "300ms",
        **extra,
    }
    return make_sink(BufferStore, "store", raw, context)


def _metric(context: Context, name: str) -> float:
    return context.metrics.value(name, kind="sink", component="store")


def test_sftp_outage_buffers_to_secondary_and_replays_in_order(sshd: Sshd, tmp_path: Path, context: Context) -> None:
    store = _store(sshd, tmp_path, context)
    store.start()
    maker, sent = ChunkMaker(size=1500), []
    batch_size = 6

    def send(n: int) -> None:
        for _ in range(n):
            batch = maker.batch(batch_size)
            store.deliver(batch)  # never raises: primary or secondary takes every batch
            sent.extend(batch)

    try:
        send(10)
        assert store.primary_up and _metric(context, "primary_up") == 1
        assert store.backlog_bytes() == 0
        sshd.stop()  # mid-stream: the open primary file is cut off
        send(15)
        assert not store.primary_up and _metric(context, "primary_up") == 0
        assert _metric(context, "failovers_total") == 1
        assert store.backlog_bytes() > 15 * batch_size * 1500 * 0.9
        assert _metric(context, "backlog_bytes") == store.backlog_bytes()
        time.sleep(1.0)  # a few failed retries while the server is away
        assert not store.primary_up
        sshd.start()
        send(10)  # still buffered until the backlog is drained: per-stream order
        wait_for(lambda: store.primary_up, 30, message="backlog replayed to the restarted primary")
        assert store.backlog_bytes() == 0 and _metric(context, "backlog_bytes") == 0
        assert _metric(context, "replayed_bytes_total") >= 25 * batch_size * 1500 * 0.9
        send(5)
    finally:
        store.stop()
    assert not list((tmp_path / "primary").glob("*/.*")), "the cut-off primary file was recovered"
    assert not [p for p in (tmp_path / "secondary").iterdir() if p.name.endswith((".seq", ".inprogress"))]
    got = read_chunks(final_files(tmp_path / "primary"))
    # the only possible duplicates are records of the one batch that failed on the primary
    check_delivery(sent, got, max_duplicates=batch_size)


def test_secondary_full_answers_try_later_and_keeps_every_batch(sshd: Sshd, tmp_path: Path, context: Context) -> None:
    sshd.stop()  # the primary is away from the start
    store = _store(sshd, tmp_path, context, secondary={"max_bytes": "60KiB"})
    store.start()
    maker, sent = ChunkMaker(size=2000), []
    refused: list[Chunk] | None = None
    try:
        assert not store.primary_up
        for _ in range(40):
            batch = maker.batch(3)
            try:
                store.deliver(batch)
            except TryLater as exc:
                refused = batch
                assert "secondary full" in str(exc) and exc.delay > 0
                break
            sent.extend(batch)
        assert refused is not None, "a 60 KiB secondary must fill up"
        assert store.backlog_bytes() <= 60 * 1024
        assert _metric(context, "secondary_full_total") == 1
        with pytest.raises(TryLater):  # still full: the agent keeps its data and retries
            store.deliver(refused)
        sshd.start()
        wait_for(lambda: store.primary_up, 30, message="primary back and backlog drained")
        store.deliver(refused)  # the agent's retry now goes through
        sent.extend(refused)
    finally:
        store.stop()
    check_delivery(sent, read_chunks(final_files(tmp_path / "primary")), max_duplicates=0)


def test_backlog_left_by_a_stopped_store_is_replayed_at_replay_rate(sshd: Sshd, tmp_path: Path,
                                                                    context: Context) -> None:
    sshd.stop()
    store = _store(sshd, tmp_path, context)
    store.start()
    maker, sent = ChunkMaker(size=4000), []
    for _ in range(20):
        batch = maker.batch(2)
        store.deliver(batch)
        sent.extend(batch)
    store.stop()
    backlog = sum(len(c.data) for c in sent)
    assert len(list((tmp_path / "secondary").glob("*.seq"))) > 1  # rolled at file_size, closed at stop

    sshd.start()
    rate = 100_000
    again = _store(sshd, tmp_path, Context(agent_name="coll1", data_dir=tmp_path / "state"),
                   replay_rate=rate, batch_bytes="16KiB")
    t0 = time.monotonic()
    again.start()
    try:
        assert not again.primary_up  # a backlog is replayed before anything else goes to the primary
        wait_for(lambda: again.primary_up, 30, message="replay of the old backlog")
        elapsed = time.monotonic() - t0
    finally:
        again.stop()
    assert elapsed >= (backlog - 16 * 1024) / rate * 0.9, f"{backlog} bytes replayed in {elapsed:.2f}s"
    check_delivery(sent, read_chunks(final_files(tmp_path / "primary")), max_duplicates=0)


def test_seqfile_sink_on_sftp_fails_then_recovers_its_cut_off_file(sshd: Sshd, tmp_path: Path,
                                                                  context: Context) -> None:
    root = tmp_path / "primary"
    sink = make_sink(SeqFileSink, "s", {"url": sshd.url(root), "storage_options": sshd.storage_options(),
                                        "timeout": "5s"}, context)
    sink.start()
    maker, acked = ChunkMaker(), []
    try:
        for _ in range(5):
            batch = maker.batch(4)
            sink.deliver(batch)
            acked.extend(batch)
        assert len(list(root.glob("*/.*.inprogress"))) == 1 and not final_files(root)
        assert sink.files.target.server_fsync is True  # OpenSSH fsyncs each acknowledged batch on request
        sshd.stop()
        with pytest.raises(DeliveryError, match="failed"):
            sink.deliver(maker.batch(4))
        with pytest.raises(DeliveryError):
            sink.deliver(maker.batch(4))  # still away
        sshd.start()
        batch = maker.batch(4)
        sink.deliver(batch)  # reconnects, recovers the cut-off file, writes a new one
        acked.extend(batch)
        assert len(final_files(root)) == 1
    finally:
        sink.stop()
    got = read_chunks(final_files(root))
    assert len(final_files(root)) == 2
    acked_ids = {(c.stream, c.seq_id) for c in acked}
    assert acked_ids <= {(c.stream, c.seq_id) for c in got}
    assert sink.writes() == [sshd.url(root)]


def test_primary_url_shorthand_and_config_errors(tmp_path: Path, context: Context) -> None:
    store = make_sink(BufferStore, "store", {"primary": str(tmp_path / "p"), "secondary": str(tmp_path / "s")},
                      context)
    assert isinstance(store.primary, SeqFileSink) and store.primary.local_root == str(tmp_path / "p")
    assert store.config.secondary.max_bytes == 10 << 30
    cases = [
        ({"primary": 5, "secondary": "/s"}, "store.primary", "expected a sink config"),
        ({"primary": {"type": "nope"}, "secondary": "/s"}, "store.primary.type", "unknown sink type 'nope'"),
        ({"primary": {"url": "/p", "roll": 1}, "secondary": "/s"}, "store.primary.roll", "unknown key"),
        ({"primary": "/p"}, "store.secondary", "missing required key"),
        ({"primary": "/p", "secondary": "/p"}, "store.secondary.dir", "must differ"),
        ({"primary": "/p", "secondary": {"dir": "/s", "max_bytes": "lots"}}, "store.secondary.max_bytes", "size"),
        ({"primary": "/p", "secondary": "/s", "retry_jitter": 1.5}, "store.retry_jitter", "fraction"),
    ]
    for raw, path, message in cases:
        with pytest.raises(ConfigError) as err:
            make_sink(BufferStore, "store", raw, context)
        assert err.value.path == path, raw
        assert message in err.value.message, (raw, err.value.message)


def _backlog_from_a_down_primary(tmp_path: Path, n_batches: int, chunk_size: int = 4000) -> list[Chunk]:
    """Fill the secondary by running a store whose primary refuses connections (nothing on port 1)."""
    ctx = Context(agent_name="coll1", data_dir=tmp_path / "state")
    down = make_sink(BufferStore, "store", {"primary": {"url": "sftp://nobody@127.0.0.1:1/x", "timeout": "2s"},
                                            "secondary": {"dir": str(tmp_path / "secondary"), "file_size": "64KiB"},
                                            "retry_interval": "1h"}, ctx)
    down.start()
    maker, sent = ChunkMaker(size=chunk_size), []
    for _ in range(n_batches):
        batch = maker.batch(3)
        down.deliver(batch)
        sent.extend(batch)
    down.stop()
    return sent


def test_replay_interrupted_by_stop_resumes_without_resending(tmp_path: Path) -> None:
    sent = _backlog_from_a_down_primary(tmp_path, 20)  # 240 KB in 64 KiB files
    raw = {"primary": str(tmp_path / "primary"), "secondary": str(tmp_path / "secondary"),
           "replay_rate": "100KiB", "batch_bytes": "12KiB"}
    ctx = Context(agent_name="coll1", data_dir=tmp_path / "state")
    first = make_sink(BufferStore, "store", raw, ctx)
    first.start()
    wait_for(lambda: ctx.metrics.value("replayed_bytes_total", kind="sink", component="store") > 30_000, 20,
             message="a part of the backlog replayed")  # the whole takes ~2.4 s at 100 KiB/s
    first.stop()
    progress = tmp_path / "secondary" / "replay.progress"
    part = read_chunks(final_files(tmp_path / "primary"))
    assert 0 < len(part) < len(sent)
    assert progress.exists() or len(list((tmp_path / "secondary").glob("*.seq"))) < 4

    raw.pop("replay_rate")
    second = make_sink(BufferStore, "store", raw, Context(agent_name="coll1", data_dir=tmp_path / "state"))
    second.start()
    try:
        wait_for(lambda: second.primary_up, 30, message="the rest of the backlog")
    finally:
        second.stop()
    assert not progress.exists()
    check_delivery(sent, read_chunks(final_files(tmp_path / "primary")), max_duplicates=0)


def test_damaged_backlog_file_is_set_aside_not_deleted(tmp_path: Path) -> None:
    sent = _backlog_from_a_down_primary(tmp_path, 6)
    files = sorted((tmp_path / "secondary").glob("*.seq"))
    assert len(files) >= 2
    damaged = files[0]
    data = bytearray(damaged.read_bytes())
    with open(damaged, "rb") as f:
        reader = SequenceFileReader(f)
        records = reader.iter_raw()
        next(records)
        cut = reader.last_record_end  # damage the second record's length fields
    data[cut:cut + 8] = b"\x7f\xff\xff\xff\x00\x00\x00\x01"
    damaged.write_bytes(bytes(data))
    store = make_sink(BufferStore, "store", {"primary": str(tmp_path / "primary"),
                                             "secondary": str(tmp_path / "secondary")},
                      Context(agent_name="coll1", data_dir=tmp_path / "state"))
    store.start()
    try:
        wait_for(lambda: store.primary_up, 30, message="replay past the damaged file")
    finally:
        store.stop()
    aside = tmp_path / "secondary" / "corrupt" / damaged.name
    assert aside.exists() and aside.read_bytes() == bytes(data)
    got = read_chunks(final_files(tmp_path / "primary"))
    with open(aside, "rb") as f:
        first = next(SequenceFileReader(f).iter_chunks())
    in_damaged = {(c.stream, c.seq_id) for c in sent} - {(c.stream, c.seq_id) for c in got}
    assert (first.stream, first.seq_id) not in in_damaged  # the whole record before the damage was replayed
    assert in_damaged, "records after the damage stay only in the set-aside file"


def test_seqfile_sink_on_sftp_recovers_files_left_by_a_previous_run(sshd: Sshd, tmp_path: Path,
                                                                     context: Context) -> None:
    root = tmp_path / "primary"
    raw = {"url": sshd.url(root), "storage_options": sshd.storage_options(), "timeout": "5s"}
    first = make_sink(SeqFileSink, "s", raw, context)
    first.start()
    acked = ChunkMaker().batch(5)
    first.deliver(acked)
    sshd.stop()
    first.stop()  # cannot finish its file: the server is gone
    assert len(list(root.glob("*/.*.inprogress"))) == 1
    sshd.start()
    second = make_sink(SeqFileSink, "s", raw, Context(agent_name="coll1", data_dir=tmp_path / "state"))
    second.start()  # finds the in-progress file on the server and finishes it
    second.stop()
    assert not list(root.glob("*/.*"))
    check_delivery(acked, read_chunks(final_files(root)), max_duplicates=0)


def test_an_in_progress_file_of_small_records_is_recovered_over_sftp_in_pipelined_reads(
        sshd: Sshd, tmp_path: Path, context: Context, monkeypatch) -> None:
    """3,000 records of 300 bytes left in progress: the restart reads the file in pipelined blocks.  Read
    through paramiko's own buffered file, 9,047 reads here waited for their answer one by one (29 s for one
    4.7 MB file of small records in the chaos run, before the collector listened again)."""
    import paramiko
    from paramiko.sftp import CMD_READ

    root = tmp_path / "primary"
    raw = {"url": sshd.url(root), "storage_options": sshd.storage_options(), "timeout": "5s"}
    first = make_sink(SeqFileSink, "s", raw, context)
    first.start()
    maker, acked = ChunkMaker(size=300), []
    for _ in range(30):
        batch = maker.batch(100)
        first.deliver(batch)
        acked.extend(batch)
    sshd.stop()
    first.stop()
    left = list(root.glob("*/.*.inprogress"))
    assert len(left) == 1 and left[0].stat().st_size > 1_000_000
    waits = []
    request = paramiko.SFTPClient._request

    def counting(self, t, *args):
        if t == CMD_READ:
            waits.append(t)
        return request(self, t, *args)

    monkeypatch.setattr(paramiko.SFTPClient, "_request", counting)
    sshd.start()
    second = make_sink(SeqFileSink, "s", raw, Context(agent_name="coll1", data_dir=tmp_path / "state"))
    second.start()
    second.stop()
    # paramiko's prefetch now and then answers a piece with a read of its own (0-41 seen, of 9,047 before)
    assert len(waits) < 200, f"{len(waits)} reads waited for their answer one by one"
    assert not list(root.glob("*/.*"))
    check_delivery(acked, read_chunks(final_files(root)), max_duplicates=0)


def test_staged_upload_to_sftp_keeps_the_local_copy_until_the_server_has_it(sshd: Sshd, tmp_path: Path,
                                                                            context: Context) -> None:
    root, staging = tmp_path / "primary", tmp_path / "staging"
    sink = make_sink(SeqFileSink, "s", {"url": sshd.url(root), "storage_options": sshd.storage_options(),
                                        "timeout": "5s", "staging": "always", "staging_dir": str(staging),
                                        "roll_size": "12KiB"}, context)
    assert sink.staged
    sink.start()
    maker, acked = ChunkMaker(size=5000), []

    def staged_files() -> list[Path]:
        return sorted(p for p in staging.rglob("*.seq") if p.is_file())

    try:
        batch = maker.batch(3)  # 15 KB: rolls, uploads
        sink.deliver(batch)
        acked.extend(batch)
        assert len(final_files(root)) == 1 and not staged_files()
        sshd.stop()
        batch = maker.batch(3)
        sink.deliver(batch)  # fsynced locally: acked although the upload at roll failed
        acked.extend(batch)
        assert len(staged_files()) == 1, "the finished file waits on local disk"
        with pytest.raises(DeliveryError):
            sink.deliver(maker.batch(1))  # the store is away: refuse more until the upload went through
        sshd.start()
        batch = maker.batch(1)
        sink.deliver(batch)  # uploads the waiting file first
        acked.extend(batch)
        assert not staged_files()
    finally:
        sink.stop()
    assert not [p for p in staging.rglob("*") if p.is_file()]
    assert not list(root.glob("*/.*")), "no half-uploaded file on the server"
    check_delivery(acked, read_chunks(final_files(root)), max_duplicates=0)
    assert context.metrics.value("seqfile_files_uploaded_total", kind="sink", component="s") == 3


def test_server_killed_while_a_sender_streams_big_chunks(sshd: Sshd, tmp_path: Path, context: Context) -> None:
    """The kill lands at an arbitrary point, usually inside a multi-request write of a 100 KB chunk.

    The sender pauses after the restart so the replay can catch up even on a loaded machine
    (a backlog drains only while the primary takes it faster than new batches come).
    """
    import threading

    # files of a few chunks, not one each
    store = _store(sshd, tmp_path, context, secondary={"file_size": "1MiB"}, primary={"roll_size": "2MiB"})
    store.start()
    maker, sent = ChunkMaker(size=100_000), []
    stop, go = threading.Event(), threading.Event()
    go.set()
    errors: list[BaseException] = []

    def sender() -> None:
        try:
            while not stop.is_set():
                if not go.wait(0.1):
                    continue
                batch = maker.batch(3)
                store.deliver(batch)
                sent.extend(batch)
                time.sleep(0.01)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    def after(n: int) -> bool:
        return len(sent) >= n or bool(errors)

    thread = threading.Thread(target=sender)
    thread.start()
    try:
        wait_for(lambda: after(30), 30, message="some batches on the primary")
        sshd.stop()
        wait_for(lambda: not store.primary_up or errors, 30, message="the switch to the secondary")
        n = len(sent)
        wait_for(lambda: after(n + 30), 30, message="batches buffered while the server is away")
        sshd.start()
        n = len(sent)
        wait_for(lambda: after(n + 15), 30, message="batches while the backlog is replayed")
        go.clear()
        wait_for(lambda: store.primary_up or errors, 90, message="the replay")
        go.set()
        n = len(sent)
        wait_for(lambda: after(n + 15), 30, message="batches after the replay")
    finally:
        stop.set()
        thread.join(30)
        store.stop()
    assert not errors, errors
    check_delivery(sent, read_chunks(final_files(tmp_path / "primary")), max_duplicates=3)
