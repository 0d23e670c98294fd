"""The size options of the jobs' command lines (``--batch-size 1GiB``): parsed as config sizes are, with a floor."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from logflume.settings import Invalid, parse_size


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
