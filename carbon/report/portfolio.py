"""The portfolio page: every site on one overview map coloured by its full-period sink, and a
table of all sites with their official sinks, 90% intervals and a link to each site's page.

Written after each run that draws reports (``ReportPool.pages``) as
``<output_dir>/reports/index.html`` in the configuration's ``report_language``, with the
same page in each language beside it (``index.en.html``, ``index.zh.html``). The map is drawn
with matplotlib from the site polygons: no tile server, no network, and drawn again only when
what it shows changed (a key beside each map: ``portfolio_<lang>.key``).
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd
import shapely
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure
from pyproj import CRS, Transformer

from carbon.io.config import Config
from carbon.io.ledger import Ledger
from carbon.io.outputs import inside
from carbon.io.sites import load_sites
from carbon.report import i18n
from carbon.report.fonts import figure_fonts, write_web_font
from carbon.report.i18n import LANGUAGES, Messages
from carbon.report.methods import write_methods
from carbon.report.render import render
from carbon.rules.site import Site

DPI = 100
PNG = {"compress_level": 3}
WGS84 = CRS.from_epsg(4326)


def portfolio_report(cfg: Config) -> Path:
    """Write the portfolio page (and its map) under ``<output_dir>/reports``; returns ``index.html``."""
    out_dir = inside(cfg.output_dir, "reports")
    out_dir.mkdir(parents=True, exist_ok=True)
    sites = load_sites(cfg.sites)
    sinks = Ledger(cfg.ledger_url).current("sinks")
    full = sinks[sinks["is_full_period"]] if not sinks.empty else sinks
    by_site = {str(r["site_id"]): r for r in full.to_dict("records")}
    rows = [{"site_id": s.site_id, "name": s.name, "sink": by_site.get(s.site_id),
             "page": f"{s.site_id}/index.html" if (out_dir / s.site_id / "index.html").is_file() else None}
            for s in sites]
    pages: dict[str, Path] = {}
    values = {k: float(v["sink_tco2e"]) for k, v in by_site.items()}
    shown = _map_key(sites, values)
    for lang in LANGUAGES:
        msg = Messages(lang)
        map_png = out_dir / f"portfolio_{lang}.png"
        key = hashlib.sha256(f"{shown}\x1e{lang}".encode()).hexdigest()
        stamp = map_png.with_suffix(".key")
        if not (map_png.is_file() and stamp.is_file() and stamp.read_text() == key):
            # drawn again only when what it shows changed (an analyst's re-run or scenario leaves the
            # official sinks as they were: 0.3 s a language saved)
            stamp.unlink(missing_ok=True)  # a map cut short is never taken for a finished one
            drawn = map_png.with_name(f".{map_png.name}.{os.getpid()}.png")
            with figure_fonts():
                _overview_map(sites, values, drawn, msg)
            drawn.replace(map_png)
            stamp.write_text(key)
        context: dict[str, Any] = {"rows": rows, "map_name": map_png.name,
                                   "map_b64": base64.b64encode(map_png.read_bytes()).decode(),
                                   "languages": LANGUAGES}
        text = render("portfolio.html.j2", lang, web_font=None, **context)
        font = write_web_font(text, out_dir, f"cjk_{lang}.otf")
        if font is not None:
            text = render("portfolio.html.j2", lang, web_font=font, **context)
        pages[lang] = out_dir / f"index.{lang}.html"
        pages[lang].write_text(text, encoding="utf-8")
    index = out_dir / "index.html"
    index.write_text(pages[cfg.report_language].read_text(encoding="utf-8"), encoding="utf-8")
    write_methods(out_dir, cfg.report_language)
    return index


def _map_key(sites: Sequence[Site], sink: dict[str, float]) -> str:
    """What the overview map shows, and the code and messages that draw it."""
    h = hashlib.sha256()
    for source in (Path(__file__), Path(i18n.__file__)):
        h.update(source.read_bytes())
    h.update(f"{matplotlib.__version__}\x1e{DPI}\x1e{PNG}\x1e".encode())
    for s in sites:
        h.update(f"{s.site_id}\x1f{s.geometry_sha256}\x1f{sink.get(s.site_id)!r}\x1e".encode())
    return h.hexdigest()


def _lonlat(site: Site) -> Any:
    if site.crs is None or CRS(site.crs) == WGS84:
        return site.geometry
    to = Transformer.from_crs(site.crs, WGS84, always_xy=True)
    return shapely.transform(site.geometry, lambda xy: np.column_stack(to.transform(xy[:, 0], xy[:, 1])))


def _overview_map(sites: Sequence[Site], sink: dict[str, float], path: Path, msg: Messages) -> Path:
    """Every site's polygon, filled with its full-period sink's colour (grey: no estimate), and
    a marker of the same colour at each site, which keeps a small site visible at the map's
    scale; each site is named."""
    geoms = {s.site_id: _lonlat(s) for s in sites}
    values = [sink[k] for k in geoms if k in sink]
    lim = max([abs(v) for v in values] or [1.0]) or 1.0
    norm: Normalize = TwoSlopeNorm(vcenter=0.0, vmin=-lim, vmax=lim) if values else Normalize(-1, 1)
    cmap = colormaps["RdYlGn"]
    fig = Figure(figsize=(9, 6.5))
    ax = fig.add_axes((0.09, 0.08, 0.72, 0.84))
    for site_id, geom in geoms.items():
        color = cmap(norm(sink[site_id])) if site_id in sink else "#bbbbbb"
        for poly in getattr(geom, "geoms", [geom]):
            x, y = poly.exterior.xy
            ax.fill(x, y, facecolor=color, edgecolor="black", linewidth=0.8)
        pt = geom.representative_point()
        ax.plot([pt.x], [pt.y], marker="o", markersize=11, markerfacecolor=color, markeredgecolor="black",
                linestyle="none")
        ax.annotate(site_id, (pt.x, pt.y), xytext=(8, 6), textcoords="offset points", fontsize=8,
                    bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "alpha": 0.8, "linewidth": 0})
    minx, miny, maxx, maxy = shapely.union_all(list(geoms.values())).bounds
    pad = max(maxx - minx, maxy - miny, 0.01) * 0.12
    ax.set_xlim(minx - pad, maxx + pad)
    ax.set_ylim(miny - pad, maxy + pad)
    ax.set_aspect(1 / max(np.cos(np.radians((miny + maxy) / 2)), 0.1))
    ax.set(xlabel=msg("map_x"), ylabel=msg("map_y"), title=msg("portfolio_map"))
    ax.grid(alpha=0.3)
    cax = fig.add_axes((0.85, 0.15, 0.025, 0.7))
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax)
    bar.set_label(msg("map_bar"))
    fig.savefig(path, dpi=DPI, pil_kwargs=PNG)
    return path


def full_period_sinks(cfg: Config) -> pd.DataFrame:
    """The ledger's current full-period sinks (what the portfolio shows)."""
    sinks = Ledger(cfg.ledger_url).current("sinks")
    return sinks[sinks["is_full_period"]] if not sinks.empty else sinks
