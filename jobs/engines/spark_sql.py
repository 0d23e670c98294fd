"""Processor specs compiled to Spark SQL columns: the Spark engine parses in the JVM, never per record in Python.

:func:`compile_processor` turns a configured built-in into one expression
per output column (in its ``output_schema()`` order) and a ``reason``
expression (null: the record parsed), over a binary ``raw`` column (the
record without its delimiter).  The expressions follow the processor's batch
path step by step, on the very patterns it uses (:mod:`jobs.processors.access`),
so both engines accept the same records with the same fields and reasons; the
agreement test in ``tests/jobs/test_spark_agreement.py`` holds them to it.

Patterns are written once in the syntax Python ``re``, RE2 and Java share;
:func:`java_pattern` makes the rest of the difference explicit: named groups
become positional (Java names allow no ``_``), ``(?d)`` makes ``\\n`` the only
line terminator (else Java's ``.`` stops at ``\\r``, ``\\u0085``, ``\\u2028``), the
match is anchored at both ends (``fullmatch``), and the quoted-string loop is
made possessive (Java recurses once per iteration of a repeated alternation:
a 10k-character quoted field overflows the stack; possessive loops iterate, and
cannot change what this loop matches, since it can end only at an unescaped quote).

``regex`` is compiled when its pattern means the same to Java
(:func:`python_regex_is_java`) for printable-ASCII records; its other records go
to the processor, as its own batch path does.  Processors without a compiler here
(third-party plugins, ``json``, ``syslog``, ``raw`` with ``strict_utf8``) return None: the engine runs their
``process_batch`` over Arrow batches of records in ``mapInArrow`` (a Python call
per batch, never a per-record UDF).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import Column

    from logflume.processor import Processor

_NAMED = re.compile(r"\(\?P<([A-Za-z_][A-Za-z0-9_]*)>")


@dataclass(frozen=True)
class Compiled:
    """A processor as Spark SQL: its output columns in order, and why a record did not parse (null: it did)."""

    fields: list[tuple[str, Column]]
    reason: Column
    #: Records Spark SQL decides (None: all).  The others go to the processor's own ``process_batch``, as its
    #: batch path hands records it does not take to its per-record code.
    fast: Column | None = None


def java_pattern(pattern: str, possessive: tuple[str, ...] = ()) -> str:
    """``pattern`` (Python/RE2 syntax) as a Java regex matching the whole text, groups numbered as in Python."""
    java = _NAMED.sub("(", pattern)
    for loop in possessive:
        java = java.replace(loop, loop + "+")
    return f"(?d)^(?:{java})\\z"


class _Match:
    """One anchored pattern over a string column: whether it matched, and its groups (null where it did not)."""

    def __init__(self, text: Column, pattern: str, possessive: tuple[str, ...] = ()) -> None:
        from pyspark.sql import functions as F

        self.text = text
        self.java = java_pattern(pattern, possessive)
        self.index = re.compile(pattern).groupindex
        self.ok = F.coalesce(text.rlike(self.java), F.lit(False))
        self._F = F

    def group(self, name: str) -> Column:
        # like Arrow's extract_regex: a group that took no part reads as ""
        F = self._F
        return F.when(self.ok, F.regexp_extract(self.text, self.java, self.index[name]))


def text_of(raw: Column) -> Column:
    """Records as text, invalid UTF-8 replaced by U+FFFD as Python's ``decode(errors="replace")`` does."""
    from pyspark.sql import functions as F

    return F.call_function("make_valid_utf8", raw.cast("string"))


def _nil(value: Column, also: tuple[str, ...] = ()) -> Column:
    """Null for ``""`` and each value in ``also`` (jobs.processors.columns.empty_to_null)."""
    from pyspark.sql import functions as F

    return F.when(value.isin("", *also), F.lit(None).cast("string")).otherwise(value)


def _first_reason(*checks: tuple[Column, Column]) -> Column:
    """The reason of the first failed check, or null (jobs.processors.columns.first_reason)."""
    from pyspark.sql import functions as F

    out = None
    for ok, reason in checks:
        out = F.when(~ok, reason) if out is None else out.when(~ok, reason)
    return out


