"""A small document model (headings, paragraphs, tables, figures, preformatted text) rendered to
Markdown (figures as files under figures/) and to one self-contained HTML file (figures inline as
base64 PNG, inline CSS, no scripts, no external resources).

Every string that comes from the sweep (model output, errors, names, YAML) is escaped here: HTML
with ``html.escape``; in Markdown, raw model output and errors go into ``<pre>`` with escaped text.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from typing import Union


@dataclass
class Code:
    text: str


@dataclass
class Strong:
    text: str


@dataclass
class Link:
    text: str
    href: str  # internal anchors only ("#section")


Inline = Union[str, Code, Strong, Link]
Parts = Union[str, list]


@dataclass
class Heading:
    level: int
    text: str
    anchor: str = ""


@dataclass
class Para:
    parts: Parts


@dataclass
class Bullets:
    items: list  # list of Parts


@dataclass
class Table:
    header: list[str]
    rows: list[list]  # cells: Parts
    align: list[str] | None = None  # "l" | "r" per column
    css: str = ""


@dataclass
class Image:
    name: str  # file name under figures/
    png: bytes
    alt: str
    caption: str = ""


@dataclass
class Pre:
    text: str
    lang: str = ""
    raw_output: bool = True  # model output / errors: <pre> with escaped text also in Markdown


@dataclass
class Details:
    summary: str
    blocks: list = field(default_factory=list)


Block = Union[Heading, Para, Bullets, Table, Image, Pre, Details]


def is_missing(v) -> bool:
    """None or NaN: a cell with no value (e.g. a conditional parameter this trial did not sample)."""
    return v is None or (isinstance(v, float) and v != v)


def value_text(v) -> str:
    """A factor level or setting as shown (and grouped) in text: "—" when missing, floats as %g."""
    if is_missing(v):
        return "—"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _parts(p: Parts) -> list:
    return [p] if isinstance(p, (str, Code, Strong, Link)) else list(p)


# ------------------------------------------------------------------ Markdown

_MD_SPECIAL = re.compile(r"([\\`*\[\]|])")
_MD_TAG = re.compile(r"<(?=[A-Za-z/!?])")  # would open an HTML tag or comment
_MD_ENTITY = re.compile(r"&(?=#?[A-Za-z0-9]+;)")  # would read as a character reference


def md_text(s: str) -> str:
    """Plain text for Markdown: backslash escapes (CommonMark), never HTML entities, so the file
    reads as written (``W&B``, ``<sweep_dir>``) and still renders as text."""
    s = _MD_SPECIAL.sub(r"\\\1", str(s))
    return _MD_ENTITY.sub(r"\\&", _MD_TAG.sub(r"\\<", s))


def _md_code(s: str, in_table: bool) -> str:
    s = str(s).replace("\n", " ")
    ticks = max((len(m) for m in re.findall(r"`+", s)), default=0) + 1
    fence = "`" * ticks
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    out = f"{fence}{pad}{s}{pad}{fence}"
    return out.replace("|", "\\|") if in_table else out


def md_inline(p: Parts, in_table: bool = False) -> str:
    out = []
    for x in _parts(p):
        if isinstance(x, Code):
            out.append(_md_code(x.text, in_table))
        elif isinstance(x, Strong):
            out.append(f"**{md_text(x.text)}**")
        elif isinstance(x, Link):
            out.append(f"[{md_text(x.text)}]({x.href})")
        else:
            out.append(md_text(x))
    s = "".join(out)
    return s.replace("\n", "<br>") if in_table else s


def _fence(text: str, lang: str) -> str:
    ticks = max([3] + [len(m) + 1 for m in re.findall(r"`{3,}", text)])
    f = "`" * ticks
    return f"{f}{lang}\n{text.rstrip(chr(10))}\n{f}"


def to_markdown(title: str, blocks: list[Block]) -> str:
    lines = [f"# {md_text(title)}", ""]
    _md_blocks(blocks, lines)
    return "\n".join(lines).rstrip("\n") + "\n"


def _md_blocks(blocks: list[Block], lines: list[str]) -> None:
    for b in blocks:
        if isinstance(b, Heading):
            anchor = f'<a id="{b.anchor}"></a>' if b.anchor else ""
            lines += [f"{'#' * b.level} {md_text(b.text)}{anchor}", ""]
        elif isinstance(b, Para):
            lines += [md_inline(b.parts), ""]
        elif isinstance(b, Bullets):
            lines += [f"- {md_inline(it)}" for it in b.items] + [""]
        elif isinstance(b, Table):
            if not b.rows:
                continue
            align = b.align or ["l"] * len(b.header)
            lines.append("| " + " | ".join(md_inline(h, True) for h in b.header) + " |")
            lines.append("|" + "|".join("---:" if a == "r" else "---" for a in align) + "|")
            for row in b.rows:
                lines.append("| " + " | ".join(md_inline(c, True) for c in row) + " |")
            lines.append("")
        elif isinstance(b, Image):
            lines += [f"![{md_text(b.alt)}](figures/{b.name})", ""]
            if b.caption:
                lines += [f"*{md_text(b.caption)}*", ""]
        elif isinstance(b, Pre):
            if b.raw_output:
                lines += ["<pre>" + html.escape(b.text.rstrip("\n")) + "</pre>", ""]
            else:
                lines += [_fence(b.text, b.lang), ""]
        elif isinstance(b, Details):
            lines += [f"<details><summary>{html.escape(b.summary)}</summary>", ""]
            _md_blocks(b.blocks, lines)
            lines += ["</details>", ""]


# ------------------------------------------------------------------ HTML

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,"DejaVu Sans",Helvetica,Arial,sans-serif;
 margin:0 auto;max-width:1180px;padding:16px 28px 48px;color:#1f2328;line-height:1.45;font-size:15px}
h1{font-size:1.7em;border-bottom:2px solid #d0d7de;padding-bottom:.3em}
h2{font-size:1.35em;border-bottom:1px solid #d0d7de;padding-bottom:.25em;margin-top:1.8em}
h3{font-size:1.1em;margin-top:1.4em}
code{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:.88em;background:#f3f4f6;
 padding:.1em .3em;border-radius:4px}
pre{font-family:"DejaVu Sans Mono",Menlo,Consolas,monospace;font-size:.85em;background:#f6f8fa;
 border:1px solid #d0d7de;border-radius:6px;padding:10px 12px;white-space:pre-wrap;word-break:break-word}
.tw{overflow-x:auto;margin:.6em 0 1em}
table{border-collapse:collapse;font-size:.84em}
th,td{border:1px solid #d0d7de;padding:4px 8px;vertical-align:top}
th{background:#f0f3f6;text-align:left}
tr:nth-child(even) td{background:#fafbfc}
td.r{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
figure{margin:1em 0}
figure img{max-width:100%;height:auto;border:1px solid #eaeef2}
figcaption{font-size:.85em;color:#57606a}
nav.toc{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:6px 16px;margin:1em 0}
nav.toc ul{margin:.3em 0;padding-left:1.2em}
details{margin:.6em 0}
summary{cursor:pointer;font-weight:600}
""".strip()


