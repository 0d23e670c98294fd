"""Unit tests for agent configs: ``logflume test -c agent.yaml tests.yaml``.

A test file lists cases.  Each gives input to one source of the config (lines
written to a file a ``tail`` source follows; messages sent to a ``syslog`` or
``http`` source) and states what the pipeline must make of it: the chunks'
streams, datatypes, tags and records, and optionally the records a demux
processor makes of them.  The source's own parsing and chunking code runs
in-process with the config's settings, into an in-memory capture instead of
channels and sinks: no socket is opened, no file outside a temporary
directory is written, so it runs anywhere, in CI, before a deploy.

Exit codes: 0 every case passed, 1 a case failed (a diff is printed), 2 the
test file or the config is invalid (file, key path, what was expected).

The syntax is in docs/testing-configs.md.  This is an edge module, like the
CLI: it drives agent sources and demux processors, so it may import them.
"""

from __future__ import annotations

import argparse
import difflib
import email.message
import gzip
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import yaml

from agent.sources.http import BadRequest, HttpSource
from agent.sources.syslog import SyslogSource
from agent.sources.syslog.framing import FrameDecoder
from agent.sources.tail import TailSource
from jobs.records import ERRORS, ProcessorSpec, RecordSplitter, raw_records
from logflume.chunk import Chunk
from logflume.chunking import OVERFLOW_STREAM_SUFFIX, EventStreams
from logflume.component import Context
from logflume.config import load_yaml
from logflume.errors import ConfigError
from logflume.metrics import Metrics
from logflume.processor import build_processor
from logflume.settings import AnyValue, Enum, Int, ListOf, MapOf, Obj, Optional, Setting, Str, Values, parse_settings
from logflume.source import SourceOutput
from logflume.topology import Topology, build_topology

EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_INVALID = 2

#: Keys of an expected chunk; the ones a case leaves out are not compared.
CHUNK_KEYS = ("stream", "datatype", "tags", "flags", "records")

HTTP_REQUEST = {
    "path": Setting(Str(), "/", "URL path of the POST (the stream, with stream_from: path)"),
    "headers": Setting(MapOf(Str()), {}, "Request headers (Authorization, Content-Encoding: gzip, a stream header)"),
    "body": Setting(Optional(Str()), None, "The body (gzipped here if Content-Encoding says gzip)"),
    "lines": Setting(Optional(ListOf(Str())), None, "The body as lines (each ends with \\n)"),
}

INPUT = {
    "source": Setting(Optional(Str()), None, "Name of the source the input goes to (default: the only one)"),
    "file": Setting(Optional(Str()), None, "tail: path of the file the lines are written to"),
    "lines": Setting(Optional(ListOf(Str())), None, "tail: records, each ended by the source's record_delimiter"),
    "text": Setting(Optional(Str()), None, "tail: the file's exact content (instead of lines)"),
    "messages": Setting(Optional(ListOf(AnyValue())), None,
                        "syslog: messages (strings); http: requests (a body string, or {path, headers, body|lines})"),
    "transport": Setting(Optional(Enum("tcp", "udp")), None, "syslog: how the messages arrive (default: tcp if "
                         "the source listens on tcp)"),
    "peer": Setting(Str(), "127.0.0.1", "syslog: the sender's address (the {peer} stream field)"),
}

EXPECTED_CHUNK = {
    "stream": Setting(Optional(Str()), None, "Stream name"),
    "datatype": Setting(Optional(Str()), None, "Datatype"),
    "tags": Setting(Optional(MapOf(Str())), None, "Tags (all of them)"),
    "flags": Setting(Optional(ListOf(Str())), None, "Flags (partial, split, truncated)"),
    "records": Setting(Optional(ListOf(Str())), None, "Records, without their delimiter"),
}

DEMUX = {
    "processor": Setting(AnyValue(), doc="Processor type name, or {type: NAME, ...its settings}"),
    "records": Setting(ListOf(MapOf(AnyValue())), doc="Each record's fields (only the fields named are compared; "
                       "a rejected record is {_error: reason})"),
}

EXPECT = {
    "chunks": Setting(Optional(ListOf(Obj(EXPECTED_CHUNK))), None, "The chunks, in order"),
    "status": Setting(Optional(ListOf(Int())), None, "http: the status answered to each request"),
    "demux": Setting(Optional(Obj(DEMUX)), None, "The records after a demux processor"),
}

