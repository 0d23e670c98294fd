"""How sink files are named: the final name, and the hidden name a file has while it is written.

A file being written is ``.<final name>.inprogress``: Hadoop, Spark and the jobs skip names
that start with ``.`` or ``_``, so nothing reads it before it is complete and renamed.
Collector sink files are ``<collector>-<yyyymmddHHMMSS>-<n>.seq``.

A ``{datatype}`` in a store's path template becomes :func:`datatype_dir`: a directory name that is
the same on every store, never hidden and never clashes with another datatype's.
"""

from __future__ import annotations

import hashlib
import re

INPROGRESS = ".inprogress"
#: A finished collector sink file's name.
FINAL = re.compile(r"^(?P<collector>.+)-(?P<stamp>\d{14})-(?P<n>\d+)\.seq$")


def is_hidden(rel: str) -> bool:
    """Whether readers skip ``rel`` (a ``/``-separated relative path): a part of it starts with ``.`` or ``_``.

    Hadoop's and Spark's rule, which the jobs and hicc follow too: every file being written
    (:func:`inprogress_name`) is hidden so, and so are the jobs' own ``_manifest`` and set-aside folders.
    """
    return any(part.startswith(("_", ".")) for part in rel.split("/"))


def inprogress_name(final_rel: str) -> str:
    """``d/x.seq`` -> ``d/.x.seq.inprogress``: the name a file has while it is written."""
    head, _, base = final_rel.rpartition("/")
    return f"{head}/.{base}{INPROGRESS}" if head else f".{base}{INPROGRESS}"


def final_name(inprogress_rel: str) -> str:
    """Inverse of :func:`inprogress_name`."""
    head, _, base = inprogress_rel.rpartition("/")
    base = base[1 : -len(INPROGRESS)]
    return f"{head}/{base}" if head else base


#: Characters a datatype keeps in its directory name; every other byte becomes ``%XX`` (Hive's partition
#: escaping): ``:`` is illegal in HDFS path components, ``+``/``@``/``=`` mean something in URLs and Hive paths.
_DIR_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_KEPT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
#: Longest escaped datatype kept as is: ``:`` x 127 escapes to 382 bytes, over most stores' 255-byte name limit.
MAX_DATATYPE_DIR = 200


def datatype_dir(datatype: str) -> str:
    """A datatype as one path component: ``app:json`` -> ``app%3Ajson``; distinct datatypes, distinct names.

    Injective because ``%`` itself is escaped; a leading ``.``/``_`` is escaped too (jobs skip hidden names),
    and an empty datatype is ``%00`` (a NUL, which no datatype can hold).  An escaped name longer than
    :data:`MAX_DATATYPE_DIR` keeps its first 160 bytes and ends in ``%-`` plus 32 hex digits of its SHA-256
    (``%-`` is never produced by the escaping, so it cannot clash with a shorter name).
    """
    if _KEPT.fullmatch(datatype) and len(datatype) <= MAX_DATATYPE_DIR:
        return datatype  # the usual case, once per chunk: no escaping
    if not datatype:
        return "%00"
    out = []
    for i, ch in enumerate(datatype):
        if ch in _DIR_SAFE and not (i == 0 and ch in "._"):
            out.append(ch)
        else:
            out.append("".join(f"%{b:02X}" for b in ch.encode()))
    name = "".join(out)
    if len(name) <= MAX_DATATYPE_DIR:
        return name
    head = name[:160]
    cut = head.rfind("%", len(head) - 2)
    if cut != -1:  # never split a %XX escape
        head = head[:cut]
    return f"{head}%-{hashlib.sha256(datatype.encode()).hexdigest()[:32]}"


def safe_collector_name(name: str) -> str:
    """A host or agent name made fit for a file name that Hadoop does not skip."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip("._-")
    return cleaned or "collector"

