"""The interceptor base: helpers that keep delivery exact, YAML wiring, config errors, the chain."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.runner import source_output
from logflume.chunk import FLAG_PARTIAL, Chunk
from logflume.errors import ConfigError
from logflume.interceptor import InterceptorChain, derive_epoch, keep_spans, sub_chunk
from logflume.source import SourceOutput
from logflume.topology import load_topology

CONFIG = """
agent: {{name: h1, data_dir: {data}}}
sources:
  app:
    type: tests.core.plugins:CountingSource
    channels: [mem]
    interceptors:
{interceptors}
channels:
  mem: {{type: memory}}
sinks:
  out: {{type: null, channel: mem}}
"""


def topo(tmp_path: Path, interceptors: str):
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(CONFIG.format(data=tmp_path / "data", interceptors=interceptors))
    return load_topology(str(cfg))


class Collect(SourceOutput):
    def __init__(self) -> None:
        self.got: list[Chunk] = []

    def deliver(self, chunks, timeout=None) -> None:
        self.got.extend(chunks)


def chunk(data: bytes, seq_id: int | None = None, **kw) -> Chunk:
    return Chunk("h1", "/var/log/web/app.log", "Raw", len(data) if seq_id is None else seq_id, "e1", data, **kw)


def test_sub_chunk_names_its_own_stream_range_and_shares_the_buffer():
    c = chunk(b"aa\nbbb\ncccc", seq_id=111, flags=[FLAG_PARTIAL])
    mid = sub_chunk(c, 3, 7)
    assert (mid.start, mid.seq_id, bytes(mid.data)) == (103, 107, b"bbb\n")
    assert mid.flags == []  # the partial last record is not in this piece
    assert memoryview(mid.data).obj is c.data
    last = sub_chunk(c, 7, 11)
    assert last.flags == [FLAG_PARTIAL] and last.seq_id == 111
    with_ends = chunk(b"ab" b"cd" b"ef", record_ends=[2, 4, 6])
    assert sub_chunk(with_ends, 2, 6).record_ends == [2, 4]


def test_keep_spans_merges_adjacent_records_into_runs():
    c = chunk(b"a\nb\nc\nd\n", seq_id=1008)
    runs = keep_spans(c, [(0, 2), (2, 4), (6, 8)])
    assert [(r.start, r.seq_id, bytes(r.data)) for r in runs] == [(1000, 1004, b"a\nb\n"), (1006, 1008, b"d\n")]
    assert keep_spans(c, [(0, 2), (2, 4), (4, 6), (6, 8)]) == [c]
    assert keep_spans(c, []) == []


def test_derive_epoch_is_stable_and_bounded():
    assert derive_epoch("e1", "abc") == "e1~abc"
    long = derive_epoch("x" * 256, "abc")
    assert len(long) <= 256 and long.endswith("~abc") and long == derive_epoch("x" * 256, "abc")


def test_yaml_wiring_builds_the_chain_in_order_and_check_renders_it(tmp_path):
    t = topo(tmp_path, """
      - {type: host, value: web-7}
      - {type: static, tags: {env: prod, host: ignored}}
      - {type: regex_extractor, pattern: '/var/log/(?P<app>[^/]+)/'}
      - {type: timestamp, format: '%Y-%m-%d'}""")
    spec = t.sources["app"]
    assert [i.name for i in spec.interceptors] == ["app.host", "app.static", "app.regex_extractor", "app.timestamp"]
    rendered = t.render()["sources"]["app"]["interceptors"]
    assert rendered[0] == {"type": "host", "tag": "host", "use_ip": False, "value": "web-7",
                           "preserve_existing": False}
    assert rendered[1]["preserve_existing"] is True
    sink = Collect()
    chain = InterceptorChain([i.component for i in spec.interceptors], sink)
    shared = {"team": "a"}
    c1 = chunk(b"x\n", tags=shared, timestamp=86_400_000)
    c2 = chunk(b"y\n", tags=shared, timestamp=86_400_000)
    chain.deliver([c1, c2])
    assert sink.got == [c1, c2]
    assert c1.tags == {"team": "a", "host": "web-7", "env": "prod", "app": "web", "timestamp": "1970-01-02"}
    assert shared == {"team": "a"}, "a source's shared tag dict must not change"


def test_no_interceptors_keeps_the_plain_channel_output(tmp_path):
    cfg = tmp_path / "plain.yaml"
    cfg.write_text(CONFIG.format(data=tmp_path / "d", interceptors="").replace("    interceptors:\n", ""))
    t = load_topology(str(cfg))
    assert type(source_output(t.sources["app"], t.channels)).__name__ == "ChannelOutput"
    assert "interceptors" not in t.render()["sources"]["app"]


@pytest.mark.parametrize("interceptors, path, expected", [
    ("      - {type: nosuch}", "sources.app.interceptors[0].type", "unknown interceptor type 'nosuch'"),
    ("      - {type: static}", "sources.app.interceptors[0].tags", "missing required key"),
    ("      - {type: host, colour: red}", "sources.app.interceptors[0].colour", "unknown key"),
    ("      - {type: regex_extractor, pattern: '(unclosed'}", "sources.app.interceptors[0].pattern",
     "expected a regular expression"),
    ("      - {type: regex_extractor, pattern: 'no-groups'}", "sources.app.interceptors[0]", "no named group"),
    ("      - {type: timestamp, format: 'yyyy'}", "sources.app.interceptors[0]", "strftime"),
    ("      - {type: static, tags: {'bad key': x}}", "sources.app.interceptors[0].tags", "tags collectors accept"),
    ("      - {type: host, tag: 'a b'}", "sources.app.interceptors[0]", "tags collectors refuse"),
    ("      - {type: host, value: \"a\\tb\"}", "sources.app.interceptors[0]", "tags collectors refuse"),
    ("      - {type: timestamp, format: \"%Y\\n%m\"}", "sources.app.interceptors[0]", "tags collectors refuse"),
    ("      nope: 1", "sources.app.interceptors", "expected a list of interceptors"),
    ("      - {type: tests.core.plugins:CountingSource}", "sources.app.interceptors[0].type",
     "not a subclass of logflume.interceptor.Interceptor"),
])
def test_config_errors_name_the_key_path(tmp_path, interceptors, path, expected):
    with pytest.raises(ConfigError) as info:
        topo(tmp_path, interceptors)
    assert info.value.path == path, str(info.value)
    assert expected in str(info.value)
