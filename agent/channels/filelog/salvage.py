"""Finding and setting aside damage in a file channel: ``logflume channel verify|salvage DIR``.

The channel itself refuses to start on damage, because what is damaged may be
committed chunks and skipping it silently would lose them.  ``survey`` reads a
channel directory without changing it and says which regions are damaged and
which committed chunks are intact, in commit order.  ``salvage`` copies every
damaged region into a quarantine folder beside the channel (with a
``manifest.json`` and a ``README.txt`` saying what and why), then replaces the
checkpoint, in one atomic rename, with one that lists exactly the intact
chunks and points past every damaged byte: the channel starts, delivers those
chunks and deletes the damaged segments once nothing intact is left in them.
A crash before the rename leaves the channel as it was; salvage can be rerun.

What cannot be known is resolved towards delivering twice rather than losing:
a damaged region that may have been a transaction's COMMIT keeps that
transaction's chunks, and a damaged COMMIT's consumed chunks may come again.
Both are reported.  A torn tail (a write cut by a crash, never acknowledged)
is not damage: the channel cuts it at start as always.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import mmap
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from agent.channels.filelog import checkpoint as checkpoints
from agent.channels.filelog.checkpoint import Checkpoint, Entry
from agent.channels.filelog.records import HEADER_SIZE, BadRecord, LogCorrupted, parse_at, read_put
from agent.channels.filelog.replay import Damage, replay
from agent.channels.filelog.segments import list_segments, segment_name
from logflume.statefile import fsync_dir, write_atomic

EXIT_DAMAGED = 1
EXIT_USAGE = 2
_COPY_BLOCK = 1 << 20


@dataclass
class Survey:
    """What a channel directory holds: intact chunks in commit order, and every damaged region."""

    directory: Path
    #: Committed, unconsumed chunks whose records are intact, in commit order.
    queue: list[Entry]
    damage: list[Damage]
    next_txid: int
    segments: list[int]
    #: Chunks kept only because a damaged region may have been their transaction's COMMIT.
    in_doubt: int = 0
    #: (segment path, offset, bytes, reason) of a torn tail: not damage, the channel cuts it at start.
    torn: tuple[str, int, int, str] | None = None

    @property
    def intact_bytes(self) -> int:
        return sum(e[3] for e in self.queue)


@dataclass
class Quarantine:
    """What salvage set aside: the folder, and how many damaged bytes it copied there."""

    directory: Path
    bytes: int
    damage: list[Damage]
    kept_chunks: int


def quarantine_root(channel_dir: Path) -> Path:
    return channel_dir.parent / f"{channel_dir.name}.quarantine"


def commands_hint(channel_dir: Path, setting: bool = True) -> str:
    """The advice a refused start ends with: the two commands to run (and, with ``setting``, the setting)."""
    d = shlex.quote(str(channel_dir))
    return (f"run `logflume channel verify {d}` to list the damage and `logflume channel salvage {d}` to move it "
            f"to {shlex.quote(str(quarantine_root(channel_dir)))}/ and keep every intact chunk"
            + (" (or set on_corruption: quarantine on the channel)" if setting else ""))


def survey(directory: Path) -> Survey:
    """Read ``directory`` (not changing it) and find every damaged region and every intact committed chunk."""
    segments = list_segments(directory)
    damage: list[Damage] = []
    ckpt_path = directory / checkpoints.FILE_NAME
    ckpt: Checkpoint | None
    try:
        ckpt = checkpoints.load(directory)
        if ckpt is None and not segments:
            ckpt = Checkpoint(segment=0)
        elif ckpt is None:
            damage.append(Damage(str(ckpt_path), 0, 0, f"checkpoint missing but {len(segments)} segment file(s) "
                                 "exist", "state rebuilt from the log: chunks consumed in segments already "
                                 "deleted may be delivered again"))
    except LogCorrupted as exc:
        raw = ckpt_path.read_bytes()
        ckpt = _believable_checkpoint(directory, raw, segments)
        impact = ("every entry checks out against the log: used as it is" if ckpt is not None else
                  "state rebuilt from the log: chunks consumed in segments already deleted may be delivered again")
        damage.append(Damage(str(ckpt_path), 0, len(raw), exc.reason, impact))
    rebuilt = ckpt is None
    if ckpt is None:
        ckpt = Checkpoint(next_txid=1, segment=segments[0] if segments else 0, offset=0)
    result = replay(directory, ckpt, segments, damage)
    queue = list(result.queue)
    in_doubt = result.in_doubt
    if rebuilt:
        # Without the checkpoint, a transaction whose puts lie in an older segment may have committed in a
        # segment since deleted: keep its chunks (at least once).  Open ones in the newest never committed.
        newest = max((s for s in segments if (directory / segment_name(s)).stat().st_size), default=None)
        for entries in result.pending.values():
            if any(e[0] != newest for e in entries):
                queue.extend(entries)
                in_doubt += len(entries)
    intact = _check_checkpointed(directory, queue, (ckpt.segment, ckpt.offset), damage)
    return Survey(directory, intact, damage, max(result.next_txid, ckpt.next_txid), segments, in_doubt,
                  result.torn)


def _check_checkpointed(directory: Path, queue: list[Entry], position: tuple[int, int],
                        damage: list[Damage]) -> list[Entry]:
    """The chunks of ``queue`` whose PUT records are intact; replay read only those after ``position``."""
    intact = []
    fds: dict[int, tuple[int, int]] = {}
    try:
        for e in queue:
            seg, off, meta_len, data_len = e
            if (seg, off) >= position:
                intact.append(e)  # replayed: its record was checked
                continue
            if seg not in fds:
                fd = os.open(directory / segment_name(seg), os.O_RDONLY | os.O_CLOEXEC)
                fds[seg] = (fd, os.fstat(fd).st_size)
            fd, size = fds[seg]
            try:
                _check_put(fd, size, e)
            except BadRecord as exc:
                present = max(0, min(size, off + HEADER_SIZE + meta_len + data_len) - off)
                damage.append(Damage(str(directory / segment_name(seg)), off, present, f"committed chunk unreadable: "
                                     f"{exc}", "committed chunk lost"))
                continue
            intact.append(e)
    finally:
        for fd, _ in fds.values():
            os.close(fd)
    return intact


def _check_put(fd: int, size: int, entry: Entry) -> None:
    """Raise BadRecord unless ``entry`` is a whole, valid PUT record (the lengths are checked before any read)."""
    _seg, off, meta_len, data_len = entry
    if off + HEADER_SIZE + meta_len + data_len > size:
        raise BadRecord(f"segment ends inside the record ({size} bytes, record ends at "
                        f"{off + HEADER_SIZE + meta_len + data_len})")
    read_put(fd, off, meta_len, data_len)


def _believable_checkpoint(directory: Path, raw: bytes, segments: list[int]) -> Checkpoint | None:
    """The damaged checkpoint, if its structure parses and every position in it is a valid record; else None."""
    try:
        ckpt = Checkpoint.decode(raw, str(directory / checkpoints.FILE_NAME), check_crc=False)
    except LogCorrupted:
        return None
    sizes = {s: (directory / segment_name(s)).stat().st_size for s in segments}
    if ckpt.offset:
        size = sizes.get(ckpt.segment)
        if size is None or ckpt.offset > size:
            return None
        if ckpt.offset < size:
            with open(directory / segment_name(ckpt.segment), "rb") as f, \
                    mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                try:
                    parse_at(mm, ckpt.offset)
                except BadRecord:
                    return None
    entries = [*ckpt.queue, *(e for es in ckpt.open_puts.values() for e in es)]
    for seg, group in _by_segment(entries).items():
        if seg not in sizes:
            return None
        fd = os.open(directory / segment_name(seg), os.O_RDONLY | os.O_CLOEXEC)
        try:
            for e in group:
                _check_put(fd, sizes[seg], e)
        except BadRecord:
            return None
        finally:
            os.close(fd)
    return ckpt


def _by_segment(entries: list[Entry]) -> dict[int, list[Entry]]:
    out: dict[int, list[Entry]] = {}
    for e in entries:
        out.setdefault(e[0], []).append(e)
    return out


def salvage(directory: Path, found: Survey | None = None) -> Quarantine | None:
    """Copy the damage into a new quarantine folder and checkpoint exactly the intact chunks; None if undamaged.

    The caller holds the channel directory's lock (the channel at start, or the CLI).
    """
    found = found or survey(directory)
    if not found.damage:
        return None
    doubt = f", {found.in_doubt} of them kept in doubt (may be delivered twice)" if found.in_doubt else ""
    folder, total = write_quarantine(
        directory, found.damage,
        {"kept_chunks": len(found.queue), "kept_bytes": found.intact_bytes, "kept_in_doubt": found.in_doubt},
        f"The channel kept {len(found.queue)} intact committed chunk(s) ({found.intact_bytes} bytes{doubt}) in "
        "commit order and delivers them at its next start; their old segment files are deleted once delivered.")
    # The commit point: one atomic rename.  Positions past every damaged byte, so nothing is replayed.
    newest = max(found.segments, default=0)
    end = (directory / segment_name(newest)).stat().st_size if found.segments else 0
    checkpoints.save(directory, Checkpoint(found.next_txid, newest, end, list(found.queue), {}))
    return Quarantine(folder, total, found.damage, len(found.queue))


def write_quarantine(directory: Path, damage: list[Damage], summary: dict, kept: str) -> tuple[Path, int]:
    """A new folder under ``<directory>.quarantine/`` with a copy of each damaged region, manifest.json and
    README.txt, all fsynced; returns the folder and the bytes copied."""
    root = quarantine_root(directory)
    root.mkdir(mode=0o700, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    folder = root / stamp
    n = 1
    while True:
        try:
            folder.mkdir(mode=0o700)
            break
        except FileExistsError:
            n += 1
            folder = root / f"{stamp}-{n}"
    fsync_dir(root)
    fsync_dir(root.parent)
    items = []
    total = 0
    for d in damage:
        saved = None
        if d.length:
            saved = f"{Path(d.path).name}@{d.offset}.bin"
            _copy_range(Path(d.path), d.offset, d.length, folder / saved)
            total += d.length
        items.append({**asdict(d), "saved_as": saved})
    manifest = {
        "channel": str(directory),
        "salvaged_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quarantined_bytes": total,
        **summary,
        "damage": items,
    }
    write_atomic(folder / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    write_atomic(folder / "README.txt", _readme(directory, items, total, kept).encode())
    fsync_dir(folder)
    return folder, total


def _copy_range(src: Path, offset: int, length: int, dest: Path) -> None:
    """Copy ``length`` bytes of ``src`` from ``offset`` into a new file, a block at a time (bounded memory)."""
    with open(src, "rb") as fin:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            pos, left = offset, length
            while left:
                block = os.pread(fin.fileno(), min(left, _COPY_BLOCK), pos)
                if not block:
                    break
                os.write(fd, block)
                pos += len(block)
                left -= len(block)
            os.fsync(fd)
        finally:
            os.close(fd)


def _readme(directory: Path, items: list[dict], total: int, kept: str) -> str:
    lines = [
        f"Damaged parts of the file channel {directory}, set aside by `logflume channel salvage`",
        f"or by the channel's on_corruption: quarantine, at {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}.",
        "",
        "Each .bin file is a copy of the damaged bytes of the file and offset in its name; manifest.json",
        "lists them with the reason and what it cost.  The channel no longer refers to these bytes.",
        kept,
        "",
    ]
    for item in items:
        saved = item["saved_as"] or "(bytes gone, nothing to copy)"
        lines.append(f"- {item['path']} at offset {item['offset']}, {item['length']} bytes -> {saved}")
        lines.append(f"  why: {item['reason']}")
        lines.append(f"  cost: {item['impact']}")
    lines += ["", f"{total} byte(s) quarantined.  Delete this folder once you have no use for it.", ""]
    return "\n".join(lines)


def describe(found: Survey) -> list[str]:
    """The report printed by verify and salvage: one line per damaged region, then what is intact."""
    lines = []
    for d in found.damage:
        what = f"{d.length} bytes" if d.length else "bytes gone"
        lines.append(f"damaged: {d.path} at offset {d.offset} ({what}): {d.reason}; {d.impact}")
    if found.torn:
        path, off, size, reason = found.torn
        lines.append(f"torn tail (not damage, never committed; cut at start): {path} at offset {off} "
                     f"({size} bytes): {reason}")
    doubt = f", {found.in_doubt} of them kept in doubt (may be delivered twice)" if found.in_doubt else ""
    lines.append(f"intact: {len(found.queue)} committed chunk(s), {found.intact_bytes} bytes{doubt}")
    return lines


def _lock(directory: Path) -> int:
    """Hold the channel directory's lock, as the channel does, so no agent uses it meanwhile; -1 if none yet."""
    try:
        fd = os.open(directory / "lock", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return -1
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise
    return fd


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="logflume channel", description="Check or repair a file channel directory "
                                     "(the agent using it must be stopped).")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser("verify", help="Report damaged records with their segment and offset (exit 1 if any)")
    p.add_argument("dir", type=Path, help="the channel's directory (dir, default <data_dir>/channel/<name>)")
    p = sub.add_parser("salvage", help="Move damaged records to DIR.quarantine/ and keep every intact chunk")
    p.add_argument("dir", type=Path, help="the channel's directory (dir, default <data_dir>/channel/<name>)")
    args = parser.parse_args(argv)
    cmd = f"logflume channel {args.action}"
    directory: Path = args.dir
    if not directory.is_dir() or not ((directory / checkpoints.FILE_NAME).exists() or list_segments(directory)):
        print(f"{cmd}: {directory}: not a file channel directory (no checkpoint, no log-*.seg)", file=sys.stderr)
        return EXIT_USAGE
    try:
        lock = _lock(directory)
    except BlockingIOError:
        print(f"{cmd}: {directory} is in use by a running channel; stop the agent first", file=sys.stderr)
        return 1
    try:
        found = survey(directory)
        for line in describe(found):
            print(f"{directory}: {line}")
        if args.action == "verify":
            if found.damage:
                print(f"{directory}: {len(found.damage)} damaged region(s); "
                      f"run `logflume channel salvage {shlex.quote(str(directory))}` to move them aside")
                return EXIT_DAMAGED
            print(f"{directory}: no damage")
            return 0
        moved = salvage(directory, found)
        if moved is None:
            print(f"{directory}: no damage, nothing to salvage")
        else:
            print(f"{directory}: moved {len(moved.damage)} damaged region(s), {moved.bytes} bytes, to "
                  f"{moved.directory}; the channel keeps {moved.kept_chunks} chunk(s) and can start")
        return 0
    except OSError as exc:
        print(f"{cmd}: {directory}: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
        return 1
    finally:
        if lock >= 0:
            os.close(lock)
