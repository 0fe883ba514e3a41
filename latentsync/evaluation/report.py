"""The evaluation report as files: `report.json` (everything `evaluate` returns) and a self-contained
`report.html` (the tables, and per video a PNG plot of the sync confidence over time, embedded as base64).
Both are written atomically."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..fileio import atomic_path

JSON_NAME = "report.json"
HTML_NAME = "report.html"
# Columns of the tables: key, header, digits; higher-is-better marks.
COLUMNS = (
    ("sync_c", "Sync-C ↑", 3), ("sync_d", "Sync-D ↓", 3), ("offset", "offset", 0),
    ("ssim_mouth", "SSIM mouth", 4), ("ssim_rest", "SSIM rest", 4), ("ssim_frame", "SSIM frame", 4),
    ("psnr_mouth", "PSNR mouth", 2), ("psnr_rest", "PSNR rest", 2), ("psnr_frame", "PSNR frame", 2),
    ("lpips", "LPIPS ↓", 4), ("fid", "FID ↓", 3), ("fvd", "FVD ↓", 3),
)


def check_output_dir(folder: str | os.PathLike) -> Path:
    """Create the folder if needed and make sure files can be written there (before any work starts)."""
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise InputError(f"the output folder {folder} is a file", "pass a folder for report.json and report.html")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test"):
            pass
    except OSError as exc:
        raise InputError(f"cannot write to the output folder {folder}: {exc.strerror or exc}",
                         "choose a folder you can write to") from exc
    return folder


def json_ready(value: Any) -> Any:
    """The value with NaN/inf floats replaced by None (JSON has neither)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_ready(v) for v in value]
    return value


def sync_plot_png(video: dict) -> bytes | None:
    """PNG of a video's sync confidence over time (None without a sync series)."""
    times, conf = video["series"].get("sync_time"), video["series"].get("sync_confidence")
    if not times:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 2.4), dpi=90)
    ax = fig.add_subplot()
    ax.plot(times, conf, color="#1f5fa8", linewidth=1.2, label="sync confidence (9-tap median)")
    ax.axhline(0, color="#777", linewidth=0.8)
    ax.fill_between(times, conf, 0, where=[c < 0 for c in conf], color="#d62728", alpha=0.3, label="below 0: out of sync")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("confidence")
    ax.set_xlim(0, max(video["seconds"], times[-1]))
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _cell(value: Any, digits: int) -> str:
    if value is None:
        return "–"
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}" if digits else str(round(value))
    return html.escape(str(value))


def render_html(report: dict) -> str:
    """A self-contained HTML page (no external files) of the report."""
    videos = report["videos"]
    shown = [c for c in COLUMNS if any(c[0] in v["metrics"] for v in videos) or c[0] in report["aggregate"]]
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h, _ in shown)
    rows = []
    for v in videos:
        cells = "".join(f"<td>{_cell(v['metrics'].get(k), d)}</td>" for k, _, d in shown)
        rows.append(f"<tr><td>{html.escape(Path(v['generated']).name)}</td><td>{v['seconds']:.2f}</td>{cells}</tr>")
    agg = report["aggregate"]
    cells = "".join(f"<td>{_cell(agg.get(k), d)}</td>" for k, _, d in shown)
    rows.append(f"<tr class='agg'><td>all ({agg['videos']} videos)</td><td></td>{cells}</tr>")
    sections = []
    for v in videos:
        png = sync_plot_png(v)
        parts = [f"<h3>{html.escape(Path(v['generated']).name)}</h3>",
                 f"<p>reference: {html.escape(v['reference'] or 'none')}; {v['frames']} frames</p>"]
        if png:
            data = base64.b64encode(png).decode()
            parts.append(f"<img alt='sync confidence over time' src='data:image/png;base64,{data}'>")
        parts += [f"<p class='note'>{html.escape(n)}</p>" for n in v["notes"]]
        sections.append("\n".join(parts))
    settings = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(val))}</td></tr>"
                       for k, val in report["settings"].items())
    weights = "".join(f"<tr><td>{html.escape(c)}</td><td>{html.escape(w['path'])}</td><td><code>{w['sha256']}</code></td></tr>"
                      for c, w in report["weights"].items())
    notes = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in report["notes"])
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>latentsync evaluation</title>
<style>body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}td:first-child{{text-align:left}}
tr.agg{{font-weight:bold;background:#f3f3f3}}.note{{color:#a33}}img{{max-width:100%}}</style></head><body>
<h1>latentsync evaluation</h1>
<table><tr><th>video</th><th>seconds</th>{head}</tr>
{''.join(rows)}</table>{notes}
<h2>Per video</h2>
{''.join(sections)}
<h2>Settings</h2><table>{settings}</table>
<h2>Weights</h2><table><tr><th>component</th><th>file</th><th>SHA-256</th></tr>{weights}</table>
</body></html>
"""


def write_reports(report: dict, folder: str | os.PathLike) -> dict[str, Path]:
    """Write report.json and report.html into `folder` (atomically); return their paths."""
    folder = Path(folder)
    paths = {"json": folder / JSON_NAME, "html": folder / HTML_NAME}
    with atomic_path(paths["json"]) as tmp:
        tmp.write_text(json.dumps(json_ready(report), indent=1, allow_nan=False), encoding="utf-8")
    with atomic_path(paths["html"]) as tmp:
        tmp.write_text(render_html(report), encoding="utf-8")
    return paths
