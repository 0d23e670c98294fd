"""The jobs' command-line value types (``--batch-size 1GiB``, ``--merge-window 1s``): parsed as config values are."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from logflume.settings import Invalid, parse_duration, parse_size


def size_arg(minimum: int, floor: str) -> Callable[[str], int]:
    """An argparse ``type`` for a size of at least ``minimum`` bytes; ``floor`` says that minimum to a person."""

    def parse(text: str) -> int:
        try:
            n = parse_size(text)
        except Invalid:
            raise argparse.ArgumentTypeError(f"expected a size such as 64MiB, got {text!r}") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"expected a size {floor}")
        return n

    return parse


def duration_ms_arg(text: str) -> int:
    """An argparse ``type`` for a duration (``1s``, ``500ms``, ``0``), in whole milliseconds."""
    try:
        return round(parse_duration(text) * 1000)
    except Invalid:
        raise argparse.ArgumentTypeError(f"expected a duration such as 1s or 500ms, got {text!r}") from None
