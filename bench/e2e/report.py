"""Results of one benchmark run as a Markdown table and JSON, with the machine they were measured on.

Every figure comes from the run being reported: ratios are taken between contenders measured in
that same run (logflume against the limit of the same variant and against each peer), and a
contender that failed or was not run shows its reason instead of a number.  The limit runs several
times; ratios are taken against its best run, and a run in which any contender beats that best is
marked invalid, in the table and in the JSON: the limit was then not a limit.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.e2e.measure import Result

LIMIT = "limit"
COPIES = (LIMIT, "limit-socat")  # the copies themselves: measured, never contenders
PEER_NAMES = ("rsyslog", "syslog-ng")


def machine() -> dict[str, Any]:
    """nproc, CPU model, memory, kernel: what the figures were measured on."""
    model = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
                break
    except (OSError, subprocess.SubprocessError):
        pass
    mem = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu_model": model, "memory_bytes": mem, "kernel": platform.release(),
            "python": platform.python_version(), "hostname": platform.node()}


def _fmt(x: float | None, digits: int = 1) -> str:
    if x is None:
        return "–"
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f}"


def _peer_ratio(rr: dict[str, float], peer: str, results: list[Result], variant: str, contender: str) -> str:
    if not contender.startswith("logflume"):
        return ""
    if peer in rr:
        return _fmt(rr[peer], 1) + "×"
    lost = [r for r in results if r.contender == peer and r.variant == variant and r.lines_lost]
    return f"({peer} lost lines)" if lost else ""


def limits(results: list[Result]) -> dict[str, dict[str, Any]]:
    """Per variant: every valid limit run's MB/s, their best and median, and the socat copies."""
    out: dict[str, dict[str, Any]] = {}
    for r in results:
        if r.contender in COPIES and r.mb_s and not r.lines_lost and not r.error:
            d = out.setdefault(r.variant, {"runs": [], "socat": []})
            d["runs" if r.contender == LIMIT else "socat"].append(r.mb_s)
    for d in out.values():
        d["best"] = max(d["runs"]) if d["runs"] else None
        d["median"] = statistics.median(d["runs"]) if d["runs"] else None
    return out


def _limit_of(lims: dict[str, dict[str, Any]], variant: str) -> dict[str, Any] | None:
    """The variant's own limit, else the single-file one (a rotating file has no limit of its own)."""
    d = lims.get(variant) or lims.get("single")
    return d if d and d.get("best") else None


def invalid_reasons(results: list[Result]) -> list[str]:
    """Contenders faster than the best limit run of their variant: the run measured no limit."""
    lims = limits(results)
    out = []
    for r in results:
        if r.contender in COPIES or r.mb_s is None or r.error:
            continue
        lim = _limit_of(lims, r.variant)
        if lim is not None and r.mb_s > lim["best"]:
            out.append(f"{r.contender}/{r.variant} moved {r.mb_s:,.0f} MB/s, more than the best limit run "
                       f"({lim['best']:,.0f} MB/s)")
    return out


def ratios(results: list[Result]) -> dict[str, dict[str, float]]:
    """For each logflume result: throughput ratio to the limit (best and median run) and to each peer."""
    by_key = {(r.contender, r.variant): r for r in results}
    lims = limits(results)
    out: dict[str, dict[str, float]] = {}
    for r in results:
        if not r.contender.startswith("logflume") or r.mb_s is None or r.lines_lost:
            continue
        row: dict[str, float] = {}
        lim = _limit_of(lims, r.variant)
        if lim is not None:
            row["limit"] = r.mb_s / lim["best"]
            row["limit_median"] = r.mb_s / lim["median"]
        for p in PEER_NAMES:
            peer = by_key.get((p, r.variant))
            # A peer that lost lines did not do the same work: no ratio against it.
            if peer is not None and peer.mb_s and not peer.lines_lost:
                row[p] = r.mb_s / peer.mb_s
        out[f"{r.contender}/{r.variant}"] = row
    return out


