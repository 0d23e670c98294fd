"""regex: fields from the named groups of a configured pattern, for formats nobody ships a parser for.

The batch path runs the same pattern with Arrow (RE2) on records of printable
ASCII, where Python ``re`` and RE2 agree on every class (``\\d``, ``\\w``,
``\\s``, ``\\b``); other records, patterns RE2 does not take (back-references,
look-around), groups that matched nothing (RE2 cannot tell them from groups
that took no part) and values that do not convert go through the per-record
code.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar

from logflume.errors import ConfigError
from logflume.processor import BatchContext, ParsedBatch, ParseError, Processor, RecordContext
from logflume.settings import Enum, MapOf, Regex, Setting

if TYPE_CHECKING:
    import pyarrow as pa

_CONVERT = {"int": int, "float": float, "str": str}
#: Records the batch path takes: printable ASCII only (tab too).
_PLAIN = r"^[\t -~]*\z"
#: What Arrow's cast accepts exactly as Python's int() and float() do (no "_", spaces or words).
_INT = r"^-?[0-9]{1,18}\z"
_FLOAT = r"^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,2})?\z"


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

    def output_schema(self) -> pa.Schema:
        import pyarrow as pa

        kinds = {"int": pa.int64(), "float": pa.float64(), "str": pa.string()}
        return pa.schema([(name, kinds[self.config.types.get(name, "str")]) for name in self.pattern.groupindex])

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
                if kind == "int" and not -2**63 <= fields[name] < 2**63:
                    raise ParseError(f"group {name!r} = {value!r} does not fit a 64-bit integer")
        return fields

    def process_batch(self, records: pa.Array, where: BatchContext) -> ParsedBatch:
        import pyarrow as pa
        import pyarrow.compute as pc

        from jobs.processors.columns import decode, group, with_fallback

        text, _ = decode(records)
        pattern = f"^(?:{self.config.pattern})\\z" if self.config.match == "full" else self.config.pattern
        try:
            m = pc.extract_regex(text, pattern)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # RE2 does not take this pattern
            return self.process_each(records, where)
        fast = pc.and_(pc.is_valid(m), pc.match_substring_regex(text, _PLAIN))
        cols = []
        schema = self.output_schema()
        for f in schema:
            value = group(m, f.name)
            fast = pc.and_(fast, pc.not_equal(value, ""))  # "" may be a group that took no part: per record
            kind = self.config.types.get(f.name, "str")
            if kind != "str":
                ok = pc.match_substring_regex(value, _INT if kind == "int" else _FLOAT)
                fast = pc.and_(fast, ok)
                value = pc.cast(pc.if_else(pc.fill_null(ok, False), value, "0"), f.type)
            cols.append(value)
        fields = pa.RecordBatch.from_arrays(cols, schema=schema)
        return with_fallback(self, records, where, fields, fast)
