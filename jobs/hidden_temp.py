"""Job output files are written under a hidden temporary name beside their final one, then renamed.

Readers (Hadoop, Spark and every job skip names starting with ``.``) never see
half a file, and a re-run or a rollback finds and replaces what a crashed run left.
"""

from __future__ import annotations

from typing import Any


def hidden_temp(path: str) -> str:
    """The temporary name of ``path`` while it is written: ``folder/.name.tmp``."""
    folder, name = path.rsplit("/", 1)
    return f"{folder}/.{name}.tmp"


def discard(fs: Any, f: Any, tmp: str) -> None:
    """Close ``f`` (if open) and remove the half-written ``tmp``: best effort, the inputs still hold the data."""
    try:
        if f is not None:
            f.close()
        if fs.exists(tmp):
            fs.rm(tmp)
    except OSError:
        pass
