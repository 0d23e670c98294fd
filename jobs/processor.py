"""Processor: the demux plugin contract — one record's bytes in, one dict of fields out.

Contract: ``process(record, where)`` returns the record's fields as a dict of
JSON-able values, or raises :class:`ParseError` with a reason a person can act
on.  Demux never drops a record: what a processor rejects goes to the
``_errors`` partition with that reason and the record's raw text.  A processor
is pure (no outside effects, no state between records), so demux can run it on
any core or Spark executor and in any order, and get the same output.

Plugins subclass :class:`Processor`, declare ``settings`` like every component,
and are named by a built-in name, an entry point in group
``logflume.processors``, or ``package.module:Class``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from logflume.component import Component, Context
from logflume.errors import ConfigError
from logflume.settings import Setting, parse_settings


class ParseError(ValueError):
    """A record its processor cannot parse; ``reason`` goes to the ``_errors`` partition."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(slots=True)
class RecordContext:
    """Where a record came from: its chunk's identity and the record's stream offset.

    Demux reuses one context per chunk (only ``offset`` changes), so it is valid
    during the ``process`` call only: copy what you need, do not keep it.
    """

    source: str
    stream: str
    epoch: str
    offset: int
    datatype: str
    timestamp: int  # ms since the epoch when the chunk was read
    tags: Mapping[str, str] = field(default_factory=dict)


class Processor(Component):
    kind: ClassVar[str] = "processor"
    settings: ClassVar[dict[str, Setting]] = {}

    def process(self, record: bytes, where: RecordContext) -> dict[str, Any]:
        """Fields of one record (delimiter already removed); raise ParseError if it does not parse."""
        raise NotImplementedError


def build_processor(type_name: str, raw: Mapping[str, Any] | None = None, name: str | None = None,
                    file: str | None = None, path: str = "") -> Processor:
    """Resolve ``type_name`` (built-in, entry point or ``module:Class``) and configure it from ``raw``."""
    from logflume.registry import resolve

    cls = resolve("processor", type_name, file, path)
    values = parse_settings(cls.schema(), dict(raw or {}), path, file)
    try:
        return cls(name or type_name, values, Context(agent_name="demux"))
    except ConfigError as exc:
        if exc.file is None and file is not None:  # raised by configure(), which knows no file or path
            raise ConfigError(file, ".".join(p for p in (path, exc.path) if p), exc.message) from None
        raise
    except (ValueError, TypeError) as exc:
        raise ConfigError(file, path, str(exc)) from None
