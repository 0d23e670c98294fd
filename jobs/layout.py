"""Where job outputs go: datatype directories and UTC day/hour partitions."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def partition_name(datatype: str) -> str:
    """A datatype as a directory name: safe characters only, never hidden (``_``/``.`` would be skipped)."""
    name = _UNSAFE.sub("_", datatype) or "unknown"
    return "x" + name if name[0] in "._" else name


def utc_day(ms: int) -> str:
    """``yyyy-mm-dd`` of a millisecond timestamp, in UTC."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def utc_day_hour(ms: int) -> tuple[str, str]:
    """(``yyyy-mm-dd``, ``HH``) of a millisecond timestamp, in UTC."""
    t = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return t.strftime("%Y-%m-%d"), t.strftime("%H")
