"""The report as one HTML page: inline CSS, images as ``data:`` URIs, no script, no request.

Every text that comes from a job (labels, messages, log lines, params, file names) is escaped; a
Content-Security-Policy forbids anything but inline styles and ``data:`` images, so even a string
that escaped escaping could not load or run anything. An image is shown only when its bytes match
the sha256 the result lists for it.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Mapping
from html import escape
from typing import TYPE_CHECKING, Any

from shared.models import Artifact
from shared.report.files import MAX_IMAGE_BYTES, read_bounded, sha256_of

if TYPE_CHECKING:
    from shared.report.gather import ReportData

MAX_ROWS = 500
"""Rows shown per table (a per-class metric of 50,000 labels is cut, and says so)."""
MAX_DETAILS_CHARS = 8000
PNG = "image/png"

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2430;
background:#f5f6f8;line-height:1.4}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:1.5em;margin:0 0 4px}h2{font-size:1.15em;margin:28px 0 8px;
border-bottom:1px solid #d5d9e0;padding-bottom:4px}
.card{background:#fff;border:1px solid #d5d9e0;border-radius:6px;padding:12px 16px;margin:8px 0}
.score{font-size:2.2em;font-weight:600}.ok{color:#17703a}.failed{color:#b3261e}
table{border-collapse:collapse;font-size:.9em;margin:4px 0}
th,td{border:1px solid #e1e4ea;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef0f4;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
code,pre{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:.85em}
pre{background:#1d2430;color:#e8eaef;padding:10px;border-radius:4px;overflow:auto;
white-space:pre-wrap;word-break:break-all}
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(460px,1fr));gap:12px}
figure{margin:0;background:#fff;border:1px solid #d5d9e0;border-radius:6px;padding:8px}
figure img{max-width:100%;height:auto;display:block}
figcaption{font-size:.85em;color:#4a5363;margin-top:6px;word-break:break-all}
.muted{color:#6b7385;font-size:.85em}.warn{color:#b3261e;font-weight:600}
details{margin:6px 0}summary{cursor:pointer;font-weight:600}
"""
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _text(value: object) -> str:
    return escape(str(value), quote=True)