def targets(results: list[Result], meta: dict[str, Any]) -> list[str]:
    """One line per target of the issue: met or missed, with the figures."""
    out = []
    rat = ratios(results)
    for r in results:
        if not r.contender.startswith("logflume") or r.error:
            continue
        rr = rat.get(f"{r.contender}/{r.variant}", {})
        want = 0.5 if "-memory-" in r.contender else 0.3
        if "limit" in rr:
            out.append(f"- {r.contender}/{r.variant}: {rr['limit']:.2f}× limit (target ≥ {want}×): "
                       f"{'met' if rr['limit'] >= want else 'MISSED'}")
        for p in PEER_NAMES:
            if p in rr:
                out.append(f"- {r.contender}/{r.variant}: {rr[p]:.1f}× {p} (target ≥ 10×): "
                           f"{'met' if rr[p] >= 10 else 'MISSED'}")
        if "agents" in r.extra and "collector" in r.peak_rss:
            out.append(f"- {r.contender}/{r.variant}: collector peak RSS {_mib(r.peak_rss['collector'])} MiB while "
                       f"{r.extra['agents']} agents sent at once (target: bounded; compare the one-agent rows)")
        chunk = r.extra.get("chunk_size")
        if chunk and "agent" in r.peak_rss:
            cap = 2 * chunk + (64 << 20)
            out.append(f"- {r.contender}/{r.variant}: agent peak RSS {_mib(r.peak_rss['agent'])} MiB "
                       f"(target ≤ 2×chunk_size + 64 MiB = {_mib(cap)} MiB): "
                       f"{'met' if r.peak_rss['agent'] <= cap else 'MISSED'}")
        if r.lines_lost:
            out.append(f"- {r.contender}/{r.variant}: {r.lines_lost} lines lost: MISSED")
    by_variant: dict[str, list[Result]] = {}
    for r in results:
        if r.cpu_s_per_gb is not None and r.contender not in COPIES:
            by_variant.setdefault(r.variant, []).append(r)
    for v, rs in by_variant.items():
        best = min(rs, key=lambda r: r.cpu_s_per_gb or 0.0)
        out.append(f"- {v}: lowest CPU per GB is {best.contender} ({best.cpu_s_per_gb:.1f} s/GB): "
                   f"{'met' if best.contender.startswith('logflume') else 'MISSED'}")
    return out


