"""A tiny document model rendered to Markdown and to self-contained HTML (images inlined).

Text may use ``**bold**`` and ```code``` inline; everything else is escaped in HTML.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Document"]

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px;
       margin: 2em auto; padding: 0 1.2em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #eee; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; text-align: right; }
th { background: #f4f4f4; }
td:first-child, th:first-child { text-align: left; }
code { background: #f3f3f3; padding: 0 .25em; border-radius: 3px; font-size: .92em; }
pre { background: #f6f8fa; padding: .8em; overflow-x: auto; font-size: .85em; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; margin-top: .3em; }
.verdict { background: #eef6ee; border-left: 4px solid #3a3; padding: .6em 1em; }
"""

_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+)`")


def _inline_html(text: str) -> str:
    parts = re.split(r"(`[^`]+`)", text)
    out = []
    for part in parts:
        m = _CODE.fullmatch(part)
        if m:
            out.append(f"<code>{html.escape(m.group(1))}</code>")
        else:
            out.append(_BOLD.sub(r"<strong>\1</strong>", html.escape(part)))
    return "".join(out)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


@dataclass
class Document:
    """An ordered list of blocks (headings, paragraphs, tables, figures, code).

    Attributes:
        title: The document title (``# title``).
        blocks: ``(kind, payload)`` pairs.
    """

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        """Add a heading (level 2 = section)."""
        self.blocks.append(("heading", (level, text)))

    def para(self, text: str, css: str = "") -> None:
        """Add a paragraph (``css`` = an HTML class, e.g. ``verdict``)."""
        self.blocks.append(("para", (text, css)))

    def bullets(self, items: Sequence[str]) -> None:
        """Add a bullet list."""
        self.blocks.append(("bullets", list(items)))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        """Add a table of strings."""
        self.blocks.append(("table", (list(header), [list(r) for r in rows])))

    def figure(self, path: Path | None, caption: str) -> None:
        """Add a PNG figure (skipped when ``path`` is ``None``)."""
        if path is not None:
            self.blocks.append(("figure", (path, caption)))

    def code(self, text: str, lang: str = "") -> None:
        """Add a code block."""
        self.blocks.append(("code", (text, lang)))

    def markdown(self, base: Path) -> str:
        """Markdown, with figure paths relative to ``base`` (the folder of the .md file)."""
        out = [f"# {self.title}", ""]
        for kind, payload in self.blocks:
            if kind == "heading":
                level, text = payload
                out += ["#" * level + " " + text, ""]
            elif kind == "para":
                text, css = payload
                out += [f"> {text}" if css == "verdict" else text, ""]
            elif kind == "bullets":
                out += [f"- {b}" for b in payload] + [""]
            elif kind == "table":
                header, rows = payload
                out.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
                out.append("| " + " | ".join("---" for _ in header) + " |")
                out += ["| " + " | ".join(_md_cell(c) for c in r) + " |" for r in rows]
                out.append("")
            elif kind == "figure":
                path, caption = payload
                rel = Path(path).relative_to(base).as_posix()
                out += [f"![{Path(path).stem}]({rel})", "", f"*{caption}*", ""]
            elif kind == "code":
                text, lang = payload
                out += [f"```{lang}", text.rstrip("\n"), "```", ""]
        return "\n".join(out).rstrip() + "\n"

    def html(self) -> str:
        """A self-contained HTML page (CSS inline, images as base64 data URIs)."""
        out = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(self.title)}</title>",
            f"<style>{CSS}</style></head><body>",
            f"<h1>{html.escape(self.title)}</h1>",
        ]
        for kind, payload in self.blocks:
            if kind == "heading":
                level, text = payload
                out.append(f"<h{level}>{_inline_html(text)}</h{level}>")
            elif kind == "para":
                text, css = payload
                cls = f' class="{css}"' if css else ""
                out.append(f"<p{cls}>{_inline_html(text)}</p>")
            elif kind == "bullets":
                items = "".join(f"<li>{_inline_html(b)}</li>" for b in payload)
                out.append(f"<ul>{items}</ul>")
            elif kind == "table":
                header, rows = payload
                head = "".join(f"<th>{_inline_html(h)}</th>" for h in header)
                body = "".join(
                    "<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in r) + "</tr>"
                    for r in rows
                )
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif kind == "figure":
                path, caption = payload
                data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
                out.append(
                    f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{_inline_html(caption)}</figcaption></figure>"
                )
            elif kind == "code":
                text, _lang = payload
                out.append(f"<pre><code>{html.escape(text)}</code></pre>")
        out.append("</body></html>")
        return "\n".join(out) + "\n"
