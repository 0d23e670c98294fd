"""Container runtime log lines (``format: cri`` / ``format: docker``): which lines a record is made of.

The kubelet's runtimes split a container's output line into pieces of at most
16 KiB.  CRI (containerd, CRI-O) writes each piece as
``<RFC 3339 time> <stdout|stderr> <P|F>[:more tags] <text>``, ``P`` for a piece
that continues and ``F`` for the last; Docker's ``json-file`` driver writes
``{"log": "<text>", "stream": "stdout", "time": "..."}`` and leaves the ``\\n``
off the ``log`` of a piece that continues.

The tail source keeps a file's bytes as they are: a chunk holds exactly the
bytes of ``[seq_id - len(data), seq_id)`` of the file, so a re-delivery carries
the same bytes under the same name and archive's range dedup and byte
comparison hold.  What a format changes is only where records end
(``record_ends``): a record is the run of lines from the first piece of a
message up to its last, so no record ends inside a message.  The runtime
writes stdout and stderr into one file and their pieces may interleave, so a
record ends only after a line that leaves *no* stream with an open message
(an interleaved line of the other stream lands inside that record).  Parsing
the lines into time, stream and joined text is left to whoever reads the
records; every line still says
whether it continues, so even a record cut by ``chunk_size`` (flagged
``split``) or sent by ``partial_timeout`` is joined again there.

A :class:`LineGrouping` is handed to the chunker in place of a
:class:`~logflume.chunking.MultilinePattern` with ``match: before``: a line that
"continues" is put in front of the next line, and a record ends after a line
that does not.  It holds state (which streams have an open message), so every
chunker gets its own (:meth:`ContainerFormat.grouping`).  A line in neither
format (a file that is not a runtime's log) does not change that state: with
nothing open it is a record of its own, so such a file is read line by line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

FORMATS = ("raw", "cri", "docker")

#: ``<time> <stream> <tags> ``: the time is RFC 3339 (no spaces), tags are ``P`` or ``F`` optionally
#: followed by ``:``-separated further tags (the CRI log format leaves room for them).
_CRI = re.compile(rb"[0-9][0-9T:.+Z-]{9,39} (stdout|stderr) ([PF])(?::[^ ]*)?(?: |\Z)")

#: Docker's json-file lines start with the ``log`` string.  Its end is the first unescaped quote.
_DOCKER_LOG = re.compile(rb'\{"log":"([^"\\]*(?:\\.[^"\\]*)*)"')  # the unrolled loop: no step per character
_DOCKER_STREAM = re.compile(rb'"stream":"(stdout|stderr)"')

#: Longest line decoded as JSON when the fast look fails (keys in another order): Docker writes at most
#: 16 KiB of text per line, which escaping can make at most 6 times longer.
MAX_JSON_LINE = 128 << 10


def parse_cri(line: bytes | memoryview) -> tuple[bytes, bool] | None:
    """``(stream, continues)`` of a CRI line (delimiter excluded), or None if it is not one."""
    m = _CRI.match(line)
    if m is None:
        return None
    return m.group(1), m.group(2) == b"P"


def parse_docker(line: bytes | memoryview) -> tuple[bytes, bool] | None:
    """``(stream, continues)`` of a Docker json-file line (delimiter excluded), or None if it is not one."""
    m = _DOCKER_LOG.match(line)
    if m is not None:
        s = _DOCKER_STREAM.search(line, m.end())
        if s is not None:
            return s.group(1), not _ends_in_newline_escape(m.group(1))
    if len(line) > MAX_JSON_LINE:
        return None
    try:
        obj = json.loads(bytes(line))
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("log"), str):
        return None
    stream = obj.get("stream")
    if stream not in ("stdout", "stderr"):
        return None
    return stream.encode(), not obj["log"].endswith("\n")


def _ends_in_newline_escape(text: bytes) -> bool:
    """Does a JSON string body end in the escape ``\\n`` (not in an escaped backslash followed by ``n``)?"""
    if not text.endswith(b"n"):
        return False
    body = text[:-1]
    return (len(body) - len(body.rstrip(b"\\"))) % 2 == 1


_PARSERS = {"cri": parse_cri, "docker": parse_docker}


class LineGrouping:
    """Stateful line classifier for the chunker (``match: before``): True while a message is still open."""

    match: Literal["before"] = "before"

    def __init__(self, fmt: str) -> None:
        self._parse = _PARSERS[fmt]
        self._open: set[bytes] = set()  # streams whose message has pieces and no last piece yet

    def continues(self, line: bytes | memoryview) -> bool:
        parsed = self._parse(line)
        if parsed is not None:
            stream, more = parsed
            if more:
                self._open.add(stream)
            else:
                self._open.discard(stream)
        return bool(self._open)


@dataclass(frozen=True)
class ContainerFormat:
    """The ``format`` setting of a tail source: a fresh :class:`LineGrouping` per chunker."""

    name: str

    def __post_init__(self) -> None:
        if self.name not in _PARSERS:
            raise ValueError(f"expected one of {', '.join(FORMATS)}, got {self.name!r}")

    def grouping(self) -> LineGrouping:
        return LineGrouping(self.name)
