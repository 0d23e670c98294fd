"""Noticing changes: watchdog (inotify here) events, with a periodic scan as the fallback.

Events only say *where to look*: the tail source re-checks every path it is
told about, so a lost, late or coalesced event costs latency, never data.
Filesystems that send no events (NFS, some FUSE mounts) are covered by the
periodic scan alone.  Directories that do not exist yet are watched as soon
as a later scan finds them.
"""

from __future__ import annotations

import glob
import logging
import os
import threading

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger("logflume.source.tail.watcher")



class _ShutdownRaceFilter(logging.Filter):
    """watchdog logs this at ERROR when an observer stops while its reader thread is mid-read: harmless."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in record.getMessage()


logging.getLogger("watchdog.observers.inotify").addFilter(_ShutdownRaceFilter())

# Events that can mean new bytes or a new/renamed/removed file.  "opened" and
# "closed_no_write" are left out: our own reads cause them.
_INTERESTING = {"created", "modified", "moved", "deleted", "closed"}


def glob_base(pattern: str) -> tuple[str, bool]:
    """The directory to watch for a glob, and whether matches may lie in its subdirectories."""
    parts = pattern.split(os.sep)
    fixed: list[str] = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        fixed.append(part)
    base = os.sep.join(fixed) or (os.sep if pattern.startswith(os.sep) else ".")
    rest = parts[len(fixed):]
    return base, len(rest) > 1


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: ChangeWatcher) -> None:
        self.watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _INTERESTING:
            return
        if event.is_directory and event.event_type not in ("created", "moved"):
            return  # a directory "modified" only repeats what its files' own events say
        paths = [os.fsdecode(event.src_path)]
        dest = getattr(event, "dest_path", "")
        if dest:
            paths.append(os.fsdecode(dest))
        self.watcher.notify(paths, moved=event.event_type == "moved", directory=event.is_directory)


class ChangeWatcher:
    """Collects the paths that changed since the last :meth:`take`, and wakes the reader."""

    def __init__(self, patterns: list[str], use_events: bool = True) -> None:
        self.patterns = patterns
        self.use_events = use_events
        self.wakeup = threading.Event()
        self._lock = threading.Lock()
        self._dirty: set[str] = set()
        self._moves: list[tuple[str, str]] = []
        self._dir_changed = False
        self._observer: Observer | None = None
        self._watched: set[str] = set()

    def start(self) -> None:
        if self.use_events:
            self._observer = Observer()
            self._observer.daemon = True
            self._observer.start()
            self.ensure_watches()

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None

    def ensure_watches(self) -> None:
        """Watch every base directory that exists now (called at start and after each scan)."""
        if self._observer is None:
            return
        for pattern in self.patterns:
            base, recursive = glob_base(pattern)
            key = f"{base}|{recursive}"
            if key in self._watched or not os.path.isdir(base):
                continue
            try:
                self._observer.schedule(_Handler(self), base, recursive=recursive)
                self._watched.add(key)
            except OSError as exc:  # inotify watch limit, permissions: the scan still covers it
                log.warning("cannot watch %s for changes (%s); relying on the periodic scan", base, exc)
                self._watched.add(key)

    def notify(self, paths: list[str], moved: bool = False, directory: bool = False) -> None:
        with self._lock:
            if directory:
                self._dir_changed = True
            else:
                self._dirty.update(paths)
                if moved and len(paths) == 2:
                    self._moves.append((paths[0], paths[1]))
        self.wakeup.set()

    def take(self) -> tuple[set[str], list[tuple[str, str]], bool]:
        """(paths changed, (old, new) renames, whether a directory changed) since the last call."""
        with self._lock:
            dirty, moves, dirs = self._dirty, self._moves, self._dir_changed
            self._dirty, self._moves, self._dir_changed = set(), [], False
            self.wakeup.clear()
        return dirty, moves, dirs

    def wait(self, timeout: float) -> bool:
        return self.wakeup.wait(timeout)
