"""What every report shares: tables and images as blocks, rendered to Markdown and to one
self-contained HTML page, and matplotlib figures saved atomically. No torch."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from matplotlib.figure import Figure

from tunewise.io import write_atomic

DPI = 120


def is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def num(value, digits: int = 3) -> str:
    return "-" if is_missing(value) else f"{value:.{digits}f}"


def new_figure(width: float = 8.5, height: float = 5.2):
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return figure, figure.subplots()


def save_figure(figure: Figure, path: Path) -> Path:
    write_atomic(path, lambda tmp: figure.savefig(tmp, format="png", dpi=DPI))
    return path


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown(blocks: list[tuple]) -> str:
    out = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "h3"):
            out.append(f"{'#' * int(kind[1])} {rest[0]}")
        elif kind == "p":
            out.append(rest[0])
        elif kind == "answer":
            out.append("\n\n".join(f"**{sentence}**" for sentence in rest[0]))
        elif kind == "warnings":
            out.append("\n".join(f"- **Warning:** {item}" for item in rest[0]))
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in rest[0]))
        elif kind == "image":
            out.append(f"![{rest[1]}]({rest[0]})\n\n*{rest[1]}*")
        elif kind == "table":
            out.append(_markdown_table(*rest))
    return "\n\n".join(out) + "\n"


def _markdown_table(headers: list[str], rows: list[list[str]], right: list[bool]) -> str:
    lines = ["| " + " | ".join(map(_md_cell, headers)) + " |",
             "|" + "|".join("---:" if r else "---" for r in right) + "|"]
    lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in rows]
    return "\n".join(lines)


STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1150px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; } h3 { font-size: 1.05em; }
.answer { font-size: 1.12em; background: #eef5ee; border-left: 5px solid #3a7d44; padding: 0.2em 1em; }
.warnings { background: #fff3df; border-left: 5px solid #d98a00; padding: 0.4em 1em 0.4em 2.2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; vertical-align: top; }
th { background: #f2f2f2; } tr:nth-child(even) td { background: #fafafa; } td.num { text-align: right; }
figure { margin: 1.2em 0; } img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
"""


def _image_source(name: str, folder: Path | None) -> str:
    """The image as a data URI when it is in `folder`, so the page needs no file beside it; else its name."""
    path = Path(folder) / name if folder is not None else None
    if path is None or not path.is_file():
        return name
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def html_page(blocks: list[tuple], folder: Path | None = None) -> str:
    """The page; with `folder`, its images are embedded from there (one self-contained file)."""
    esc = html.escape
    title = next((rest[0] for kind, *rest in blocks if kind == "h1"), "Search report")
    body = []
    for kind, *rest in blocks:
        if kind in ("h1", "h2", "h3", "p"):
            body.append(f"<{kind}>{esc(rest[0])}</{kind}>")
        elif kind == "answer":
            body.append('<div class="answer">' + "".join(f"<p>{esc(s)}</p>" for s in rest[0]) + "</div>")
        elif kind in ("list", "warnings"):
            items = "".join(f"<li>{'<b>Warning:</b> ' * (kind == 'warnings')}{esc(item)}</li>" for item in rest[0])
            body.append(f'<ul class="{kind}">{items}</ul>')
        elif kind == "image":
            body.append(f'<figure><img src="{_image_source(rest[0], folder)}" alt="{esc(rest[1])}">'
                        f"<figcaption>{esc(rest[1])}</figcaption></figure>")
        elif kind == "table":
            body.append(_html_table(*rest))
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{esc(title)}</title>\n'
            f"<style>{STYLE}</style>\n</head>\n<body>\n" + "\n".join(body) + "\n</body>\n</html>\n")


def _html_table(headers: list[str], rows: list[list[str]], right: list[bool]) -> str:
    esc = html.escape
    head = "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr>"
    cells = ["<tr>" + "".join(f'<td{" class=num" * r}>{esc(c)}</td>' for c, r in zip(row, right, strict=True))
             + "</tr>" for row in rows]
    return "<table>\n" + head + "\n" + "\n".join(cells) + "\n</table>"