def compile_access(raw: Column) -> Compiled:
    from pyspark.sql import functions as F

    from jobs.processors import access as A

    lit = F.lit
    text = text_of(raw)
    m = _Match(text, A.LINE, possessive=(A._QUOTED,))
    raw_time = m.group("time")
    t = _Match(raw_time, A.TIME)
    month = F.array_position(F.array(*(lit(x) for x in A.MONTHS)), t.group("mon"))  # 0: not a month
    mm = F.lpad(month.cast("string"), 2, "0")
    local = F.concat(t.group("y"), lit("-"), mm, lit("-"), t.group("d"), lit("T"), t.group("H"), lit(":"),
                     t.group("M"), lit(":"), t.group("S"))
    # a real calendar time: parses, and formats back to itself (the session time zone is UTC: no DST gaps)
    parsed = F.call_function("try_to_timestamp", local, lit("yyyy-MM-dd'T'HH:mm:ss"))
    time_ok = F.coalesce((F.date_format(parsed, "yyyy-MM-dd'T'HH:mm:ss") == local) & (t.group("y") != "0000"),
                         lit(False))
    iso = F.concat(local, t.group("sign"), t.group("zh"), lit(":"), t.group("zm"))
    reason = _first_reason((m.ok, lit(A.NOT_ACCESS)),
                           (time_ok, F.concat(lit("bad access log time ["), raw_time, lit("]"))))
    request = m.group("request")
    req = _Match(request, A.REQUEST)
    client = m.group("client") != ""
    size = m.group("bytes")
    none = lit(None).cast("string")
    long = "bigint"
    fields = [
        ("remote_addr", m.group("remote")),
        ("ident", _nil(m.group("ident"), ("-",))),
        ("user", _nil(m.group("user"), ("-",))),
        ("time", iso),
        ("request", request),
        ("method", req.group("method")),
        ("path", req.group("path")),
        ("protocol", _nil(req.group("protocol"))),
        ("status", F.coalesce(m.group("status"), lit("0")).try_cast(long)),
        ("bytes", F.when(size == "-", lit(0).cast(long)).otherwise(F.coalesce(size, lit("0")).try_cast(long))),
        ("referer", F.when(client, _nil(m.group("referer"), ("-",))).otherwise(none)),
        ("user_agent", F.when(client, _nil(m.group("agent"), ("-",))).otherwise(none)),
        ("extra", _nil(m.group("extra").substr(lit(2), lit(2**31 - 1)))),
    ]
    return Compiled(fields, reason)


def compile_raw(raw: Column) -> Compiled:
    from pyspark.sql import functions as F

    return Compiled([("message", text_of(raw))], F.lit(None).cast("string"))


#: Python constructs Java reads otherwise (or not at all): a pattern with one is not compiled.
_NOT_JAVA = ("(?P=", "(?#", "\\Z", "{,", "&&", "(?a", "(?L", "(?u", "(?x", "\\U", "\\N")
#: Records a compiled regex decides: printable ASCII, where Python re and Java agree on every class.
_PLAIN = r"^[\t -~]*\z"


def python_regex_is_java(pattern: str) -> bool:
    """Whether ``pattern`` means the same to Java on printable ASCII (conservative: False when unsure).

    Refused: back-references by name, comments, verbose mode, ``\\Z``, ``{,n}``,
    and any ``[`` or ``&&`` inside a character class (Java nests and intersects
    classes; Python reads both literally).
    """
    if any(tok in pattern for tok in _NOT_JAVA):
        return False
    in_class, i = False, 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            if c == "[":
                return False
            if c == "]":
                in_class = False
        elif c == "[":
            in_class = True
            if pattern[i + 1:i + 2] == "^":
                i += 1
            if pattern[i + 1:i + 2] == "]":  # a leading ] is a literal in both
                i += 1
        i += 1
    return True


def compile_regex(proc: Any, raw: Column) -> Compiled | None:
    """Printable-ASCII records in SQL (matched or not); others, empty groups and values that do not convert
    go to the processor (as its own batch path does)."""
    from pyspark.sql import functions as F

    pattern = proc.config.pattern
    if not python_regex_is_java(pattern):
        return None
    java = java_pattern(pattern) if proc.config.match == "full" else "(?d)" + _NAMED.sub("(", pattern)
    index = proc.pattern.groupindex
    text = text_of(raw)
    matched = F.coalesce(text.rlike(java), F.lit(False))
    fast = F.coalesce(text.rlike(_PLAIN), F.lit(False))
    sql_types = {"int": "bigint", "float": "double"}
    fields: list[tuple[str, Column]] = []
    good = F.lit(True)
    for name in index:
        value = F.regexp_extract(text, java, index[name])
        good = good & (value != "")  # "" may be a group that took no part: the processor decides
        kind = proc.config.types.get(name, "str")
        if kind != "str":
            from jobs.processors import regex as R

            good = good & value.rlike(R._INT if kind == "int" else R._FLOAT)
            value = value.try_cast(sql_types[kind])
        fields.append((name, F.when(matched, value)))
    fast = fast & (~matched | good)
    return Compiled(fields, F.when(~matched, F.lit("does not match pattern")), fast)


def compile_processor(proc: Processor, raw: Column,
                      java_compiles: Callable[[str], bool] | None = None) -> Compiled | None:
    """The processor as Spark SQL over the binary column ``raw``, or None when it has no compiler (fallback).

    ``java_compiles`` checks a user's pattern in the JVM first (a pattern Java refuses would fail the job).
    """
    from jobs.processors.access import AccessLogProcessor
    from jobs.processors.raw import RawProcessor
    from jobs.processors.regex import RegexProcessor

    kind = type(proc)
    if kind is AccessLogProcessor:
        return compile_access(raw)
    if kind is RawProcessor and not proc.config.strict_utf8:
        return compile_raw(raw)
    if kind is RegexProcessor:
        c = compile_regex(proc, raw)
        if c is not None and java_compiles is not None:
            full = proc.config.match == "full"
            java = java_pattern(proc.config.pattern) if full else "(?d)" + _NAMED.sub("(", proc.config.pattern)
            if not java_compiles(java):
                return None
        return c
    return None


def spark_type(arrow_type: Any) -> str:
    """The Spark SQL type of an output column (a processor's output_schema field)."""
    import pyarrow as pa

    if pa.types.is_integer(arrow_type):
        return "bigint"
    if pa.types.is_floating(arrow_type):
        return "double"
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    return "string"
