"""The methods document beside the reports: ``methods.html``, rendered from the package's
``methods.md`` (the repository's ``docs/methods.md``, shipped in the wheel as
``carbon/report/docs/methods.md``), its figures embedded."""

from __future__ import annotations

import base64
import re
from functools import lru_cache
from importlib.resources import files
from pathlib import Path

from markdown_it import MarkdownIt

from carbon.report.render import render


def methods_source() -> Path:
    """``methods.md`` in the wheel, or in a checkout's ``docs/``."""
    packaged = Path(str(files("carbon"))) / "report" / "docs" / "methods.md"
    if packaged.is_file():
        return packaged
    return Path(str(files("carbon"))).parent / "docs" / "methods.md"


def _body(md: Path) -> str:
    """``md`` in HTML, rendered once per process and version of the file and its figures (each
    report and the portfolio page ship it: 0.1 s a page)."""
    files = [md, *sorted(md.parent.rglob("*.png"))]  # the page and the figures it embeds
    return _rendered(str(md), tuple((str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in files))


@lru_cache(maxsize=4)
def _rendered(path: str, _version: tuple[tuple[str, int, int], ...]) -> str:
    md = Path(path)
    text = md.read_text(encoding="utf-8")
    # links to the repository's other documents do not exist beside a report: keep their text
    text = re.sub(r"(?<!!)\[([^\]]+)\]\((?!https?:)[^)]*\.md(#[^)]*)?\)", r"\1", text)
    html = MarkdownIt("commonmark", {"html": False}).enable("table").render(text)

    def embed(m: re.Match[str]) -> str:
        img = md.parent / m.group(1)
        if not img.is_file():
            return m.group(0)
        return f'src="data:image/png;base64,{base64.b64encode(img.read_bytes()).decode()}"'

    return re.sub(r'src="([^":]+\.png)"', embed, html)


def write_methods(out_dir: Path, lang: str) -> Path:
    """Write ``methods.html`` into ``out_dir`` (the methods are in English in either language)."""
    path = out_dir / "methods.html"
    path.write_text(render("methods.html.j2", lang, body=_body(methods_source())), encoding="utf-8")
    return path
