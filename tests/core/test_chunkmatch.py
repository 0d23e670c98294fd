"""``ChunkMatch``: the one matcher of channel selectors and store routes (globs on datatype, stream, tags)."""

from __future__ import annotations

from logflume.chunk import Chunk
from logflume.chunkmatch import MATCH_SETTINGS, ChunkMatch
from logflume.settings import parse_settings


def chunk(datatype: str = "AppLog", stream: str = "/var/log/app.log", **tags: str) -> Chunk:
    return Chunk(source="h1", stream=stream, datatype=datatype, seq_id=2, epoch="e1", data=b"x\n", tags=tags)


def test_every_given_field_must_match():
    m = ChunkMatch.from_values(parse_settings(MATCH_SETTINGS, {"datatype": "App*", "stream": "/var/log/*",
                                                               "tags": {"env": "prod*"}}, "match", None))
    assert m.matches(chunk(env="production"))
    assert not m.matches(chunk(env="staging"))
    assert not m.matches(chunk())  # a tag named must be carried
    assert not m.matches(chunk(datatype="applog", env="prod"))  # case-sensitive
    assert not m.matches(chunk(stream="/srv/app.log", env="prod"))
    assert m.render() == {"datatype": "App*", "stream": "/var/log/*", "tags": {"env": "prod*"}}


def test_nothing_given_matches_everything_and_renders_empty():
    assert ChunkMatch().matches(chunk()) and ChunkMatch().render() == {}