def html_inline(p: Parts) -> str:
    out = []
    for x in _parts(p):
        if isinstance(x, Code):
            out.append(f"<code>{html.escape(x.text)}</code>")
        elif isinstance(x, Strong):
            out.append(f"<strong>{html.escape(x.text)}</strong>")
        elif isinstance(x, Link):
            href = x.href if x.href.startswith("#") else "#"
            out.append(f'<a href="{html.escape(href)}">{html.escape(x.text)}</a>')
        else:
            out.append(html.escape(str(x)))
    return "".join(out).replace("\n", "<br>")


def to_html(title: str, blocks: list[Block]) -> str:
    toc = [b for b in blocks if isinstance(b, Heading) and b.level == 2 and b.anchor]
    body = [f"<h1>{html.escape(title)}</h1>"]
    if toc:
        body.append('<nav class="toc"><strong>Contents</strong><ul>')
        body += [f'<li><a href="#{html.escape(h.anchor)}">{html.escape(h.text)}</a></li>' for h in toc]
        body.append("</ul></nav>")
    _html_blocks(blocks, body)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>\n{CSS}\n</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _html_blocks(blocks: list[Block], out: list[str]) -> None:
    for b in blocks:
        if isinstance(b, Heading):
            aid = f' id="{html.escape(b.anchor)}"' if b.anchor else ""
            out.append(f"<h{b.level}{aid}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            out.append(f"<p>{html_inline(b.parts)}</p>")
        elif isinstance(b, Bullets):
            out.append("<ul>" + "".join(f"<li>{html_inline(it)}</li>" for it in b.items) + "</ul>")
        elif isinstance(b, Table):
            if not b.rows:
                continue
            align = b.align or ["l"] * len(b.header)
            cls = f' class="{html.escape(b.css)}"' if b.css else ""
            rows = ["<tr>" + "".join(f"<th>{html_inline(h)}</th>" for h in b.header) + "</tr>"]
            for row in b.rows:
                rows.append(
                    "<tr>"
                    + "".join(
                        f'<td class="r">{html_inline(c)}</td>' if a == "r" else f"<td>{html_inline(c)}</td>"
                        for c, a in zip(row, align)
                    )
                    + "</tr>"
                )
            out.append(f'<div class="tw"><table{cls}>' + "\n".join(rows) + "</table></div>")
        elif isinstance(b, Image):
            data = base64.b64encode(b.png).decode("ascii")
            cap = f"<figcaption>{html.escape(b.caption)}</figcaption>" if b.caption else ""
            out.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b.alt)}">{cap}</figure>'
            )
        elif isinstance(b, Pre):
            out.append(f"<pre>{html.escape(b.text.rstrip(chr(10)))}</pre>")
        elif isinstance(b, Details):
            out.append(f"<details><summary>{html.escape(b.summary)}</summary>")
            _html_blocks(b.blocks, out)
            out.append("</details>")
