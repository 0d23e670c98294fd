"""How sink files are named: the final name, and the hidden name a file has while it is written.

A file being written is ``.<final name>.inprogress``: Hadoop, Spark and the jobs skip names
that start with ``.`` or ``_``, so nothing reads it before it is complete and renamed.
Collector sink files are ``<collector>-<yyyymmddHHMMSS>-<n>.seq``.
"""

from __future__ import annotations

import re

INPROGRESS = ".inprogress"
#: A finished collector sink file's name.
FINAL = re.compile(r"^(?P<collector>.+)-(?P<stamp>\d{14})-(?P<n>\d+)\.seq$")


def inprogress_name(final_rel: str) -> str:
    """``d/x.seq`` -> ``d/.x.seq.inprogress``: the name a file has while it is written."""
    head, _, base = final_rel.rpartition("/")
    return f"{head}/.{base}{INPROGRESS}" if head else f".{base}{INPROGRESS}"


def final_name(inprogress_rel: str) -> str:
    """Inverse of :func:`inprogress_name`."""
    head, _, base = inprogress_rel.rpartition("/")
    base = base[1 : -len(INPROGRESS)]
    return f"{head}/{base}" if head else base


def safe_collector_name(name: str) -> str:
    """A host or agent name made fit for a file name that Hadoop does not skip."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip("._-")
    return cleaned or "collector"


def sink_file_order(name: str) -> tuple[str, int, str]:
    """Sort key giving sink files of one collector in the order they were opened."""
    base = name.rsplit("/", 1)[-1]
    m = FINAL.match(base)
    return (m.group("stamp"), int(m.group("n")), base) if m else ("", 0, base)
