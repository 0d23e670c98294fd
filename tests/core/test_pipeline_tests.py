"""`logflume test -c agent.yaml tests.yaml`: config unit tests, their diffs, their exit codes."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from logflume.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "configs").glob("*-tests.yaml"))

TAIL_AGENT = """
agent: {{name: web-01, data_dir: {data}}}
sources:
  web:
    type: tail
    paths:
      - {{glob: {logs}/access.log*, datatype: NginxAccess}}
    exclude: ["*.gz"]
    tags: {{env: prod}}
    channels: [mem]
channels:
  mem: {{type: memory}}
sinks:
  out: {{type: null, channel: mem}}
"""

ACCESS = '203.0.113.7 - - [05/Dec/2026:13:55:36 +0000] "GET /a HTTP/1.1" 200 12 "-" "curl"'


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def agent(tmp_path):
    return write(tmp_path / "agent.yaml", TAIL_AGENT.format(data=tmp_path / "data", logs=tmp_path / "logs"))


def run(capsys, *args) -> tuple[int, str, str]:
    code = main(["test", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_passing_case(tmp_path, agent, capsys):
    tests = write(tmp_path / "t.yaml", f"""
tests:
  - name: access lines
    input: {{file: {tmp_path}/logs/access.log, lines: ['{ACCESS}']}}
    expect:
      chunks:
        - {{stream: {tmp_path}/logs/access.log, datatype: NginxAccess, tags: {{env: prod}}, records: ['{ACCESS}']}}
      demux:
        processor: access
        records: [{{remote_addr: 203.0.113.7, status: 200, path: /a}}]
""")
    code, out, err = run(capsys, "-c", agent, tests)
    assert code == 0, out + err
    assert f"PASS  access lines  ({tests}: tests[0])" in out and "1 passed, 0 failed" in out
    assert not (tmp_path / "data").exists(), "no state outside a temporary directory"


def test_failing_case_prints_a_diff_and_exits_1(tmp_path, agent, capsys):
    tests = write(tmp_path / "t.yaml", f"""
tests:
  - name: right
    input: {{file: {tmp_path}/logs/access.log, lines: [a]}}
    expect: {{chunks: [{{records: [a]}}]}}
  - name: wrong datatype and record
    input: {{file: {tmp_path}/logs/access.log, lines: [one, two]}}
    expect:
      chunks: [{{datatype: Raw, records: [one, three]}}]
  - name: wrong demux field
    input: {{file: {tmp_path}/logs/access.log, lines: ['{ACCESS}', 'not an access line']}}
    expect:
      demux:
        processor: access
        records: [{{status: 404}}, {{_error: something else}}]
""")
    code, out, _ = run(capsys, "-c", agent, tests)
    assert code == 1
    assert "PASS  right" in out and "FAIL  wrong datatype and record" in out and "1 passed, 2 failed" in out
    first = out[out.index("FAIL  wrong datatype"):out.index("FAIL  wrong demux")]
    assert "--- expected\n" in first and "+++ actual\n" in first
    for line in ["-- datatype: Raw", "+- datatype: NginxAccess", "   - one", "-  - three", "+  - two"]:
        assert f"      {line}\n" in first, first
    assert "      -  - one\n" not in first, "equal lines are context, not changes"
    second = out[out.index("FAIL  wrong demux"):]
    for line in ["-- status: 404", "+- status: 200", "-- _error: something else",
                 "+- _error: not an access log line in combined or common format"]:
        assert f"      {line}\n" in second, second


def test_file_not_followed_fails_with_a_note(tmp_path, agent, capsys):
    tests = write(tmp_path / "t.yaml", f"""
tests:
  - name: gz
    input: {{file: {tmp_path}/logs/access.log.1.gz, lines: [x]}}
    expect: {{chunks: [{{records: [x]}}]}}
