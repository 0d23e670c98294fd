"""``python -m tests.chaos --duration 120 --seed N``: one chaos run; prints the summary line, exits 1 on failure."""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from tests.chaos.runner import run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    p.add_argument("--duration", type=float, default=120, help="seconds of writing under faults (default 120)")
    p.add_argument("--seed", type=int, default=1, help="seed of the fault schedule and the writers (default 1)")
    p.add_argument("--workdir", type=Path, default=None, help="where to run (default: a new temp dir)")
    p.add_argument("--drain-timeout", type=float, default=300, help="longest wait for the pipeline to drain")
    p.add_argument("--rate", type=float, default=30, help="lines per second per file (12 files)")
    p.add_argument("--keep", action="store_true", help="keep logs, store and archive even when the run passes")
    args = p.parse_args(argv)

    def log(msg: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {msg}", file=sys.stderr, flush=True)

    def on_term(signum: int, _frame: object) -> None:
        raise SystemExit(f"stopped by signal {signum}")  # unwinds through run()'s cleanup: no orphans

    signal.signal(signal.SIGTERM, on_term)
    summary = run(duration=args.duration, seed=args.seed, workdir=args.workdir, drain_timeout=args.drain_timeout,
                  rate=args.rate, keep=args.keep, log=log)
    print(summary.line(), flush=True)
    return 0 if summary.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
