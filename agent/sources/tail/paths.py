"""Which files a tail source follows: its globs, their excludes and its policy on symbolic links.

Kept apart from the source's loop because it is a pure question about names: the loop asks it for every
path an event or a scan turns up, and ``logflume test`` asks it which entry a sample path belongs to.
"""

from __future__ import annotations

import fnmatch
import glob
import logging
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from agent.sources.tail.watcher import glob_base
from logflume.settings import ListOf, MapOf, Optional, Setting, Str

#: Rotated files compressed by logrotate: skipped unless the glob itself names the suffix.
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip")

PATH_SETTINGS = {
    "glob": Setting(Str(), doc="Files to follow (``*``, ``?``, ``[..]``, ``**`` for any depth)"),
    "datatype": Setting(Optional(Str()), None, "Datatype of these files' chunks (default: the source's)"),
    "tags": Setting(MapOf(Str()), {}, "Tags added to these files' chunks (over the source's tags)"),
    "exclude": Setting(ListOf(Str()), [], "Globs of files to leave out, for this entry only"),
}


@dataclass(frozen=True)
class PathSpec:
    """One ``paths`` entry: an absolute glob and what its files' chunks carry."""

    glob: str
    datatype: str
    tags: dict[str, str]
    exclude: tuple[str, ...]


class FollowedPaths:
    """The ``paths`` entries of one source, with the source-wide excludes and ``follow_symlinks``."""

    def __init__(self, specs: Sequence[PathSpec], exclude: Sequence[str], follow_symlinks: bool,
                 log: logging.Logger) -> None:
        self.specs = list(specs)
        self.exclude = tuple(exclude)
        self.follow_symlinks = follow_symlinks
        self.log = log
        self._refused_links: set[str] = set()  # symbolic links leading out of the globs (warned once)

    @property
    def globs(self) -> list[str]:
        return [s.glob for s in self.specs]

    def excluded(self, path: str, spec: PathSpec) -> bool:
        """Left out of ``spec`` by an exclude (full path, or base name if the pattern has no ``/``), or
        compressed while the glob does not name the suffix."""
        name = os.path.basename(path)
        for pattern in (*self.exclude, *spec.exclude):
            target = path if "/" in pattern else name
            if fnmatch.fnmatchcase(target, pattern):
                return True
        for sfx in COMPRESSED_SUFFIXES:
            if path.endswith(sfx):
                return sfx not in spec.glob  # compressed rotations are read only when a glob names them
        return False

    def spec_for(self, path: str) -> PathSpec | None:
        """The first entry whose glob matches ``path`` and does not exclude it."""
        for spec in self.specs:
            if glob_matches(path, spec.glob) and not self.excluded(path, spec):
                return spec
        return None

    def matching(self) -> Iterator[tuple[str, PathSpec]]:
        """Every path the globs match now and do not exclude, with its entry (a path two globs match comes
        once per entry; the caller keys files by identity)."""
        for spec in self.specs:
            for path in glob.iglob(spec.glob, recursive=True):
                if not self.excluded(path, spec):
                    yield path, spec

    def resolve(self, path: str) -> str | None:
        """The file to read for a path the globs matched; None when a symbolic link is in the way.

        Root reads every file: a link dropped into a log directory (``evil.log -> /etc/shadow``), or a
        linked directory under the glob's fixed part, must not make the agent ship what it leads to.  With
        ``follow_symlinks`` a link is followed when its target is in the globs too.  Raises ``OSError``
        when the path is gone.
        """
        target = path
        for _ in range(40):  # the kernel's own limit on links in a row
            if not stat.S_ISLNK(os.lstat(target).st_mode):
                break
            if not self.follow_symlinks:
                return None
            target = os.path.normpath(os.path.join(os.path.dirname(target), os.readlink(target)))
        else:
            return None
        spec = self.spec_for(target)
        if spec is None:
            if path not in self._refused_links:
                self._refused_links.add(path)
                self.log.warning("not following %s: it leads to %s, which no glob of this source matches",
                                 path, target)
            return None
        base = glob_base(spec.glob)[0]
        rel = os.path.relpath(os.path.dirname(target), base)
        if rel != "." and not rel.startswith(".."):
            directory = base
            for part in rel.split(os.sep):  # directories the glob's wildcards matched: no links among them
                directory = os.path.join(directory, part)
                if os.path.islink(directory):
                    if not self.follow_symlinks:
                        return None
                    real = os.path.realpath(target)  # through a linked directory: where it really is
                    return real if self.spec_for(real) is not None else None
        return target


def glob_matches(path: str, pattern: str) -> bool:
    """Does ``path`` match ``pattern`` as glob.glob would (``*`` stays within one directory)?"""
    if "**" in pattern:
        regex = glob.translate(pattern, recursive=True, include_hidden=True) if hasattr(glob, "translate") else None
        if regex is not None:
            return re.fullmatch(regex, path) is not None
        return fnmatch.fnmatchcase(path, pattern)
    p_parts, s_parts = pattern.split(os.sep), path.split(os.sep)
    return len(p_parts) == len(s_parts) and all(
        fnmatch.fnmatchcase(s, p) and (not s.startswith(".") or p.startswith("."))  # glob skips dot files
        for s, p in zip(s_parts, p_parts, strict=True)
    )
