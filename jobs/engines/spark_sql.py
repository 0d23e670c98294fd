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
to the processor, as its own batch path does.  ``syslog`` likewise: its common forms in SQL, the rest
(structured data, errors) to the processor.  Processors without a compiler here
(third-party plugins, ``json``, ``raw`` with ``strict_utf8``) return None: the engine runs their
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
    #: Intermediate columns, in order, each a (name, expression) that may use the ones before: added to the
    #: DataFrame one by one so that Spark computes a shared value once (an expression tree that repeats a
    #: sub-tree grows with every use: the generated code of syslog's ran Janino out of memory).
    steps: tuple[tuple[str, Column], ...] = ()


class Let:
    """Names intermediate values (see ``Compiled.steps``); ``guard`` limits their work to this processor's rows."""

    def __init__(self, prefix: str = "_c_", guard: Column | None = None) -> None:
        self.prefix, self.guard = prefix, guard
        self.steps: list[tuple[str, Column]] = []

    def __call__(self, name: str, expr: Column) -> Column:
        from pyspark.sql import functions as F

        col = f"{self.prefix}{name}{len(self.steps)}"
        self.steps.append((col, expr if self.guard is None else F.when(self.guard, expr)))
        return F.col(col)


def java_pattern(pattern: str, possessive: tuple[str, ...] = ()) -> str:
    """``pattern`` (Python/RE2 syntax) as a Java regex matching the whole text, groups numbered as in Python."""
    java = _NAMED.sub("(", pattern)
    for loop in possessive:
        java = java.replace(loop, loop + "+")
    return f"(?d)^(?:{java})\\z"


#: Joins a match's groups into one string (:class:`_Match`); a record holding it is left to its processor.
SEP = "\uffff"


class _Match:
    """One anchored pattern over a string column: whether it matched, and its groups (null where it did not).

    The pattern runs once per record: ``regexp_replace`` rewrites a match to its
    groups joined by :data:`SEP` (one ``regexp_extract`` per group would run it
    once per group), so the text must not hold ``SEP`` itself (:func:`no_sep`).
    """

    def __init__(self, let: Let, text: Column, pattern: str, possessive: tuple[str, ...] = ()) -> None:
        from pyspark.sql import functions as F

        compiled = re.compile(pattern)
        self.java = java_pattern(pattern, possessive)
        self.index = compiled.groupindex
        joined = "".join(f"{SEP}${i}" for i in range(1, compiled.groups + 1)) or SEP
        out = let("out", F.regexp_replace(text, self.java, joined))
        self.ok = let("ok", F.coalesce(out.startswith(SEP), F.lit(False)))
        self.parts = let("parts", F.when(self.ok, F.split(out, SEP)))
        self._F = F

    def at(self, i: int) -> Column:
        # like Arrow's extract_regex: a group that took no part reads as ""; get(): a record holding SEP splits
        # into other parts (it goes to its processor), and must not fail the job (ANSI mode) meanwhile
        return self._F.get(self.parts, i)

    def group(self, name: str) -> Column:
        return self.at(self.index[name])


def no_sep(text: Column) -> Column:
    """Records :class:`_Match` can take: without :data:`SEP` in them."""
    from pyspark.sql import functions as F

    return F.coalesce(~text.contains(SEP), F.lit(False))


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


def compile_access(raw: Column, let: Let) -> Compiled:
    from pyspark.sql import functions as F

    from jobs.processors import access as A

    lit = F.lit
    text = let("text", text_of(raw))
    m = _Match(let, text, A.LINE, possessive=(A._QUOTED,))
    raw_time = let("time", m.group("time"))
    t = _Match(let, raw_time, A.TIME)
    month = F.array_position(F.array(*(lit(x) for x in A.MONTHS)), t.group("mon"))  # 0: not a month
    mm = F.lpad(month.cast("string"), 2, "0")
    local = let("local", F.concat(t.group("y"), lit("-"), mm, lit("-"), t.group("d"), lit("T"), t.group("H"), lit(":"),
                     t.group("M"), lit(":"), t.group("S")))
    # a real calendar time: parses, and formats back to itself (the session time zone is UTC: no DST gaps)
    parsed = F.call_function("try_to_timestamp", local, lit("yyyy-MM-dd'T'HH:mm:ss"))
    time_ok = let("time_ok", F.coalesce((F.date_format(parsed, "yyyy-MM-dd'T'HH:mm:ss") == local)
                                        & (t.group("y") != "0000"), lit(False)))
    iso = F.concat(local, t.group("sign"), t.group("zh"), lit(":"), t.group("zm"))
    reason = _first_reason((m.ok, lit(A.NOT_ACCESS)),
                           (time_ok, F.concat(lit("bad access log time ["), raw_time, lit("]"))))
    request = let("request", m.group("request"))
    req = _Match(let, request, A.REQUEST)
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
    return Compiled(fields, reason, no_sep(text), tuple(let.steps))


