"""regex: fields from the named groups of a configured pattern, for formats nobody ships a parser for."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from logflume.errors import ConfigError
from logflume.processor import ParseError, Processor, RecordContext
from logflume.settings import Enum, MapOf, Regex, Setting

_CONVERT = {"int": int, "float": float, "str": str}


class RegexProcessor(Processor):
    settings: ClassVar[dict[str, Setting]] = {
        "pattern": Setting(Regex(), doc="Regular expression with named groups (?P<name>...): one field per group"),
        "match": Setting(Enum("full", "search"), "full", "full: the pattern must match the whole record; "
                         "search: anywhere in it"),
        "types": Setting(MapOf(Enum("int", "float", "str")), {}, "Convert these groups (str by default); a value "
                         "that does not convert sends the record to _errors"),
    }

    def configure(self) -> None:
        self.pattern = re.compile(self.config.pattern)
        if not self.pattern.groupindex:
            raise ConfigError(None, "pattern", "expected at least one named group (?P<name>...)")
        unknown = sorted(set(self.config.types) - set(self.pattern.groupindex))
        if unknown:
            raise ConfigError(None, "types", f"no group named {unknown[0]!r} in pattern; groups: "
                              f"{', '.join(self.pattern.groupindex)}")
        self._match = self.pattern.fullmatch if self.config.match == "full" else self.pattern.search

    def process(self, record: bytes, where: RecordContext) -> dict[str, Any]:
        text = record.decode("utf-8", "replace")
        m = self._match(text)
        if not m:
            raise ParseError("does not match pattern")
        fields: dict[str, Any] = m.groupdict()
        for name, kind in self.config.types.items():
            value = fields.get(name)
            if value is not None:
                try:
                    fields[name] = _CONVERT[kind](value)
                except ValueError:
                    raise ParseError(f"group {name!r} = {value!r} is not {kind}") from None
        return fields
