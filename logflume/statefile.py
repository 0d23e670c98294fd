"""The one durable, atomic way to replace a small state file on local disk.

Every state file (tail positions, event-stream ledgers, spooldir state, the
store's replay progress, the archive manifest, the file channel's checkpoint)
is replaced whole: written to a temporary file beside it, fsynced, renamed over
the old one, and the directory fsynced.  A crash at any moment leaves either the
old or the new content, never a torn or empty file, and once this returns the
new content survives power loss.  State may hold stream names and offsets of
private logs, so files are created 0600 unless the caller says otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Mode of state files: only their owner reads what was logged and where.
STATE_FILE_MODE = 0o600
#: Mode of state directories.
STATE_DIR_MODE = 0o700


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make file creations, renames and deletions in ``directory`` survive power loss."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike[str], data: bytes | bytearray | memoryview,
                 mode: int = STATE_FILE_MODE) -> None:
    """Replace ``path`` with ``data``: temporary file, fsync, rename, fsync of the directory."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # an old temporary file keeps its mode through O_CREAT
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def remove_durably(path: str | os.PathLike[str]) -> None:
    """Remove a file (if present) and fsync its directory, so the removal is on disk before what follows."""
    try:
        os.remove(path)
    except FileNotFoundError:
        return
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def make_state_dir(directory: str | os.PathLike[str]) -> Path:
    """Create ``directory`` and each missing parent owner-only; existing ones are left as the operator made them.

    (``mkdir(parents=True, mode=...)`` would give the parents the umask's mode: a 0755
    data_dir lets anyone list which streams and channels live there.)
    """
    directory = Path(directory)
    missing = []
    level = directory
    while not level.exists() and level != level.parent:
        missing.append(level)
        level = level.parent
    for level in reversed(missing):
        try:
            level.mkdir(mode=STATE_DIR_MODE)
        except FileExistsError:  # made meanwhile by another thread or process
            pass
        else:
            os.chmod(level, STATE_DIR_MODE)  # mkdir's mode is masked by the umask
    if not directory.is_dir():
        directory.mkdir()  # raises the error that says why (a file in the way)
    return directory
