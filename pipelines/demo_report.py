"""The demo's report, as ``report.md`` and ``report.html`` (the same content; pictures linked relatively).

Example:
    >>> md, html = write_report("demo_output", facts)    # doctest: +SKIP
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any

METRICS = ("image_AUROC", "image_AUPR", "image_F1Max", "image_ECE", "pixel_AUROC", "pixel_AUROC_anomalous",
           "pixel_AUPRO")
NAMES = {"model": "FusionMedCLIP (ours, trained)", "zeroshot": "zero-shot CLIP", "patchcore": "PatchCore-style"}


def metrics_rows(results: dict[str, dict[str, Any]]) -> list[list[str]]:
    rows = [["method", *METRICS]]
    for method, r in results.items():
        rows.append([NAMES.get(method, method)] + [("-" if r.get(m) is None else f"{r[m]:.3f}") for m in METRICS])
    return rows


def _md_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows[1:]])


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f"<table><tr>{head}</tr>{body}</table>"


def write_report(out: str | Path, facts: dict[str, Any]) -> tuple[Path, Path]:
    """``facts``: title, notes (paragraphs), results (method -> metrics), pictures (caption -> path relative
    to ``out``), timings (stage -> seconds), files (what -> path). Writes and returns both files."""
    out = Path(out)
    metrics = metrics_rows(facts["results"])
    timings = [["stage", "seconds"]] + [[k, f"{v:.1f}"] for k, v in facts["timings"].items()]
    timings.append(["total", f"{sum(facts['timings'].values()):.1f}"])
    files = [["what", "where"]] + [[k, str(v)] for k, v in facts["files"].items()]
    md = [f"# {facts['title']}", ""] + [p + "\n" for p in facts["notes"]]
    md += ["## Detection on the held-out test slices", "", _md_table(metrics), ""]
    md += [p + "\n" for p in facts.get("findings", [])]
    for caption, path in facts["pictures"].items():
        md += [f"### {caption}", "", f"![{caption}]({path})", ""]
    md += ["## Time of each stage", "", _md_table(timings), "", "## Where every file is", "", _md_table(files), ""]
    page = ["<!doctype html><html><head><meta charset='utf-8'>",
            f"<title>{html.escape(facts['title'])}</title>",
            "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
            "text-align:left}img{max-width:100%;border:1px solid #ddd}</style></head><body>",
            f"<h1>{html.escape(facts['title'])}</h1>"]
    page += [f"<p>{html.escape(p)}</p>" for p in facts["notes"]]
    page += ["<h2>Detection on the held-out test slices</h2>", _html_table(metrics)]
    page += [f"<p>{html.escape(p)}</p>" for p in facts.get("findings", [])]
    for caption, path in facts["pictures"].items():
        page += [f"<h3>{html.escape(caption)}</h3>", f"<img src='{html.escape(str(path))}' alt='{html.escape(caption)}'>"]
    page += ["<h2>Time of each stage</h2>", _html_table(timings), "<h2>Where every file is</h2>", _html_table(files),
             "</body></html>"]
    (out / "report.md").write_text("\n".join(md))
    (out / "report.html").write_text("\n".join(page))
    return out / "report.md", out / "report.html"
