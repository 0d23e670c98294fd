"""console and null sinks."""

from __future__ import annotations

from logflume.chunk import Chunk
from logflume.component import Context
from logflume.settings import parse_settings
from sinks.console import ConsoleSink
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