""")
    code, out, _ = run(capsys, "-c", agent, tests)
    assert code == 1
    assert f"note: {tmp_path}/logs/access.log.1.gz is not followed by source web" in out
    assert "+chunks: []" in out


@pytest.mark.parametrize(("body", "message"), [
    ("tests:\n  - name: x\n    input: {lines: [a], file: /x}\n    expect: {chunk: []}\n",
     "t.yaml: tests[0].expect.chunk: unknown key (did you mean 'chunks'?)"),
    ("tests:\n  - name: x\n    input: {source: nope, lines: [a], file: /x}\n    expect: {chunks: []}\n",
     "t.yaml: tests[0].input.source: no source named 'nope'"),
    ("tests:\n  - name: x\n    input: {lines: [a]}\n    expect: {chunks: []}\n",
     "t.yaml: tests[0].input.file: missing"),
    ("tests:\n  - name: x\n    input: {file: /x, lines: [a], messages: [b]}\n    expect: {chunks: []}\n",
     "t.yaml: tests[0].input.messages: not used with a tail source"),
    ("tests:\n  - name: x\n    input: {file: /x, lines: [a]}\n    expect: {}\n",
     "t.yaml: tests[0].expect: expected at least one of: chunks, demux, status"),
    ("tests:\n  - name: x\n    input: {file: /x, lines: [a]}\n"
     "    expect: {demux: {processor: {type: regex, pattern: 'no groups'}, records: []}}\n",
     "t.yaml: tests[0].expect.demux.processor.pattern: expected at least one named group"),
    ("tests: []\n", "t.yaml: tests: expected at least 1 item(s)"),
    ("tests:\n  - name: x\n   input: {}\n", "t.yaml: invalid YAML at line 3"),
])
def test_bad_test_file_names_file_and_key_and_exits_2(tmp_path, agent, capsys, body, message):
    tests = write(tmp_path / "t.yaml", body)
    code, out, err = run(capsys, "-c", agent, tests)
    assert code == 2, out + err
    assert f"logflume test: {tmp_path}/{message}" in err


def test_bad_agent_config_exits_2_like_check(tmp_path, capsys):
    cfg = write(tmp_path / "agent.yaml", "sources: {s: {type: tail, paths: [/x], channels: [c], chunk_sise: 1}}\n"
                "channels: {c: {type: memory}}\nsinks: {o: {type: null, channel: c}}\n")
    tests = write(tmp_path / "t.yaml", "tests: [{name: x, input: {file: /x, lines: [a]}, expect: {chunks: []}}]\n")
    code, _, err = run(capsys, "-c", cfg, tests)
    assert code == 2
    assert f"{cfg}: sources.s.chunk_sise: unknown key (did you mean 'chunk_size'?)" in err


def test_hostile_test_file_is_refused_in_bounded_time(tmp_path, agent, capsys):
    """Nested YAML aliases (a billion laughs) must not be expanded."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    tests = write(tmp_path / "t.yaml", "\n".join(lines) + "\ntests: *a8\n")
    started = time.monotonic()
    code, _, err = run(capsys, "-c", agent, tests)
    assert code == 2 and "more than 100000 values" in err
    assert time.monotonic() - started < 10


NET_AGENT = """
agent: {{name: relay, data_dir: {data}}}
sources:
  syslog: {{type: syslog, tcp: "127.0.0.1:{tcp}", udp: "127.0.0.1:{udp}", max_message_size: 64, channels: [m]}}
  http: {{type: http, listen: "127.0.0.1:{http}", tokens: [a-long-enough-test-token-0123456789], channels: [m]}}
channels:
  m: {{type: memory}}
sinks:
  out: {{type: null, channel: m}}
"""


def test_syslog_and_http_cases_open_no_socket(tmp_path):
    """The configured ports are held by this test: a source that tried to listen would fail to start."""
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    http = socket.socket()
    http.bind(("127.0.0.1", 0))
    http.listen()
    try:
        cfg = write(tmp_path / "relay.yaml", NET_AGENT.format(
            data=tmp_path / "data", tcp=tcp.getsockname()[1], udp=udp.getsockname()[1], http=http.getsockname()[1]))
        long = "<13>1 2026-12-05T00:00:00Z h app - - - " + "x" * 100
        tests = write(tmp_path / "t.yaml", f"""
tests:
  - name: udp datagram over max_message_size is cut and flagged
    input: {{source: syslog, transport: udp, messages: ['{long}']}}
    expect:
      chunks: [{{stream: 'syslog:app', flags: [truncated], records: ['{long[:64]}']}}]
  - name: http needs the token
    input:
      source: http
      messages:
        - {{path: /a, lines: ['{{"n": 1}}']}}
        - {{path: /a, headers: {{authorization: Bearer a-long-enough-test-token-0123456789}}, lines: ['{{"n": 2}}']}}
        - {{path: /gz, headers: {{Authorization: Bearer a-long-enough-test-token-0123456789,
            Content-Encoding: gzip}}, body: "{{\\"n\\": 3}}\\n"}}
    expect:
      status: [401, 200, 200]
      chunks:
        - {{stream: 'http:a', datatype: JSON, records: ['{{"n": 2}}']}}
        - {{stream: 'http:gz', records: ['{{"n": 3}}']}}
""")
        done = subprocess.run([sys.executable, "-m", "logflume", "test", "-c", str(cfg), str(tests)],
                              capture_output=True, text=True, timeout=60, cwd=REPO)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "2 passed, 0 failed" in done.stdout
        assert not (tmp_path / "data").exists()
    finally:
        tcp.close()
        udp.close()
        http.close()


def test_there_are_example_tests():
    assert {p.name for p in EXAMPLES} >= {"agent-tail-tests.yaml", "agent-syslog-http-tests.yaml"}


@pytest.mark.parametrize("tests", EXAMPLES, ids=lambda p: p.name)
def test_example_tests_pass_against_their_configs(tests, tmp_path):
    config = tests.with_name(tests.name.removesuffix("-tests.yaml") + ".yaml")
    env_data = tmp_path / "not-created"
    done = subprocess.run([sys.executable, "-m", "logflume", "test", "-c", str(config), str(tests)],
                          capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={"PATH": "/usr/bin:/bin", "LOGFLUME_DATA_DIR": str(env_data)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "FAIL" not in done.stdout and " 0 failed" in done.stdout
    assert not env_data.exists(), "logflume test must not create the agent's data_dir"