def _valid_datetime(local: Column) -> Column:
    """Whether ``YYYY-MM-DDTHH:MM:SS`` is a real calendar time, as Python's datetime accepts it."""
    from pyspark.sql import functions as F

    fmt = "yyyy-MM-dd'T'HH:mm:ss"
    shape = local.rlike(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\z")
    parsed = F.call_function("try_to_timestamp", local, F.lit(fmt))
    return F.coalesce(shape & (F.date_format(parsed, fmt) == local) & (local.substr(1, 4) != "0000"), F.lit(False))


def compile_syslog(proc: Any, raw: Column, timestamp: Column, let: Let) -> Compiled:
    """The syslog batch path's common forms in SQL (RFC 5424 without structured data, RFC 3164); every other
    record (errors, structured data, other time forms) goes to the processor, exactly as that path hands it on."""
    from pyspark.sql import functions as F

    from jobs.processors import syslog as S

    lit, ns = F.lit, S._NS
    none = lit(None).cast("string")
    text = let("text", text_of(raw))
    has_pri = let("has_pri", F.coalesce(text.rlike(r"^<[0-9]{1,3}>"), lit(False)))
    pri = let("pri", F.when(has_pri, F.regexp_extract(text, r"^<([0-9]{1,3})>", 1).try_cast("bigint")))
    body = let("body", F.when(has_pri, F.regexp_extract(text, r"(?s)^<[0-9]{1,3}>(.*)\z", 1)).otherwise(text))
    if proc.config.require_pri:
        pri_ok = has_pri & (pri <= 191)
    else:
        pri_ok = F.when(has_pri, pri <= 191).otherwise(~text.startswith("<"))
    pri_ok = let("pri_ok", F.coalesce(pri_ok & ~text.startswith("\ufeff"), lit(False)))
    facility = F.when(has_pri, F.floor(pri / 8).cast("bigint"))
    severity = F.when(has_pri, pri % 8)

    # RFC 5424 with no structured data: 1 TIME HOST APP PID MSGID -[ MSG]
    m5 = _Match(let, body, rf"1 ({ns}+) ({ns}+) ({ns}+) ({ns}+) ({ns}+) -(?: ((?s:.*)))?")
    is5 = m5.ok
    g5 = m5.at

    raw_time, msg5 = let("time5", g5(1)), let("msg5", g5(6))
    iso = F.coalesce(raw_time.rlike(java_pattern(S.ISO_TIME)), lit(False))
    local5 = let("local5", raw_time.substr(1, 19))
    after = let("after", raw_time.substr(lit(20), lit(2**31 - 1)))
    frac = F.rpad(F.regexp_extract(after, r"^\.?([0-9]*)", 1), 6, "0")
    frac = F.when(frac == "000000", lit("")).otherwise(F.concat(lit("."), frac))
    tz = F.regexp_extract(after, r"(?s)^\.?[0-9]*(.*)\z", 1)
    tz = F.when(tz.isin("Z", "-00:00"), lit("+00:00")).otherwise(tz)
    time_nil = raw_time == "-"
    time5 = let("time5", F.when(time_nil, none).otherwise(F.concat(local5, frac, tz)))
    time_ok = (time_nil | (iso & _valid_datetime(local5))) & ~msg5.startswith("\ufeff")
    is5 = let("is5", is5 & F.coalesce(time_ok, lit(False)))

    # RFC 3164: Mmm dd hh:mm:ss HOST[ REST], the year from each record's chunk
    m3 = _Match(let, body, S.RFC3164)
    is3 = m3.ok
    g3 = m3.group

    read = F.timestamp_millis(timestamp)  # the session time zone is UTC
    read_year, read_month = let("ry", F.year(read)), let("rm", F.month(read))
    month = let("month", F.array_position(F.array(*(lit(m) for m in S.MONTHS)), g3("mon")).cast("int"))
    year = F.when(month - read_month > 6, read_year - 1).otherwise(read_year)
    mm = F.lpad(month.cast("string"), 2, "0")
    dd = F.translate(g3("day"), " ", "0")
    hms = F.concat(g3("h"), lit(":"), g3("m"), lit(":"), g3("s"))
    rest_of = let("mdhms", F.concat(lit("-"), mm, lit("-"), dd, lit("T"), hms))
    time3 = let("time3", F.concat(F.lpad(year.cast("string"), 4, "0"), rest_of))
    as_read = let("as_read", F.concat(F.lpad(read_year.cast("string"), 4, "0"), rest_of))
    is3 = let("is3", is3 & ~is5 & _valid_datetime(as_read) & _valid_datetime(time3))
    host3, rest = let("host3", g3("host")), let("rest", g3("rest"))
    # TAG: the text before the first ':' is app[pid] (a tag), or cannot be one (no tag), or is left to Python
    colon = let("colon", F.coalesce(rest.contains(":"), lit(False)))
    cand = let("cand", F.substring_index(rest, ":", 1))
    after_tag = let("after_tag", rest.substr(F.length(cand) + 2, lit(2**31 - 1)))
    tag_pattern = java_pattern(r"[^ \t\n\x0b\f\r\[\]:]{1,48}(?:\[[^\] \t\n\x0b\f\r]{1,32}\])?")
    tag = let("tag", colon & F.coalesce(cand.rlike(tag_pattern), lit(False)))
    bracket = let("bracket", F.coalesce(cand.contains("["), lit(False)))
    tag_known = tag | ~colon | ~bracket
    app_part = let("app_part", F.substring_index(cand, "[", 1))
    app3 = F.when(tag, app_part)
    pid3 = _nil(F.when(tag & bracket, cand.substr(F.length(app_part) + 2, F.length(cand) - F.length(app_part) - 2)))
    msg3 = F.when(tag, F.when(after_tag.startswith(" "), after_tag.substr(lit(2), lit(2**31 - 1)))
                  .otherwise(after_tag)).otherwise(rest)
    is3 = let("is3", is3 & tag_known)

    def pick(a: Column, b: Column) -> Column:
        return F.when(is5, a).otherwise(b)

    fields = [
        ("format", pick(lit("rfc5424"), lit("rfc3164"))),
        ("facility", facility),
        ("severity", severity),
        ("time", pick(time5, time3)),
        ("host", pick(_nil(g5(2), ("-",)), host3)),
        ("app", pick(_nil(g5(3), ("-",)), app3)),
        ("pid", pick(_nil(g5(4), ("-",)), pid3)),
        ("msgid", pick(_nil(g5(5), ("-",)), none)),
        ("structured_data", none),
        ("message", pick(msg5, msg3)),
    ]
    return Compiled(fields, none, pri_ok & (is5 | is3) & no_sep(text), tuple(let.steps))


def compile_raw(raw: Column, let: Let) -> Compiled:
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


def compile_regex(proc: Any, raw: Column, let: Let) -> Compiled | None:
    """Printable-ASCII records in SQL (matched or not); others, empty groups and values that do not convert
    go to the processor (as its own batch path does)."""
    from pyspark.sql import functions as F

    pattern = proc.config.pattern
    if not python_regex_is_java(pattern):
        return None
    java = java_pattern(pattern) if proc.config.match == "full" else "(?d)" + _NAMED.sub("(", pattern)
    index = proc.pattern.groupindex
    text = let("text", text_of(raw))
    fast = F.coalesce(text.rlike(_PLAIN), F.lit(False))  # printable ASCII: never SEP
    if proc.config.match == "full":
        m = _Match(let, text, pattern)
        matched = m.ok
    else:
        matched = let("matched", F.coalesce(text.rlike(java), F.lit(False)))
    sql_types = {"int": "bigint", "float": "double"}
    fields: list[tuple[str, Column]] = []
    good = F.lit(True)
    for name in index:
        value = m.group(name) if proc.config.match == "full" else F.regexp_extract(text, java, index[name])
        good = good & (value != "")  # "" may be a group that took no part: the processor decides
        kind = proc.config.types.get(name, "str")
        if kind != "str":
            from jobs.processors import regex as R

            good = good & value.rlike(R._INT if kind == "int" else R._FLOAT)
            value = value.try_cast(sql_types[kind])
        fields.append((name, F.when(matched, value)))
    fast = fast & (~matched | good)
    return Compiled(fields, F.when(~matched, F.lit("does not match pattern")), fast, tuple(let.steps))


def compile_processor(proc: Processor, raw: Column, java_compiles: Callable[[str], bool] | None = None,
                      timestamp: Column | None = None, let: Let | None = None) -> Compiled | None:
    """The processor as Spark SQL over the binary column ``raw``, or None when it has no compiler (fallback).

    ``java_compiles`` checks a user's pattern in the JVM first (a pattern Java refuses would fail the job).
    """
    from jobs.processors.access import AccessLogProcessor
    from jobs.processors.raw import RawProcessor
    from jobs.processors.regex import RegexProcessor
    from jobs.processors.syslog import SyslogProcessor

    let = let or Let()
    kind = type(proc)
    if kind is AccessLogProcessor:
        return compile_access(raw, let)
    if kind is RawProcessor and not proc.config.strict_utf8:
        return compile_raw(raw, let)
    if kind is SyslogProcessor and timestamp is not None:
        return compile_syslog(proc, raw, timestamp, let)
    if kind is RegexProcessor:
        c = compile_regex(proc, raw, let)
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
