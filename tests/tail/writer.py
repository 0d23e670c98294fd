"""A log writer for the tests: numbered lines, rotation by rename or by copytruncate."""

from __future__ import annotations

import os
import re
import shutil
import threading
import time
from pathlib import Path

LINE = re.compile(rb"^L(\d{9}) ")


def line(n: int) -> bytes:
    return b"L%09d %s\n" % (n, b"abcdefghij" * (n % 13))


def numbers(data: bytes) -> list[int]:
    """Line numbers in ``data``; fails on any line that is not intact."""
    out = []
    for raw in data.splitlines(keepends=True):
        m = LINE.match(raw)
        assert m and raw == line(int(m.group(1))), f"damaged line {raw[:80]!r}"
        out.append(int(m.group(1)))
    return out


class RotatingWriter(threading.Thread):
    """Appends numbered lines to ``path``; every ``rotate_every`` s rotates it (rename or copytruncate)."""

    def __init__(self, path: Path, mode: str, rotate_every: float, lines_per_burst: int = 20,
                 pause: float = 0.0005) -> None:
        super().__init__(daemon=True)
        self.path, self.mode, self.rotate_every = path, mode, rotate_every
        self.burst, self.pause = lines_per_burst, pause
        self.stop_flag = threading.Event()
        self.next = 0
        self.rotations: list[Path] = []  # rotated copies/renames, oldest first
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            last = time.monotonic()
            while not self.stop_flag.is_set():
                os.write(fd, b"".join(line(n) for n in range(self.next, self.next + self.burst)))
                self.next += self.burst
                if time.monotonic() - last >= self.rotate_every:
                    last = time.monotonic()
                    target = self.path.with_name(f"{self.path.name}.{len(self.rotations) + 1}")
                    if self.mode == "rename":
                        os.close(fd)
                        os.rename(self.path, target)
                        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
                    else:
                        shutil.copyfile(self.path, target)
                        os.ftruncate(fd, 0)
                    self.rotations.append(target)
                time.sleep(self.pause)
            os.close(fd)
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def finish(self) -> int:
        self.stop_flag.set()
        self.join(10)
        if self.error:
            raise self.error
        return self.next