CASE = {
    "name": Setting(Str(), doc="What the case checks (printed)"),
    "input": Setting(Obj(INPUT), doc="What the source receives"),
    "expect": Setting(Obj(EXPECT), doc="What the pipeline must produce"),
}

TEST_FILE = {"tests": Setting(ListOf(Obj(CASE), min_items=1), doc="The cases")}


class Capture(SourceOutput):
    """Where the source under test delivers: a list, instead of channels."""

    def __init__(self) -> None:
        self.chunks: list[Chunk] = []

    def deliver(self, chunks: Sequence[Chunk], timeout: float | None = None) -> None:
        self.chunks.extend(chunks)


@dataclass
class Outcome:
    """What one case produced, and how it compares."""

    name: str
    where: str
    chunks: list[Chunk] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    #: Why the output is what it is (shown with a failure), or why it cannot be accepted (then it fails).
    notes: list[str] = field(default_factory=list)
    diff: str = ""

    @property
    def passed(self) -> bool:
        return not self.diff


def load_cases(path: str) -> list[Values]:
    """The cases of a test file, validated; raises ConfigError naming the file and key path."""
    return parse_settings(TEST_FILE, load_yaml(path), "", path).tests


def run_file(config: str, tests: str, out: TextIO | None = None) -> int:
    """Run every case of ``tests`` against ``config``; print PASS/FAIL lines and diffs; returns the exit code."""
    out = out or sys.stdout
    raw_config = load_yaml(config)
    outcomes = []
    with tempfile.TemporaryDirectory(prefix="logflume-test-") as tmp:
        build_topology(raw_config, config, _context(raw_config, Path(tmp) / "check"))  # the config is valid
        cases = load_cases(tests)
        for i, case in enumerate(cases):
            where = f"tests[{i}]"
            topo = build_topology(raw_config, config, _context(raw_config, Path(tmp) / str(i)))
            outcome = run_case(topo, case, where, tests)
            outcomes.append(outcome)
            if outcome.passed:
                print(f"PASS  {case.name}  ({tests}: {where})", file=out)
            else:
                print(f"FAIL  {case.name}  ({tests}: {where})", file=out)
                for note in outcome.notes:
                    print(f"      note: {note}", file=out)
                print("".join(f"      {line}" for line in outcome.diff.splitlines(keepends=True)), file=out)
    failed = sum(not o.passed for o in outcomes)
    print(f"{len(outcomes) - failed} passed, {failed} failed", file=out)
    return EXIT_FAILED if failed else EXIT_PASSED


def _context(raw_config: dict, data_dir: Path) -> Context:
    """State (event sources' stream ledgers) goes under ``data_dir``, a temporary directory."""
    agent = raw_config.get("agent") or {}
    name = agent.get("name") if isinstance(agent, dict) else None
    return Context(agent_name=str(name) if name else "test", data_dir=data_dir, metrics=Metrics())


def run_case(topo: Topology, case: Values, where: str, file: str) -> Outcome:
    """Feed the case's input to its source and compare what came out with what the case expects."""
    outcome = Outcome(case.name, where)
    inp = case.input
    names = sorted(topo.sources)
    name = inp.source
    if name is None:
        if len(names) != 1:
            raise ConfigError(file, f"{where}.input.source", f"missing: the config has {len(names)} sources; "
                              f"expected one of: {', '.join(names)}")
        name = names[0]
    if name not in topo.sources:
        raise ConfigError(file, f"{where}.input.source", f"no source named {name!r} in {topo.file}; expected one "
                          f"of: {', '.join(names)}")
    source = topo.sources[name].component
    capture = Capture()
    for cls, drive in DRIVERS:
        if isinstance(source, cls):
            drive(source, inp, capture, outcome, f"{where}.input", file)
            break
    else:
        raise ConfigError(file, f"{where}.input.source", f"source {name!r} is of type {topo.sources[name].type}; "
                          f"expected a {', '.join(t for t, _ in DRIVER_TYPES)} source (others cannot be tested)")
    outcome.chunks = capture.chunks
    outcome.diff = _compare(case, outcome, where, file)
    refused = [f"chunk {i} would be refused by collectors: {problem}" for i, chunk in enumerate(capture.chunks)
               if (problem := chunk.metadata_error())]
    if refused:
        outcome.notes += refused
        outcome.diff = outcome.diff or "(see the notes)\n"
    return outcome


# -- feeding each kind of source ---------------------------------------------------------------------------


