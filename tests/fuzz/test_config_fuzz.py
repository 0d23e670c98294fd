"""Random and mutated YAML for agent and collector configs: a ConfigError naming the problem, never anything else.

The loader is the first thing a daemon runs on a file a person wrote; a typo
must end in one actionable line (``ConfigError``), not a traceback.  Two
generators: byte-level mutations of real configs (flips, cuts, inserted YAML
punctuation) and structural mutations of the parsed mapping (a value at a
random key path replaced by a value of another type, keys dropped or added).
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.config import build_collector_config
from logflume.config import load_yaml, parse_yaml
from logflume.errors import ConfigError
from logflume.topology import build_topology

REPO = Path(__file__).resolve().parents[2]

AGENT = """
agent:
  name: fuzz-agent
  data_dir: /tmp/logflume-fuzz-never-created/agent
  shutdown_timeout: 5s
sources:
  logs:
    type: tail
    paths:
      - /tmp/logflume-fuzz-never-created/logs/*.log
      - {glob: "/tmp/logflume-fuzz-never-created/other/*.txt", datatype: JSON, tags: {env: fuzz}}
    channels: [disk]
    chunk_size: 1MiB
    flush_interval: 250ms
    multiline: {pattern: '^\\[', negate: true, match: after}
channels:
  disk: {type: file, capacity: 64MiB, fsync: every_commit}
  mem: {type: memory, capacity: 8MiB}
sinks:
  up:
    type: collector
    channel: disk
    collectors: [127.0.0.1:7465, "127.0.0.1:7466"]
    timeout: 5s
    compression: zstd
  quiet: {type: "null", channel: mem}
"""

COLLECTOR = """
collector:
  name: fuzz-coll
  listen: 127.0.0.1:7465
  data_dir: /tmp/logflume-fuzz-never-created/coll
  max_frame_size: 16MiB
  idle_timeout: 30s
  scribe: 127.0.0.1:7466
store:
  type: buffer
  primary: {type: seqfile, url: "sftp://fuzz@127.0.0.1:2222/store", roll_interval: 5s,
            storage_options: {key_filename: /nonexistent}}
  secondary: {dir: /tmp/logflume-fuzz-never-created/coll/secondary, max_bytes: 4MiB}
  retry_interval: 2s
"""

PUNCTUATION = [b":", b"- ", b"{", b"}", b"[", b"]", b"&a", b"*a", b"!!python/object:os.system", b"\t", b"'",
               b'"', b"\n  ", b"${HOME}", b"${NOPE_NOT_SET}", b"$$", b"#", b"|", b">", b"\x00", b"\xff", b"?"]


def _build(raw_bytes: bytes, tmp_path: Path) -> None:
    """Load bytes the way the daemons do (from a file), as an agent and as a collector config."""
    path = tmp_path / "cfg.yaml"
    path.write_bytes(raw_bytes)
    raw = load_yaml(path)
    if "collector" in raw or "store" in raw:
        build_collector_config(raw, str(path))
    else:
        build_topology(raw, str(path))


def _only_config_errors(raw_bytes: bytes, tmp_path: Path) -> None:
    try:
        _build(raw_bytes, tmp_path)
    except ConfigError as exc:
        assert str(exc).startswith(str(tmp_path / "cfg.yaml")), f"error does not name the file: {exc}"
        assert exc.message, "error without a message"


def test_the_base_configs_are_valid(tmp_path):
    _build(AGENT.encode(), tmp_path)
    _build(COLLECTOR.encode(), tmp_path)
    assert not os.path.exists("/tmp/logflume-fuzz-never-created"), "configure() touched the file system"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    which=st.sampled_from([AGENT, COLLECTOR]),
    edits=st.lists(
        st.tuples(st.floats(0, 1), st.one_of(st.sampled_from(PUNCTUATION), st.binary(min_size=1, max_size=6)),
                  st.integers(0, 8)),
        min_size=1, max_size=6,
    ),
    cut=st.one_of(st.none(), st.floats(0, 1)),
)
def test_byte_mutations_give_config_errors(tmp_path, which, edits, cut):
    data = bytearray(which.encode())
    for where, insert, delete in edits:
        pos = int(where * len(data))
        data[pos:pos + delete] = insert
    if cut is not None:
        del data[int(cut * len(data)):]
    _only_config_errors(bytes(data), tmp_path)


# -- structural mutations ---------------------------------------------------------------------

ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True), st.text(max_size=12),
    st.sampled_from(["", "0", "-1s", "1e309", "64QiB", "999999999999999999999GiB", "localhost:99999", "[", "a:b:c",
                     "*", "**/*", "(", "null", "memory", "tail", "collector", "seqfile", "os:system",
                     "logflume.errors:ConfigError", "tests.fuzz:Nope"]),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out


def _mutate(doc: dict, path: tuple, op: str, value: Any) -> None:
    if not path:
        return
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    key = path[-1]
    if op == "replace":
        parent[key] = value
    elif op == "delete":
        del parent[key]
    elif op == "add" and isinstance(parent, dict):
        parent[f"{key}_x" if isinstance(key, str) else str(value)] = value
    elif op == "wrap":
        parent[key] = [parent[key]]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    which=st.sampled_from([AGENT, COLLECTOR]),
    picks=st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from(["replace", "delete", "add", "wrap"]),
                             ODD_VALUES), min_size=1, max_size=4),
)
def test_structural_mutations_give_config_errors(tmp_path, which, picks):
    doc = yaml.safe_load(which)
    for index, op, value in picks:
        paths = _paths(doc)
        _mutate(doc, paths[index % len(paths)], op, copy.deepcopy(value))
    try:
        text = yaml.safe_dump(doc, allow_unicode=True)
    except yaml.YAMLError:
        return
    _only_config_errors(text.encode(), tmp_path)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_random_text_parses_or_says_why(text):
    try:
        parse_yaml(text, "random.yaml")
    except ConfigError as exc:
        assert str(exc).startswith("random.yaml")


# -- hostile YAML: alias expansion ("billion laughs") ------------------------------------------

_LAUGHS = "\n".join(
    ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
)

_LAUGHS_SCRIPT = textwrap.dedent("""
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (768 << 20, 768 << 20))
    from logflume.config import parse_yaml
    from logflume.errors import ConfigError
    try:
        parse_yaml(sys.stdin.read(), "laughs.yaml")
    except ConfigError as exc:
        print("CONFIG_ERROR", exc)
        sys.exit(0)
    except MemoryError:
        print("MEMORY_ERROR")
        sys.exit(3)
    print("ACCEPTED")
    sys.exit(4)
""")


def test_alias_bomb_is_refused_quickly():
    """Nine nested alias levels must end in a ConfigError within seconds, inside 768 MiB of address space."""
    if sys.platform != "linux":  # pragma: no cover
        pytest.skip("RLIMIT_AS is Linux-specific here")
    try:
        proc = subprocess.run([sys.executable, "-c", _LAUGHS_SCRIPT], input=_LAUGHS, capture_output=True,
                              text=True, timeout=15, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    except subprocess.TimeoutExpired:
        pytest.fail("parse_yaml still busy after 15 s on a 9-line alias bomb")
    assert proc.returncode == 0 and "CONFIG_ERROR" in proc.stdout, (proc.returncode, proc.stdout, proc.stderr[-500:])
