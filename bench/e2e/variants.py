"""The input cases every contender runs: one file, ten files, one file rotated while it is read.

A contender's pipeline is started first, watching an empty directory; the clock starts when the
input appears there.  Static inputs appear by hard link (same inode, so the page cache generated
once serves every contender and nothing is copied); the rotation case starts a writer process
that appends the data (at full speed unless ``rate``) and renames the file every ``rotate_seconds``.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from bench.e2e.generator import Dataset, generate
from bench.e2e.measure import Proc


@dataclass
class Variant:
    """One input case: its data set and how it is fed into the watched directory."""

    name: str
    dataset: Dataset
    pattern: str  # file name (or glob) the contenders watch inside the watch directory
    rotate_seconds: float = 0.0  # > 0: fed by the rotating writer, which renames the file this often
    rate: float = 0.0  # rotating writer's rate in bytes/s (0: as fast as it can)
    description: str = ""

    @property
    def rotating(self) -> bool:
        return self.rotate_seconds > 0

    def feed(self, watch: Path, python: str, env: dict[str, str], logs: Path) -> tuple[float, Proc | None]:
        """Make the input appear in ``watch``; return the start time and the writer process, if any."""
        if self.rotating:
            t0 = time.monotonic()
            proc = Proc("writer", [python, "-m", "bench.e2e.generator", "rotate", *self.dataset.files,
                                   "--dst", str(watch / self.pattern), "--rotate-seconds", str(self.rotate_seconds),
                                   "--rate", str(self.rate)], logs / "writer.log", env=env)
            return t0, proc
        t0 = time.monotonic()
        for f in self.dataset.files:
            os.link(f, watch / Path(f).name)
        return t0, None

    def output_lines(self) -> int:
        return self.dataset.total_lines


def clear_dir(path: Path) -> None:
    """Empty (or create) a scratch directory."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def make_variants(data_dir: Path, size_bytes: int, names: list[str], rotate_seconds: float = 0.25,
                  rate: float = 0.0) -> list[Variant]:
    """Generate (or reuse) the data sets of the named variants: ``single``, ``multi``, ``rotate``."""
    out = []
    for name in names:
        if name == "single":
            ds = generate(data_dir / "single", size_bytes, 1, "app")
            out.append(Variant(name, ds, "app.log", description="one file, present when reading starts"))
        elif name == "multi":
            ds = generate(data_dir / "multi", size_bytes, 10, "app")
            out.append(Variant(name, ds, "app-*.log", description="10 files read at once (Vector's file_to_tcp)"))
        elif name == "rotate":
            ds = generate(data_dir / "single", size_bytes, 1, "app")
            rdesc = f"{rate / 1e6:.0f} MB/s" if rate else "full speed"
            out.append(Variant(name, ds, "app.log", rotate_seconds=rotate_seconds, rate=rate,
                               description=f"written at {rdesc} while read, renamed (and a new file created) "
                                           f"every {rotate_seconds:g} s"))
        else:
            raise ValueError(f"unknown variant {name!r}; expected single, multi or rotate")
    return out