def _drive_tail(src: TailSource, inp: Values, capture: Capture, outcome: Outcome, where: str, file: str) -> None:
    if inp.file is None:
        raise ConfigError(file, f"{where}.file", "missing: expected the path of the file the lines are written to")
    if (inp.lines is None) == (inp.text is None):
        raise ConfigError(file, f"{where}.lines", "expected either lines or text (the file's content)")
    _only(inp, ("source", "file", "lines", "text", "peer"), where, file, "a tail source")
    path = os.path.abspath(os.path.expanduser(inp.file))
    spec = src.paths.spec_for(path)  # the source's own choice: globs, excludes, compressed rotations
    if spec is None:
        outcome.notes.append(f"{path} is not followed by source {src.name}: it matches none of its globs "
                             f"({', '.join(src.paths.globs)}) or is excluded")
        return
    if inp.text is not None:
        data = inp.text.encode()
    else:
        data = b"".join(line.encode() + src.delimiter for line in inp.lines)
    chunker = src._make_chunker(path, "test", 0, spec.datatype, spec.tags)  # the chunker the source would use
    capture.deliver(chunker.feed(data, 0.0) + chunker.finish())


def _drive_syslog(src: SyslogSource, inp: Values, capture: Capture, outcome: Outcome, where: str,
                  file: str) -> None:
    messages = _messages(inp, where, file)
    _only(inp, ("source", "messages", "transport", "peer"), where, file, "a syslog source")
    c = src.config
    transport = inp.transport or ("tcp" if c.tcp is not None else "udp")
    if getattr(c, transport) is None:
        raise ConfigError(file, f"{where}.transport", f"source {src.name} does not listen on {transport}")
    src.output = capture
    src.streams = EventStreams.for_source(src, capture.deliver)  # what start() sets up, without listeners
    for i, msg in enumerate(messages):
        if not isinstance(msg, str):
            raise ConfigError(file, f"{where}.messages[{i}]", f"expected a string, got {type(msg).__name__}")
        data = msg.encode()
        if transport == "tcp":
            # Octet counting (RFC 6587): the message arrives whole, even with newlines in it.
            decoder = FrameDecoder(c.max_message_size)
            framed = bytearray(b"%d " % len(data) + data)
            got = decoder.feed(framed) + decoder.finish()
            src._accept(got, "tls" if c.tls is not None else "tcp", inp.peer)
        else:  # what one datagram becomes (SyslogSource._udp_deliver)
            body = data.rstrip(b"\r\n\0")
            truncated = len(body) > c.max_message_size
            if body:
                src._accept([(body[:c.max_message_size], truncated)], "udp", inp.peer)
    src.streams.flush()


def _drive_http(src: HttpSource, inp: Values, capture: Capture, outcome: Outcome, where: str, file: str) -> None:
    messages = _messages(inp, where, file)
    _only(inp, ("source", "messages", "peer"), where, file, "an http source")
    src.output = capture
    # What start() sets up, without the listener: each request is delivered whole before its answer.
    src.streams = EventStreams.for_source(src, src._deliver, datatype=src.datatype, flush_interval=0.0)
    src._overflow = src.config.stream_prefix + OVERFLOW_STREAM_SUFFIX
    for i, msg in enumerate(messages):
        request = parse_settings(HTTP_REQUEST, {"body": msg} if isinstance(msg, str) else msg,
                                 f"{where}.messages[{i}]", file)
        headers = email.message.Message()  # case-insensitive, like the server's
        for key, value in request.headers.items():
            headers[key] = value
        if request.lines is not None:
            body = "".join(line + "\n" for line in request.lines).encode()
        else:
            body = (request.body or "").encode()
        if headers.get("Content-Encoding", "").strip().lower() in ("gzip", "x-gzip"):
            body = gzip.compress(body)
        if not src.authorized(headers):
            outcome.status.append(401)
            continue
        if len(body) > src.config.max_body_size:
            outcome.status.append(413)
            continue
        try:
            stream = src.stream_of(request.path, headers)
            records = src.split_records(src.decode_body(body, headers.get("Content-Encoding", "")))
            if records:
                src.accept(stream, records)
        except BadRequest as exc:
            outcome.status.append(exc.status)
            outcome.notes.append(f"request {i}: {exc.status} {exc}")
            continue
        outcome.status.append(200)


DRIVERS = ((TailSource, _drive_tail), (SyslogSource, _drive_syslog), (HttpSource, _drive_http))
DRIVER_TYPES = (("tail", TailSource), ("syslog", SyslogSource), ("http", HttpSource))


