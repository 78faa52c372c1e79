"""The CJK font of the reports: Noto Sans SC (SIL Open Font License 1.1), shipped by the
``pylopdf-fonts-zh-cn`` package, so that Chinese renders on a fresh set-up without a system font.

Figures: the font is added to matplotlib's font manager when a figure is drawn (never at
import) and used after DejaVu Sans, as a fallback for the glyphs DejaVu lacks. Pages: the
glyphs a page uses are written beside it as a small subset (``cjk.otf``) and loaded with
``@font-face``; no network, no CDN.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import matplotlib
import pylopdf_fonts_zh_cn
from fontTools import subset
from fontTools.ttLib import TTFont
from matplotlib import font_manager

#: The family name the page's @font-face declares.
WEB_FAMILY = "CarbonSinkCJK"
#: The subset written beside a page.
WEB_FONT = "cjk.otf"
_family: str | None = None


def font_path() -> Path:
    return Path(pylopdf_fonts_zh_cn.sans_path())


def cjk_family() -> str:
    """Register the CJK font with matplotlib (once per process) and return its family name."""
    global _family
    if _family is None:
        path = font_path()
        font_manager.fontManager.addfont(str(path))
        _family = font_manager.FontProperties(fname=str(path)).get_name()
    return _family


@contextmanager
def figure_fonts() -> Iterator[None]:
    """Draw figures with DejaVu Sans and the CJK font as its fallback (inside this block only)."""
    with matplotlib.rc_context({"font.family": ["DejaVu Sans", cjk_family()]}):
        yield


def needs_cjk(text: str) -> bool:
    return any(ord(ch) >= 0x2E80 for ch in text)


def write_web_font(text: str, out_dir: Path, name: str = WEB_FONT) -> str | None:
    """Write the subset of the CJK font covering ``text``'s CJK characters and full-width
    punctuation beside a page; returns its file name, or None when the text needs none."""
    chars = {ch for ch in text if ord(ch) >= 0x2E80}
    if not chars:
        return None
    path = out_dir / name
    path.write_bytes(_subset("".join(sorted(chars))))
    return path.name


@lru_cache(maxsize=64)
def _subset(chars: str) -> bytes:
    """The font subset of these characters (about 0.3 s each; cached: a page drawn again, and
    the portfolio pages a process rewrites after every run, use the same characters)."""
    font = TTFont(str(font_path()))
    options = subset.Options()
    options.name_IDs = ["*"]  # the OFL notice and the font's names stay with the subset
    options.notdef_outline = True
    subsetter = subset.Subsetter(options)
    subsetter.populate(text=chars)
    subsetter.subset(font)
    out = io.BytesIO()
    font.save(out)
    return out.getvalue()
