"""file, console and null sinks."""

from __future__ import annotations

import time

from logflume.chunk import Chunk
from logflume.component import Context
from logflume.settings import parse_settings
from sinks.console import ConsoleSink
from sinks.file import FileSink
from sinks.null import NullSink


def make(cls, raw, tmp_path):
    return cls("s", parse_settings(cls.schema(), {"channel": "c", **raw}, "sinks.s", None), Context(data_dir=tmp_path))


def chunks(n, size=100):
    out, off = [], 0
    for i in range(n):
        data = (f"rec {i:06d} ".ljust(size - 1, "x") + "\n").encode()
        off += len(data)
        out.append(Chunk("h", "s", "Raw", off, "e", data))
    return out


def test_file_sink_rolls_by_size_and_renames_closed_files(tmp_path):
    sink = make(FileSink, {"url": str(tmp_path / "out"), "roll_size": 1000}, tmp_path)
    sink.start()
    cs = chunks(50)
    for i in range(0, 50, 5):
        sink.deliver(cs[i:i + 5])
    in_progress = [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".inprogress")]
    assert len(in_progress) == 1 and in_progress[0].name.startswith(".")
    sink.stop()
    files = sorted((tmp_path / "out").iterdir())
    assert files and not any(p.name.startswith(".") for p in files)
    assert len(files) == 5, [p.name for p in files]  # 500 bytes per delivery, rolled after >= 1000 bytes
    assert b"".join(p.read_bytes() for p in files) == b"".join(c.data for c in cs)


def test_file_sink_rolls_by_time(tmp_path):
    sink = make(FileSink, {"url": f"file://{tmp_path}/out", "roll_interval": "100ms"}, tmp_path)
    sink.start()
    cs = chunks(3)
    sink.deliver(cs[:1])
    time.sleep(0.15)
    sink.deliver(cs[1:])
    sink.stop()
    assert len(list((tmp_path / "out").iterdir())) == 2


def test_file_sink_recovers_in_progress_file_after_crash(tmp_path):
    sink = make(FileSink, {"url": str(tmp_path / "out")}, tmp_path)
    sink.start()
    sink.deliver(chunks(3))
    # simulate a crash: no stop(); a new sink starts on the same directory
    sink2 = make(FileSink, {"url": str(tmp_path / "out")}, tmp_path)
    sink2.start()
    names = [p.name for p in (tmp_path / "out").iterdir()]
    assert len(names) == 1 and not names[0].startswith("."), names
    assert (tmp_path / "out" / names[0]).read_bytes() == b"".join(c.data for c in chunks(3))
    sink2.stop()


def test_console_sink_prints_records_and_summaries(tmp_path, capfd):
    rec = make(ConsoleSink, {"format": "records"}, tmp_path)
    rec.deliver(chunks(2, size=20))
    summ = make(ConsoleSink, {}, tmp_path)
    summ.deliver(chunks(2, size=20))
    out = capfd.readouterr().out.splitlines()
    assert out[0].startswith("rec 000000") and out[1].startswith("rec 000001")
    assert "offsets=0..20 bytes=20 records=1" in out[2]
    assert "offsets=20..40" in out[3]


def test_null_sink_counts(tmp_path):
    sink = make(NullSink, {}, tmp_path)
    sink.deliver(chunks(4))
    assert sink.context.metrics.value("bytes_in_total", kind="sink", component="s") == 400