def _messages(inp: Values, where: str, file: str) -> list[Any]:
    if inp.messages is None:
        raise ConfigError(file, f"{where}.messages", "missing: expected the messages the source receives")
    return inp.messages


def _only(inp: Values, allowed: tuple[str, ...], where: str, file: str, what: str) -> None:
    """Refuse input keys that mean nothing to this kind of source (a test that would silently ignore them)."""
    for key in INPUT:
        if key not in allowed and inp[key] is not None and inp[key] != INPUT[key].default:
            raise ConfigError(file, f"{where}.{key}", f"not used with {what}; expected: "
                              f"{', '.join(k for k in allowed if k != 'source')}")


# -- comparing -----------------------------------------------------------------------------------------------


def _chunk_view(chunk: Chunk, keys: Sequence[str]) -> dict[str, Any]:
    full = {
        "stream": chunk.stream,
        "datatype": chunk.datatype,
        "tags": dict(chunk.tags),
        "flags": sorted(chunk.flags),
        "records": [raw.decode("utf-8", "backslashreplace") for _, raw in raw_records(chunk)],
    }
    return {k: full[k] for k in keys}


def _demux_records(chunks: list[Chunk], processor: Any, path: str, file: str) -> list[dict[str, Any]]:
    if isinstance(processor, str):
        entry: dict[str, Any] = {"type": processor}
    elif isinstance(processor, dict) and isinstance(processor.get("type"), str):
        entry = dict(processor)
    else:
        raise ConfigError(file, path, "expected a processor type name or a mapping with key type")
    # Bad names and settings are reported here with the test file's key path; the splitter builds its own.
    build_processor(entry["type"], {k: v for k, v in entry.items() if k != "type"}, file=file, path=path)
    spec = ProcessorSpec({}, entry)
    splitter = RecordSplitter(spec)
    out = []
    for chunk in chunks:
        for partition, rec in splitter.split(chunk):
            if partition[0] == ERRORS:
                out.append({"_error": rec["reason"]})
            else:
                out.append({k: v for k, v in rec.items() if not k.startswith("_")})
    return out


def _project(actual: dict[str, Any], expected: dict[str, Any] | None) -> dict[str, Any]:
    """The actual record, reduced to the fields the expected one names (all of them when there is none)."""
    if expected is None or "_error" in actual or "_error" in expected:
        return actual
    return {k: actual[k] for k in expected if k in actual}


def _compare(case: Values, outcome: Outcome, where: str, file: str) -> str:
    exp = case.expect
    expected: dict[str, Any] = {}
    actual: dict[str, Any] = {}
    if exp.chunks is not None:
        wanted = [{k: v for k, v in c.items() if v is not None} for c in exp.chunks]
        expected["chunks"] = wanted
        actual["chunks"] = [_chunk_view(ch, list(wanted[i]) if i < len(wanted) else CHUNK_KEYS)
                            for i, ch in enumerate(outcome.chunks)]
    if exp.status is not None:
        expected["status"] = list(exp.status)
        actual["status"] = outcome.status
    if exp.demux is not None:
        got = _demux_records(outcome.chunks, exp.demux.processor, f"{where}.expect.demux.processor", file)
        want = [dict(r) for r in exp.demux.records]
        expected["demux"] = want
        actual["demux"] = [_project(r, want[i] if i < len(want) else None) for i, r in enumerate(got)]
    if not expected:
        raise ConfigError(file, f"{where}.expect", "expected at least one of: chunks, demux, status")
    if expected == actual:
        return ""
    a = _yaml(expected).splitlines(keepends=True)
    b = _yaml(actual).splitlines(keepends=True)
    return "".join(difflib.unified_diff(a, b, "expected", "actual", n=3))


class _DiffDumper(yaml.SafeDumper):
    """YAML for diffs: a string with newlines stays on one line, escaped, so records line up one per line."""


_DiffDumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style='"' if "\n" in text else None))


def _yaml(value: Any) -> str:
    return yaml.dump(value, Dumper=_DiffDumper, sort_keys=False, default_flow_style=False, allow_unicode=True,
                     width=1000)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="logflume test", description="Run unit tests of an agent config: "
                                     "feed each case's input to a source, compare chunks and demux records.")
    parser.add_argument("-c", "--config", required=True, help="agent YAML file")
    parser.add_argument("tests", help="YAML file of test cases (see docs/testing-configs.md)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return run_file(args.config, args.tests)
    except ConfigError as exc:
        print(f"logflume test: {exc}", file=sys.stderr)
        return EXIT_INVALID