def markdown(results: list[Result], meta: dict[str, Any], extra_tables: list[str] | None = None) -> str:
    m = meta["machine"]
    lines = [
        f"### End-to-end benchmark, {meta['date']}",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu_model'] or 'unknown model'}), "
        f"{m['memory_bytes'] / (1 << 30):.1f} GiB RAM, Linux {m['kernel']}, Python {m['python']}. "
        f"Data: {_mib(meta['size_bytes'])} MiB of {meta['line_size']}-byte lines per variant, loopback only, "
        f"inputs in page cache. Peers: {', '.join(f'{k} {v}' for k, v in meta.get('peer_versions', {}).items())}. "
        f"Run took {meta['wall_seconds']:.0f} s; load average (1 min) {meta['loadavg_at_start'][0]:.1f} at start, "
        f"{meta['loadavg_at_end'][0]:.1f} at end (other work on the machine competes for its {m['nproc']} CPUs; "
        f"each row's `load` is the load average just before it ran).",
        "",
        "| variant | contender | MB/s | lines/s | CPU s/GB | peak RSS MiB (per process) | lines lost | dups | "
        "vs limit | vs rsyslog | vs syslog-ng | load |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    rat = ratios(results)
    invalid = invalid_reasons(results)
    lims = limits(results)
    if invalid:
        lines[2:2] = ["**INVALID RUN: a contender beat the limit, so the limit measured something else** "
                      "(" + "; ".join(invalid) + ").", ""]
    for r in results:
        rss = ", ".join(f"{k} {_mib(v)}" for k, v in r.peak_rss.items()) or "–"
        rr = rat.get(f"{r.contender}/{r.variant}", {})
        if r.error:
            lines.append(f"| {r.variant} | {r.contender} | not measured: {r.error.splitlines()[-1][:120]} "
                         f"| | | | | | | | | |")
            continue
        name = r.contender
        if name == LIMIT and "limit_run" in r.extra:
            name = f"limit (run {r.extra['limit_run'] + 1})"
        lim = _limit_of(lims, r.variant)
        vs_limit = _fmt(rr.get("limit"), 2) + "×" if "limit" in rr else ""
        if r.contender not in COPIES and lim is not None and r.mb_s and r.mb_s > lim["best"]:
            vs_limit = "**beats the limit: run invalid**"
        elif r.contender == "limit-socat" and lim is not None and r.mb_s:
            vs_limit = _fmt(r.mb_s / lim["best"], 2) + "×"
        lines.append(
            f"| {r.variant} | {name} | {_fmt(r.mb_s)} | {_fmt(r.lines_s, 0)} | {_fmt(r.cpu_s_per_gb)} | "
            f"{rss} | {r.lines_lost if r.lines_lost is not None else '–'} | "
            f"{r.duplicates if r.duplicates is not None else '–'} | "
            f"{vs_limit} | "
            f"{_peer_ratio(rr, 'rsyslog', results, r.variant, r.contender)} | "
            f"{_peer_ratio(rr, 'syslog-ng', results, r.variant, r.contender)} | "
            f"{_fmt(r.extra.get('loadavg_1m_before'))} |"
        )
    notes = [f"- {r.contender}/{r.variant}: {n}" for r in results for n in r.notes]
    if any(r.variant == "rotate" for r in results):
        notes.append("- rotate: no limit is measured for a file being written; `vs limit` uses the `single` limit")
    if lims:
        lines += ["", "| variant | limit runs MB/s (in run order) | best | median | socat copy MB/s |",
                  "|---|---|---:|---:|---|"]
        for v, d in lims.items():
            lines.append(f"| {v} | {', '.join(_fmt(x) for x in d['runs'])} | {_fmt(d['best'])} | "
                         f"{_fmt(d['median'])} | {', '.join(_fmt(x) for x in d['socat']) or 'not installed'} |")
        lines += ["", "`vs limit` is against the best limit run of the variant (the JSON also has the ratio to "
                      "the median run)."]
    goals = targets(results, meta)
    if goals:
        lines += ["", "Targets of issue 20 (measured in this run):", *goals]
    if notes:
        lines += ["", "Notes:", *notes]
    for t in extra_tables or []:
        lines += ["", t]
    lines += ["", "Variants: " + "; ".join(f"`{k}`: {v}" for k, v in meta.get("variants", {}).items()) + "."]
    return "\n".join(lines) + "\n"


def write_results(out_dir: Path, results: list[Result], meta: dict[str, Any],
                  extra: dict[str, Any] | None = None, extra_tables: list[str] | None = None) -> tuple[Path, Path]:
    """Write ``latest.md``/``latest.json`` and dated copies; return the two latest paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    reasons = invalid_reasons(results)
    doc = {"meta": meta, "valid": not reasons, "invalid_reasons": reasons, "limits": limits(results),
           "results": [r.to_json() for r in results], "ratios": ratios(results), **(extra or {})}
    md = markdown(results, meta, extra_tables)
    for name in (f"e2e-{stamp}", "latest"):
        (out_dir / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
        (out_dir / f"{name}.md").write_text(md)
    return out_dir / "latest.md", out_dir / "latest.json"


def rerender(json_path: Path, out_dir: Path | None = None) -> Path:
    """Write the Markdown of a saved run again (after a change to this module), next to its JSON."""
    doc = json.loads(json_path.read_text())
    results = [Result.from_json(r) for r in doc["results"]]
    tables = [t for key in ("events", "latency", "udp") if key in doc for t in doc[key].get("tables", [])]
    md = markdown(results, doc["meta"], tables)
    target = (out_dir or json_path.parent) / (json_path.stem + ".md")
    target.write_text(md)
    doc["ratios"] = ratios(results)
    doc["limits"] = limits(results)
    doc["invalid_reasons"] = invalid_reasons(results)
    doc["valid"] = not doc["invalid_reasons"]
    json_path.write_text(json.dumps(doc, indent=2) + "\n")
    return target


if __name__ == "__main__":
    import sys

    for arg in sys.argv[1:]:
        print(rerender(Path(arg)))