def _number(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _text(value)
    if isinstance(value, float) and math.isfinite(value) and not value.is_integer():
        return f"{value:.6g}"
    return _text(value)


def _records(rows: list[dict[str, object]]) -> str:
    """A list of flat objects (provenance's files) as a table with one column per key."""
    keys = list(dict.fromkeys(key for row in rows for key in row))
    head = "".join(f"<th>{_text(key)}</th>" for key in keys)
    body = "".join(
        "<tr>" + "".join(_cell(row.get(key, "")) for key in keys) + "</tr>"
        for row in rows[:MAX_ROWS]
    )
    more = f'<p class="muted">{MAX_ROWS} of {len(rows)} shown</p>' if len(rows) > MAX_ROWS else ""
    return f"<td><table><tr>{head}</tr>{body}</table>{more}</td>"


def _cell(value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f'<td class="n" title="{_text(value)}">{_number(value)}</td>'
    if (
        isinstance(value, list)
        and value
        and all(
            isinstance(row, dict) and not any(isinstance(v, dict | list) for v in row.values())
            for row in value
        )
    ):
        return _records(value)
    if isinstance(value, dict | list):
        shown = json.dumps(value, ensure_ascii=False, default=str)
        if len(shown) > MAX_DETAILS_CHARS:
            shown = shown[:MAX_DETAILS_CHARS] + " …"
        return f"<td><code>{_text(shown)}</code></td>"
    return f"<td>{_text(value)}</td>"


def _table(rows: Iterable[tuple[object, object]], head: tuple[str, str] | None = None) -> str:
    items = list(rows)
    parts = ["<table>"]
    if head is not None:
        parts.append(f"<tr><th>{_text(head[0])}</th><th>{_text(head[1])}</th></tr>")
    parts.extend(f"<tr><th>{_text(key)}</th>{_cell(value)}</tr>" for key, value in items[:MAX_ROWS])
    parts.append("</table>")
    if len(items) > MAX_ROWS:
        parts.append(
            f'<p class="muted">{MAX_ROWS} of {len(items)} rows shown; all are in result.json</p>'
        )
    return "".join(parts)


def _flatten(value: Mapping[str, Any], prefix: str = "") -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = []
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping) and item:
            rows.extend(_flatten(item, name + "."))
        else:
            rows.append((name, item))
    return rows


def _section(title: str, body: str) -> str:
    return f"<h2>{_text(title)}</h2>{body}"


def _header(data: ReportData) -> str:
    result = data.result
    status = '<span class="ok">scored</span>' if result.ok else '<span class="failed">failed</span>'
    score = result.summary.get("score")
    shown = f'<div class="score">{_number(score)}</div>' if score is not None else ""
    summary = _table(result.summary.items(), ("summary", "value")) if result.summary else ""
    facts = _table(data.facts.items()) if data.facts else ""
    return (
        f"<h1>Job {_text(data.title)} — {status}</h1>"
        f'<div class="card">{shown}{summary}{facts}</div>'
    )


def _error(data: ReportData) -> str:
    error = data.result.error
    if error is None:
        return ""
    rows: list[tuple[str, object]] = [
        ("code", error.code.value),
        ("stage", error.stage.value),
        ("fault", error.fault.value),
        ("retryable", error.retryable),
        ("message", error.message),
    ]
    body = f'<div class="card">{_table(rows)}'
    if error.details:
        body += _table(_flatten(error.details), ("details", ""))
    if error.logs:
        body += f"<p>error log</p><pre>{_text(error.logs)}</pre>"
    if data.log_tail:
        body += f"<p>container log (last lines)</p><pre>{_text(data.log_tail)}</pre>"
    return _section("Error", body + "</div>")


def _metrics(data: ReportData) -> str:
    scalars = [(k, v) for k, v in data.result.metrics.items() if not isinstance(v, dict)]
    body = _table(scalars, ("metric", "value")) if scalars else '<p class="muted">none</p>'
    for name, value in data.result.metrics.items():
        if isinstance(value, dict):
            body += (
                f"<details><summary>{_text(name)} ({len(value)})</summary>"
                f"{_table(value.items())}</details>"
            )
    return _section("Metrics", body)


def _image(data: ReportData, name: str, artifact: Artifact) -> str:
    caption = (
        f"<figcaption><b>{_text(name)}</b> — {_text(artifact.description)}<br>"
        f"<code>{_text(artifact.path)}</code> · {artifact.size} bytes · sha256 "
        f"<code>{_text(artifact.sha256)}</code></figcaption>"
    )
    raw = None
    if data.root is not None:
        raw = read_bounded(data.root, artifact.path, "output", MAX_IMAGE_BYTES)
    if raw is None:
        problem = "the file is not available"
    elif sha256_of(raw) != artifact.sha256:
        problem = "the file does not match the sha256 in the result; not shown"
    else:
        encoded = base64.b64encode(raw).decode("ascii")
        return (
            f'<figure><img src="data:{PNG};base64,{encoded}" alt="{_text(name)}">{caption}</figure>'
        )
    return f'<figure><p class="warn">{_text(problem)}</p>{caption}</figure>'


def _artifacts(data: ReportData) -> str:
    artifacts = data.result.artifacts
    images = [(n, a) for n, a in artifacts.items() if a.media_type == PNG]
    others = [(n, a) for n, a in artifacts.items() if a.media_type != PNG]
    body = ""
    if images:
        body = f'<div class="plots">{"".join(_image(data, n, a) for n, a in images)}</div>'
    if others:
        body += "<table><tr><th>artifact</th><th>path</th><th>type</th><th>bytes</th>"
        body += "<th>sha256</th></tr>"
        body += "".join(
            f"<tr><th>{_text(n)}</th><td><code>{_text(a.path)}</code></td>"
            f'<td>{_text(a.media_type)}</td><td class="n">{a.size}</td>'
            f"<td><code>{_text(a.sha256)}</code></td></tr>"
            for n, a in others
        )
        body += "</table>"
    return _section("Plots and artifacts", body) if body else ""


def _run(data: ReportData) -> str:
    result = data.result
    body = ""
    if result.timing:
        body += _table(result.timing.items(), ("timing", "seconds"))
    if result.resources:
        body += _table(result.resources.items(), ("resource", "value"))
    if data.run:
        run = {k: v for k, v in data.run.items() if v not in (None, {}, "")}
        body += _table(_flatten(run), ("run", "value"))
    if data.log_tail and result.ok:
        body += (
            f"<details><summary>container log (last lines)</summary>"
            f"<pre>{_text(data.log_tail)}</pre></details>"
        )
    return _section("Run: timing and resources", body) if body else ""


def _provenance(data: ReportData) -> str:
    dumped = data.result.model_dump(mode="json")
    provenance = dumped.get("provenance")
    body = ""
    if isinstance(provenance, dict) and provenance:
        body += _table(_flatten(provenance), ("provenance", "value"))
    if data.result.versioning:
        body += _table(data.result.versioning.items(), ("versioning", "value"))
    return _section("Provenance", body) if body else ""


def render(data: ReportData) -> str:
    """The whole page as text."""
    sections = [
        _header(data),
        _error(data),
        _metrics(data),
        _artifacts(data),
        _run(data),
        _provenance(data),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>AutoScorer report: {_text(data.title)}</title><style>{CSS}</style></head>"
        f"<body><main>{''.join(sections)}"
        '<p class="muted">Written by AutoScorer. Every number is in output/result.json.</p>'
        "</main></body></html>\n"
    )
