"""The run's result: one summary line for people and CI logs, and a JSON file with the details."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class CaseResult:
    """One file-channel case (``tests/chaos/cases.py``) after archive."""

    lines: int
    lost: int
    duplicated_after_archive: int
    duplicates_before_archive: int
    ct_window: int  # lines no shipper could read: copytruncate windows, files born and moved away while down
    rotations: dict[str, int]
    read_twice: int = 0  # twin: lines read under two names (kept once per name)
    conflicts_archive: int = 0  # twin: chunks archive set aside as conflicts (its summary's count)
    conflicts_seen: int = 0  # names whose chunks disagree in the store before archive (verify's own count)
    set_aside: int = 0  # twin: lines that are only in _conflicts (the losing side), present but not archived
    stopped: int = 0  # twin: SIGSTOPs of atwin

    def fields(self, name: str) -> str:
        out = (f"{name}: lines={self.lines} lost={self.lost} dup_after_archive={self.duplicated_after_archive} "
               f"window={self.ct_window} "
               f"rotations={self.rotations.get('rename', 0)}+{self.rotations.get('copytruncate', 0)}ct")
        if name == "twin":
            out += (f" read_twice={self.read_twice} conflicts={self.conflicts_archive}"
                    f" names_in_conflict={self.conflicts_seen} set_aside={self.set_aside} stopped={self.stopped}")
        return out


@dataclass
class Summary:
    seed: int
    duration: float
    faults: int
    fault_kinds: dict[str, int]
    lines: int  # written for the file-channel agents, all cases
    lost: int
    duplicated_after_archive: int
    duplicates_before_archive: int
    drain_seconds: float
    corrupt: int
    ct_window: int  # lines lost in copytruncate windows (reported apart: see docs/reliability.md)
    mem_lines: int
    mem_lost: int
    mem_duplicated_after_archive: int
    mem_killed: int
    try_later: int  # TRY_LATER answers the agents logged (full secondary or store behind)
    rotations: dict[str, int]  # by kind, over all writers
    first_missing: str | None
    peak_rss_mib: dict[str, float]
    cases: dict[str, CaseResult] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems

    def line(self) -> str:
        peaks = ",".join(f"{k}={v:.0f}" for k, v in self.peak_rss_mib.items())
        cases = "".join(f"| {c.fields(name)} " for name, c in self.cases.items())
        return (f"chaos seed={self.seed} duration={self.duration:.0f}s faults={self.faults} lines={self.lines} "
                f"lost={self.lost} dup_after_archive={self.duplicated_after_archive} "
                f"dup_before_archive={self.duplicates_before_archive} drain={self.drain_seconds:.1f}s "
                f"corrupt={self.corrupt} ct_window={self.ct_window} try_later={self.try_later} "
                f"rotations={self.rotations.get('rename', 0)}+{self.rotations.get('copytruncate', 0)}ct "
                f"{cases}| memory-channel: lines={self.mem_lines} "
                f"lost={self.mem_lost} dup_after_archive={self.mem_duplicated_after_archive} "
                f"killed={self.mem_killed} | peak_rss_mib {peaks} | {'PASS' if self.passed else 'FAIL'}")

    def write(self, path: Path) -> None:
        path.write_text(json.dumps({**asdict(self), "passed": self.passed, "line": self.line()}, indent=2))
