"""Write a report directory: summary.json, report.md and a self-contained report.html.

A report is assembled in a staging directory beside the target and moved into place at the
end (:mod:`traj.atomic`), so an interrupted run never leaves a half report that looks whole,
and a directory traj did not write is never replaced.
"""

from __future__ import annotations

import base64
import html
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import staged_output

__all__ = ["Report", "jsonable", "write_report", "write_report_files"]


@dataclass
class Report:
    """Sections of Markdown-ish content: headings, paragraphs, tables and PNG figures."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)
    figures: dict[str, bytes] = field(default_factory=dict)

    def heading(self, text: str) -> None:
        self.blocks.append(("heading", text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("paragraph", text))

    def table(self, header: list[str], rows: list[list[Any]]) -> None:
        self.blocks.append(("table", (header, rows)))

    def figure(self, name: str, png: bytes, caption: str) -> None:
        self.figures[name] = png
        self.blocks.append(("figure", (name, caption)))

    def to_markdown(self) -> str:
        """The report as Markdown; every text is escaped (store text is data, as in :meth:`to_html`)."""
        from ..display import markdown as md

        lines = [f"# {md(self.title)}", ""]
        for kind, value in self.blocks:
            if kind == "heading":
                lines += [f"## {md(value)}", ""]
            elif kind == "paragraph":
                lines += [md(value, block=True), ""]
            elif kind == "table":
                header, rows = value
                lines.append("| " + " | ".join(md(h) for h in header) + " |")
                lines.append("|" + "---|" * len(header))
                lines += ["| " + " | ".join(md(c) for c in row) + " |" for row in rows]
                lines.append("")
            elif kind == "figure":
                name, caption = value
                lines += [f"![{md(caption)}]({name})", "", f"*{md(caption)}*", ""]
        return "\n".join(lines)

    def to_html(self) -> str:
        esc = html.escape
        parts = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{esc(self.title)}</title>",
            "<style>body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;padding:0 1em;color:#222}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
            "th{background:#f3f3f3}img{max-width:100%}figcaption{color:#555;font-style:italic}</style>",
            "</head><body>",
            f"<h1>{esc(self.title)}</h1>",
        ]
        for kind, value in self.blocks:
            if kind == "heading":
                parts.append(f"<h2>{esc(value)}</h2>")
            elif kind == "paragraph":
                parts.append(f"<p>{esc(value)}</p>")
            elif kind == "table":
                header, rows = value
                parts.append("<table><tr>" + "".join(f"<th>{esc(str(h))}</th>" for h in header) + "</tr>")
                parts += ["<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>" for row in rows]
                parts.append("</table>")
            elif kind == "figure":
                name, caption = value
                data = base64.b64encode(self.figures[name]).decode()
                parts.append(
                    f'<figure><img alt="{esc(caption)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{esc(caption)}</figcaption></figure>"
                )
        parts.append("</body></html>")
        return "\n".join(parts)


def write_report(out_dir: str | os.PathLike[str], report: Report, summary: dict[str, Any],
                 extra: Callable[[Path], None] | None = None, *,
                 inputs: Iterable[str | os.PathLike[str]] = ()) -> Path:
    """Write ``summary.json``, ``report.md``, ``report.html`` and the PNGs into ``out_dir``.

    ``out_dir`` must be new, empty or a directory traj wrote (:func:`traj.atomic.check_output_dir`;
    ``inputs`` are the stores it must not touch). Everything is built in a staging sibling and
    moved into place at the end; ``extra(staging_dir)`` may add more files (e.g. a Zarr array of
    modes) before the move.
    """
    with staged_output(out_dir, inputs=inputs) as staging:
        write_report_files(staging, report, summary)
        if extra is not None:
            extra(staging)
    return Path(out_dir)


def write_report_files(directory: str | os.PathLike[str], report: Report, summary: dict[str, Any]) -> None:
    """Write the report's files into an existing (staging) directory."""
    directory = Path(directory)
    (directory / "summary.json").write_text(json.dumps(summary, indent=2, default=jsonable) + "\n")
    (directory / "report.md").write_text(report.to_markdown())
    (directory / "report.html").write_text(report.to_html())
    for name, png in report.figures.items():
        (directory / name).write_bytes(png)


def jsonable(obj: Any) -> Any:
    """``json.dumps`` default for numpy scalars and arrays, tuples and sets."""
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, tuple | set):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
