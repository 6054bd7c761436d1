"""``index.html``: the figures of an output folder, one caption each, beside the run's results.

Every PNG under the folder is shown (figures of earlier runs in the same folder too), grouped by
the task folder it lies in, linked by a relative path so the folder can be moved or served as is.
A figure's caption comes from the first :attr:`~physml.tasks.Task.figures` pattern it matches.
"""

from __future__ import annotations

import fnmatch
import html
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote

from .._io import atomic_path
from . import Context, Row, Task, run_settings

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; }
table { border-collapse: collapse; margin: 1rem 0; }
td, th { padding: 0.2rem 0.8rem; text-align: left; border-bottom: 1px solid #ddd; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
.met { color: #1a7f37; } .missed { color: #cf222e; font-weight: bold; }
figure { display: inline-block; vertical-align: top; width: 32rem; margin: 0 1rem 1.5rem 0; }
figure img { width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.9rem; color: #333; }
"""


def caption(relative: str, tasks: Iterable[Task]) -> str:
    """The caption of the figure at ``relative`` (a POSIX path under the output folder): the first
    matching pattern of any task's ``figures``, else the path itself."""
    stem = Path(relative).stem
    for task in tasks:
        for pattern, text in task.figures.items():
            if fnmatch.fnmatchcase(relative, pattern):
                return text.replace("{name}", stem)
    return relative


def _table(header: tuple[str, ...], cells: list[tuple[str, ...]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(cells_row) + "</tr>\n" for cells_row in cells)
    return f"<table>\n<tr>{head}</tr>\n{body}</table>\n"


def _cell(text: str, css: str = "") -> str:
    attribute = f' class="{css}"' if css else ""
    return f"<td{attribute}>{html.escape(text)}</td>"


def _results(rows: list[Row]) -> str:
    judged = [row for row in rows if row.ok is not None]
    met = sum(bool(row.ok) for row in judged)
    parts = [f"<p><strong>{met} of {len(judged)} targets met.</strong></p>\n"]
    if judged:
        parts.append(
            _table(
                ("task", "case", "metric", "value", "target", "met"),
                [
                    (
                        _cell(row.task),
                        _cell(row.case),
                        _cell(row.metric),
                        _cell(f"{row.value:.4g}", "number"),
                        _cell(row.target),
                        _cell("✓", "met") if row.ok else _cell("✗", "missed"),
                    )
                    for row in judged
                ],
            )
        )
    measured = [row for row in rows if row.ok is None]
    if measured:
        with_target = any(row.target for row in measured)
        header = ("task", "case", "metric", "value") + (("target (not judged)",) * with_target)
        parts.append("<h2>Measurements</h2>\n")
        parts.append(
            _table(
                header,
                [
                    (_cell(row.task), _cell(row.case), _cell(row.metric))
                    + (_cell(f"{row.value:.4g}", "number"),)
                    + ((_cell(row.target),) * with_target)
                    for row in measured
                ],
            )
        )
    return "".join(parts)


def _settings(context: Context | None) -> str:
    if context is None:
        return ""
    settings = run_settings(context)
    shown = (f"{k.replace('_', ' ')} {html.escape(str(v))}" for k, v in settings.items())
    return "<p>" + ", ".join(shown) + "</p>\n"


def write_index(
    out: Path,
    rows: list[Row],
    tasks: Iterable[Task],
    unfinished: str | None = None,
    context: Context | None = None,
) -> Path:
    """Write ``out/index.html``: the targets and measurements of ``rows``, then every PNG under
    ``out`` with its caption. ``unfinished`` says why a run stopped before its last task (the page
    then says it is incomplete); ``context`` adds the run's settings. Returns the path written."""
    out = Path(out)
    tasks = list(tasks)
    figures = sorted(path.relative_to(out).as_posix() for path in out.rglob("*.png"))
    sections: dict[str, list[str]] = {}
    for relative in figures:
        folder = relative.split("/")[0] if "/" in relative else "."
        text = html.escape(caption(relative, tasks))
        link = quote(relative)
        sections.setdefault(folder, []).append(
            f'<figure><a href="{link}"><img src="{link}" alt="{text}" loading="lazy"></a>'
            f"<figcaption>{text}</figcaption></figure>\n"
        )
    body = [
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n',
        f"<title>physml results</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        "<h1>physml results</h1>\n",
        _settings(context),
        (
            f'<p class="missed">Incomplete: {html.escape(unfinished)}. The results below are '
            "those of the tasks before it.</p>\n"
            if unfinished
            else ""
        ),
        _results(rows),
        f"<h2>Figures</h2>\n<p>{len(figures)} figure(s); click one for full size.</p>\n",
    ]
    for folder, items in sections.items():
        body.append(f"<h3>{html.escape(folder)}</h3>\n")
        body.extend(items)
    body.append("</body>\n</html>\n")
    path = out / "index.html"
    with atomic_path(path) as temporary:
        temporary.write_text("".join(body), encoding="utf-8")
    return path
