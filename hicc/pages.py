"""The four pages as server-rendered HTML: Pipeline, Streams, Store and jobs, Records.

Every value shown is escaped; every table is paged; live pages reload
themselves with a meta refresh (no JavaScript).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from html import escape
from typing import Any
from urllib.parse import urlencode

from hicc.charts import bar_chart, human_bytes, line_chart
from hicc.poller import Target
from hicc.records import Query, Result

NAV = (("/", "Pipeline"), ("/streams", "Streams"), ("/store", "Store and jobs"), ("/records", "Records"))


def _ago(t: float | None) -> str:
    if t is None:
        return "never"
    d = max(0.0, time.time() - t)
    if d < 90:
        return f"{d:.0f}s ago"
    if d < 5400:
        return f"{d / 60:.0f} min ago"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


def _utc(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def _state(state: str) -> str:
    return f'<span class="state state-{state.replace(" ", "")}">{escape(state.upper())}</span>'


def layout(title: str, path: str, body: str, refresh: float = 0) -> str:
    nav = "".join(f'<a href="{href}" class="{"on" if href == path else ""}">{name}</a>' for href, name in NAV)
    meta = f'<meta http-equiv="refresh" content="{refresh:g}">' if refresh > 0 else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">{meta}'
            f'<title>{escape(title)} - logflume HICC</title><link rel="stylesheet" href="/static/hicc.css"></head>'
            f'<body><header><span class="brand">logflume HICC</span>{nav}'
            f'<span class="muted" style="margin-left:auto">{_utc(time.time())} UTC</span></header>'
            f'<main><h1 style="font-size:1.25rem">{escape(title)}</h1>{body}</main></body></html>')


def pager(page: int, pages: int, params: dict[str, Any]) -> str:
    if pages <= 1:
        return ""

    def link(p: int, text: str) -> str:
        return f'<a href="?{escape(urlencode({**params, "page": p}))}">{text}</a>'

    prev = link(page - 1, "&larr; previous") if page > 1 else ""
    nxt = link(page + 1, "next &rarr;") if page < pages else ""
    return f'<div class="pager">{prev}<span>page {page} of {pages}</span>{nxt}</div>'


def _paged(rows: Sequence[Any], page: int, size: int) -> tuple[Sequence[Any], int, int]:
    pages = max(1, (len(rows) + size - 1) // size)
    page = min(max(1, page), pages)
    return rows[(page - 1) * size: page * size], page, pages


_UP = {True: "up", False: "DOWN", None: "-"}


def _store_members(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """A group store's members as the collector's /status lists them (its component's ``status.sinks``)."""
    name = (doc.get("store") or {}).get("name")
    comp = next((c for c in doc.get("components", []) if c.get("name") == name and c.get("kind") == "sink"), {})
    return list((comp.get("status") or {}).get("sinks") or [])


def store_primary(doc: dict[str, Any]) -> str:
    """The store's primary as HTML: up/DOWN/-, and for a group each member's (its primary, and "out" while
    penalized or not started), since a group's members, not the group, have primaries."""
    up = (doc.get("store") or {}).get("primary_up")
    members = _store_members(doc)
    if not members:
        return _UP[up]
    states = []
    for m in members:
        m_up = m.get("primary_up", (m.get("describe") or {}).get("primary_up"))
        out = "" if m.get("taking", m.get("started", True)) else " (out)"
        states.append(f'{escape(str(m.get("name", "?")).rsplit(".", 1)[-1])}: {_UP[m_up]}{out}')
    return f'{_UP[up]}<br><span class="muted">{", ".join(states)}</span>'


def problems(targets: Sequence[Target]) -> list[str]:
    out = []
    for t in targets:
        if not t.up:
            out.append(f"{t.role} {t.name} ({t.address}) is DOWN: {t.error}; last seen {_ago(t.last_ok)}")
        else:
            out.extend(f"{t.role} {t.name}: {r}" for r in t.ready.get("reasons", []))
    return out


def pipeline_page(agents: Sequence[Target], collectors: Sequence[Target], series: dict[str, list],
                  page: int, size: int, window: float, refresh: float) -> str:
    issues = problems([*collectors, *agents])
    if issues:
        shown = issues[:50]
        more = f"<li>... and {len(issues) - 50} more</li>" if len(issues) > 50 else ""
        body = (f'<div class="problems" id="problems"><strong>{len(issues)} problem(s)</strong><ul>'
                + "".join(f"<li>{escape(p)}</li>" for p in shown) + more + "</ul></div>")
    else:
        body = f'<div class="allgood" id="problems">All {len(agents)} agents and {len(collectors)} collectors ' \
               'are up and delivering.</div>'
    agent_set = {t.address for t in agents}
    out_total: dict[float, float] = {}
    in_total: dict[float, float] = {}
    lag_total: dict[float, float] = {}
    for target, points in series.items():
        for t, rate, lag, _up in points:
            if target in agent_set:
                out_total[t] = out_total.get(t, 0.0) + rate
                lag_total[t] = lag_total.get(t, 0.0) + lag
            else:
                in_total[t] = in_total.get(t, 0.0) + rate
    span = f"{window / 3600:g} h" if window >= 3600 else f"{window / 60:g} min"
    body += '<div class="charts">' + line_chart(
        f"Throughput, last {span}", {"agents sent": sorted(out_total.items()), "collectors received":
                                     sorted(in_total.items())}, "B/s") + line_chart(
        f"Lag (bytes not yet committed), last {span}", {"all agents": sorted(lag_total.items())}, "B") + "</div>"

    body += f'<h2>Collectors ({len(collectors)})</h2><table id="collectors"><tr><th>collector</th><th>state</th>' \
            '<th class="num">received</th><th class="num">pending</th><th>store primary</th>' \
            '<th class="num">backlog</th><th class="num">secondary fill</th><th>last seen</th></tr>'
    for t in collectors:
        totals, store = t.doc.get("totals", {}), t.doc.get("store") or {}
        primary = store_primary(t.doc) if t.up else "unknown"
        fill = store.get("secondary_fill")
        body += (f'<tr data-target="{escape(t.address)}"><td>{escape(t.name)}<br><span class="muted">'
                 f'{escape(t.address)}</span></td><td>{_state(t.state)}</td>'
                 f'<td class="num">{human_bytes(totals.get("bytes_in"))}</td>'
                 f'<td class="num">{human_bytes(totals.get("pending_bytes"))}</td><td>{primary}</td>'
                 f'<td class="num">{human_bytes(store.get("backlog_bytes"))}</td>'
                 f'<td class="num">{"-" if fill is None else f"{fill:.0%}"}</td><td>{_ago(t.last_ok)}</td></tr>')
    body += "</table>"

    rows, page, pages = _paged(sorted(agents, key=lambda t: (t.state == "up", t.name)), page, size)
    body += f'<h2>Agents ({len(agents)})</h2><table id="agents"><tr><th>agent</th><th>state</th>' \
            '<th class="num">read</th><th class="num">delivered</th><th class="num">lag</th>' \
            '<th class="num">streams</th><th class="num">channel fill</th><th>collectors</th><th>last seen</th></tr>'
    for t in rows:
        totals = t.doc.get("totals", {})
        fill = max((c.get("fill_ratio", 0.0) for c in t.doc.get("channels", [])), default=0.0)
        colls = "; ".join(f"{c['healthy'] if c['healthy'] is not None else '?'}/{len(c['collectors'])} healthy"
                          for c in t.doc.get("collectors", [])) or "-"
        link = escape(urlencode({"agent": t.address}))
        body += (f'<tr data-target="{escape(t.address)}"><td><a href="/streams?{link}">{escape(t.name)}</a><br>'
                 f'<span class="muted">{escape(t.address)}</span></td><td>{_state(t.state)}</td>'
                 f'<td class="num">{human_bytes(totals.get("bytes_in"))}</td>'
                 f'<td class="num">{human_bytes(totals.get("bytes_out"))}</td>'
                 f'<td class="num">{human_bytes(totals.get("lag_bytes"))}</td>'
                 f'<td class="num">{totals.get("streams", 0)}</td><td class="num">{fill:.0%}</td>'
                 f'<td>{escape(colls)}</td><td>{_ago(t.last_ok)}</td></tr>')
    body += "</table>" + pager(page, pages, {})
    return layout("Pipeline", "/", body, refresh)


def streams_page(agents: Sequence[Target], agent: str, text: str, page: int, size: int, refresh: float) -> str:
    rows = []
    for t in agents:
        if agent and t.address != agent:
            continue
        for s in t.doc.get("streams", []):
            if text and text.lower() not in str(s.get("stream", "")).lower():
                continue
            rows.append((t, s))
    rows.sort(key=lambda r: (-(r[1].get("lag_bytes") or 0), r[0].name, str(r[1].get("stream"))))
    total = len(rows)
    shown, page, pages = _paged(rows, page, size)
    params = {k: v for k, v in (("agent", agent), ("q", text)) if v}
    options = "".join(f'<option value="{escape(t.address)}"{" selected" if t.address == agent else ""}>'
                      f'{escape(t.name)}</option>' for t in agents)
    body = (f'<form class="search" method="get"><label>agent<select name="agent"><option value="">all agents</option>'
            f'{options}</select></label><label>stream contains<input name="q" value="{escape(text)}"></label>'
            f'<button>Filter</button></form><p class="muted">{total} stream(s), most lagging first.</p>'
            '<table id="streams"><tr><th>agent</th><th>source</th><th>stream</th><th class="num">lag</th>'
            '<th class="num">read</th><th class="num">acknowledged</th><th>last rotation</th></tr>')
    for t, s in shown:
        rot = s.get("last_rotation")
        body += (f'<tr><td>{escape(t.name)}{"" if t.up else " " + _state("down")}</td>'
                 f'<td>{escape(str(s.get("source", "")))}</td><td>{escape(str(s.get("stream", "")))}</td>'
                 f'<td class="num">{human_bytes(s.get("lag_bytes"))}</td>'
                 f'<td class="num">{human_bytes(s.get("bytes_read"))}</td>'
                 f'<td class="num">{human_bytes(s.get("bytes_acked"))}</td>'
                 f'<td>{_utc(rot) if isinstance(rot, (int, float)) else "-"}</td></tr>')
    body += "</table>" + pager(page, pages, params)
    truncated = [t.name for t in agents if t.doc.get("streams_truncated")]
    if truncated:
        body += f'<p class="muted">Only the most lagging streams of {escape(", ".join(truncated))} are listed.</p>'
    return layout("Streams", "/streams", body, refresh)


def _listing_table(listing: Any, group_name: str, table_id: str) -> str:
    if listing is None:
        return '<p class="muted">Not configured.</p>'
    head = f'<p class="muted">{escape(listing.url)}</p>'
    if listing.error:
        return head + f'<p class="error">{escape(listing.error)}</p>'
    out = head + (f'<p>{listing.files} file(s), {human_bytes(listing.bytes)}, newest {_ago(listing.newest)}</p>'
                  f'<table id="{table_id}"><tr><th>{group_name}</th><th class="num">files</th>'
                  '<th class="num">bytes</th><th>newest</th></tr>')
    for name, g in sorted(listing.by_group.items()):
        out += (f'<tr><td>{escape(name)}</td><td class="num">{g["files"]}</td>'
                f'<td class="num">{human_bytes(g["bytes"])}</td><td>{_utc(g["newest"])}</td></tr>')
    out += "</table><details><summary>latest files</summary><table>"
    for r in listing.latest:
        out += (f'<tr><td>{escape(r["path"])}</td><td class="num">{human_bytes(r["bytes"])}</td>'
                f'<td>{_utc(r["mtime"])}</td></tr>')
    return out + "</table></details>"


def store_page(collectors: Sequence[Target], jobs: dict[str, Any], refresh: float) -> str:
    body = '<h2>Collector stores</h2><table id="stores"><tr><th>collector</th><th>store</th><th>primary</th>' \
           '<th class="num">backlog</th><th class="num">secondary limit</th><th>open files</th>' \
           '<th class="num">failovers</th></tr>'
    for t in collectors:
        s = t.doc.get("store") or {}
        files = "<br>".join(f'{escape(f["part"])}: {human_bytes(f["open_file_bytes"])} open, '
                            f'{f["files_closed"]:.0f} closed' for f in s.get("files", [])) or "-"
        primary = store_primary(t.doc)
        body += (f'<tr><td>{escape(t.name)} {"" if t.up else _state("down")}</td><td>{escape(s.get("type", "-"))}</td>'
                 f'<td>{primary}</td><td class="num">{human_bytes(s.get("backlog_bytes"))}</td>'
                 f'<td class="num">{human_bytes(s.get("secondary_max_bytes"))}</td><td>{files}</td>'
                 f'<td class="num">{s.get("failovers", 0):.0f}</td></tr>')
    body += "</table><h2>Sink files</h2>" + _listing_table(jobs.get("store"), "day", "sinkfiles")
    body += "<h2>Archive</h2>"
    runs = jobs.get("archive")
    if runs is None:
        body += '<p class="muted">Not configured.</p>'
    elif runs.error:
        body += f'<p class="muted">{escape(runs.url)}</p><p class="error">{escape(runs.error)}</p>'
    else:
        pending = f"batch {runs.pending_batch} in progress or interrupted" if runs.pending_batch else "none"
        body += (f'<table id="archive"><tr><th>last commit</th><td>{_utc(runs.committed_at)} UTC '
                 f'({_ago(runs.committed_at)})</td></tr><tr><th>batches</th><td>{runs.batches}</td></tr>'
                 f'<tr><th>input files archived</th><td>{runs.inputs_done}</td></tr>'
                 f'<tr><th>pending batch</th><td>{pending}</td></tr>'
                 f'<tr><th>error / conflict files</th><td>{runs.errors_files} / {runs.conflict_files}</td></tr>')
        for k, v in sorted(runs.totals.items()):
            body += f'<tr><th>{escape(k.replace("_", " "))}</th><td>{v}</td></tr>'
        body += "</table>"
        body += _listing_table(jobs.get("archive_files"), "datatype", "archivefiles")
    body += "<h2>Demux</h2>"
    runs = jobs.get("demux_runs")
    if runs is not None and not runs.error:  # the same manifest protocol as archive
        pending = f"batch {runs.pending_batch} in progress or interrupted" if runs.pending_batch else "none"
        body += (f'<table id="demuxruns"><tr><th>last commit</th><td>{_utc(runs.committed_at)} UTC '
                 f'({_ago(runs.committed_at)})</td></tr><tr><th>batches</th><td>{runs.batches}</td></tr>'
                 f'<tr><th>input files demuxed</th><td>{runs.inputs_done}</td></tr>'
                 f'<tr><th>pending batch</th><td>{pending}</td></tr>')
        for k, v in sorted(runs.totals.items()):
            body += f'<tr><th>{escape(k.replace("_", " "))}</th><td>{v}</td></tr>'
        body += "</table>"
    body += _listing_table(jobs.get("demux"), "datatype", "demux")
    return layout("Store and jobs", "/store", body, refresh)


PROVENANCE = ("_timestamp", "_source", "_stream", "_offset", "_epoch", "_datatype", "_tags")


def records_page(q: Query, datatypes: Sequence[str], result: Result | None, error: str, page: int) -> str:
    opts = "".join(f'<option{" selected" if d == q.datatype else ""}>{escape(d)}</option>' for d in datatypes)
    body = (f'<form class="search" method="get" id="search"><label>datatype<select name="datatype">'
            f'<option value="">all</option>{opts}</select></label>'
            f'<label>from (UTC)<input name="from" type="datetime-local" value="{escape(q.since)}"></label>'
            f'<label>to (UTC)<input name="to" type="datetime-local" value="{escape(q.until)}"></label>'
            f'<label>source<input name="source" value="{escape(q.source)}" placeholder="web-07 or web-*"></label>'
            f'<label>text<input name="text" value="{escape(q.text)}" size="30"></label>'
            f'<button type="submit">Search</button></form>')
    if error:
        body += f'<p class="error" id="search-error">{escape(error)}</p>'
    if result is not None:
        bars = [(time.strftime("%m-%d %H:00", time.gmtime(h / 1000)), n) for h, n in result.histogram]
        body += (f'<p id="total">{result.total} matching record(s) in {result.seconds * 1000:.0f} ms</p>'
                 + bar_chart("Records per hour (UTC)", bars))
        body += '<table id="records"><tr><th>time (UTC)</th><th>source</th><th>stream</th><th class="num">offset</th>' \
                '<th>datatype</th><th>record</th></tr>'
        for r in result.records:
            ts = r.get("_timestamp")
            fields = {k: v for k, v in r.items() if k not in PROVENANCE}
            body += (f'<tr><td>{_utc(ts / 1000) if isinstance(ts, (int, float)) else "-"}</td>'
                     f'<td>{escape(str(r.get("_source", "")))}</td><td>{escape(str(r.get("_stream", "")))}</td>'
                     f'<td class="num">{escape(str(r.get("_offset", "")))}</td>'
                     f'<td>{escape(str(r.get("_datatype", "")))}</td>'
                     f'<td><pre class="rec">{escape(json.dumps(fields, ensure_ascii=False))}</pre></td></tr>')
        body += "</table>"
        pages = max(1, (result.total + q.limit - 1) // q.limit)
        params = {k: v for k, v in (("datatype", q.datatype), ("from", q.since), ("to", q.until),
                                    ("source", q.source), ("text", q.text)) if v}
        body += pager(page, pages, params)
    return layout("Records", "/records", body)
