"""Per-site report for analysts and auditors: one self-contained HTML page and PNG figures.

The numbers on the page are the ledger's (the site's current estimate); the maps are drawn
from the land-cover rasters and the density maps the engine writes. A year that cannot be
read, or a failed last run, is said on the page, and the rest is still shown.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
from markupsafe import Markup
from matplotlib import colormaps
from matplotlib.colors import ListedColormap, to_hex
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from rasterio.enums import Resampling

from carbon.errors import CarbonSinkError, InputError
from carbon.io.config import Config
from carbon.io.ledger import Ledger
from carbon.io.maps import REPORT_MAP_PX, decimated_grid
from carbon.io.outputs import inside, run_maps
from carbon.io.sites import load_per_version, load_sites
from carbon.io.tables import load_catalog, load_coefficients
from carbon.pipeline.plan import read_site_codes
from carbon.report.fonts import figure_fonts, write_web_font
from carbon.report.i18n import DEFAULT_LANGUAGE, Messages
from carbon.report.methods import write_methods
from carbon.report.render import render
from carbon.rules import dating
from carbon.rules.coefficients import CatalogEntry, CoefficientSet, Crosswalk, invest_crosswalk
from carbon.rules.grid import Grid
from carbon.rules.site import Site, select_sites
from carbon.rules.vocabulary import GAIN_LOSS_POOLS, POOLS

#: A fixed qualitative palette for legends without their own colours: a code's colour is the
#: palette's colour at the code's place in its legend (distinct for the first 80 codes).
PALETTE = tuple(dict.fromkeys(to_hex(c) for name in ("tab20", "tab20b", "tab20c", "Set3", "Pastel1")
                              for c in colormaps[name].colors))  # type: ignore[attr-defined]
#: Resolution of the figures (dots per inch) and the most pixels a map panel needs across
#: (the size the maps written for a report have: carbon/io/maps.py).
DPI = 100
MAX_PANEL_PX = REPORT_MAP_PX
#: zlib level of the PNG figures: 3 writes them about a third faster than the default 6, 10-20 % larger.
PNG = {"compress_level": 3}


@dataclass
class ReportData:
    site: Site
    stocks: pd.DataFrame
    sinks: pd.DataFrame
    transitions: pd.DataFrame
    history: pd.DataFrame
    inputs: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    class_areas: pd.DataFrame = field(default_factory=pd.DataFrame)
    msg: Messages = field(default_factory=lambda: Messages(DEFAULT_LANGUAGE))
    coefficients_used: pd.DataFrame = field(default_factory=pd.DataFrame)
    provenance: dict[str, Any] = field(default_factory=dict)
    class_labels: dict[str, str] = field(default_factory=dict)
    #: The land-cover codes of each year that the run counted on the site (its ``area_by_code``
    #: table): the legend names every one, even a class too small to show at the panel's scale.
    codes_present: dict[int, set[int]] = field(default_factory=dict)


def site_report(cfg: Config, site_id: str, out_dir: Path | None = None, maps_dir: str | Path | None = None,
                lang: str | None = None) -> Path:
    """Write ``index.html``, its PNG figures and ``methods.html`` for one site; returns the page's path.

    ``lang``: ``en`` or ``zh`` (default: the configuration's ``report_language``).

    The report draws what was published and never computes a stock: the ledger's tables, the
    land-cover rasters, and the density maps that the run behind the current estimate wrote
    (``<output_dir>/runs/<run_id>/maps/<site_id>`` or ``report-maps/<site_id>``, or
    ``maps_dir``). A map that was not written is said on the page."""
    lang = lang or cfg.report_language or DEFAULT_LANGUAGE
    msg = Messages(lang)
    out_dir = Path(out_dir) if out_dir is not None else inside(cfg.output_dir, "reports", site_id)
    data = _gather(cfg, site_id, msg)
    out_dir.mkdir(parents=True, exist_ok=True)
    if maps_dir is None and not data.stocks.empty:
        maps_dir = run_maps(cfg.output_dir, str(data.stocks["run_id"].iloc[0]), site_id)
    figures: dict[str, Path] = {}
    with figure_fonts():
        figures.update(_maps(cfg, data, out_dir, Path(maps_dir) if maps_dir is not None else None))
        if not data.stocks.empty:
            try:
                figures["stock_by_pool"] = _stock_chart(data, out_dir / "stock_by_pool.png")
            except Exception as exc:  # noqa: BLE001 - said on the page
                data.problems.append(msg("chart_failed", error=exc))
    page = out_dir / "index.html"
    text = _html(data, figures)
    font = write_web_font(text, out_dir)
    if font is not None:
        text = _html(data, figures, font)
    page.write_text(text, encoding="utf-8")
    write_methods(out_dir, lang)
    return page


# --- data --------------------------------------------------------------------------------


def _gather(cfg: Config, site_id: str, msg: Messages) -> ReportData:
    ledger = Ledger(cfg.ledger_url)
    history = ledger.history(site_id)
    if history.empty:
        raise InputError("no run of this site in the ledger: run it first", site_id=site_id)
    site = select_sites(load_sites(cfg.sites), [site_id])[0]
    stocks = ledger.current("stocks", site_id)
    sinks = ledger.current("sinks", site_id)
    transitions = ledger.current("transitions", site_id)
    class_areas = ledger.current("class_areas", site_id)
    inputs: dict[str, Any] = {}
    problems: list[str] = []
    if not stocks.empty:
        inputs = json.loads(ledger.site_run_inputs(int(stocks["site_run_id"].iloc[0])) or "{}")
    last = history.iloc[-1]
    if last["status"] == "failed":
        problems.append(msg("latest_failed", run=last["run_id"], time=last["created_at"], error=last["error"]))
        if stocks.empty:
            problems.append(msg("no_success"))
        else:
            problems.append(msg("from_last_success", run=stocks["run_id"].iloc[0]))
    if not sinks.empty:
        problems += [msg.engine_text(w) for w in dating.gap_warnings(sinks[sinks["is_full_period"]], stocks)]
        for part in str(sinks["uncertainty_method"].iloc[0]).split("; ")[1:]:
            problems.append(msg("uncertainty_part", part=msg.engine_text(part)))
    used, provenance, by_code = _run_tables(cfg, site_id, stocks)
    present: dict[int, set[int]] = {}
    if not by_code.empty and {"year", "code", "pixel_count"} <= set(by_code.columns):
        for y, code in by_code.loc[by_code["pixel_count"] > 0, ["year", "code"]].itertuples(index=False):
            present.setdefault(int(y), set()).add(int(code))
    return ReportData(site, stocks, sinks, transitions, history, inputs, problems, class_areas, msg, used,
                      provenance, _class_labels(cfg, msg), present)


def _run_tables(cfg: Config, site_id: str, stocks: pd.DataFrame
                ) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame]:
    """The coefficients used, the provenance and the area by land-cover code that the run
    behind the current estimate wrote in its folder (``runs/<run_id>/sites/<site_id>``); empty
    when it kept none."""
    if stocks.empty:
        return pd.DataFrame(), {}, pd.DataFrame()
    site_dir = inside(cfg.output_dir, "runs", str(stocks["run_id"].iloc[0]), "sites", site_id)
    if not site_dir.is_dir():
        return pd.DataFrame(), {}, pd.DataFrame()
    tables = {name: pd.read_parquet(site_dir / f"{name}.parquet") for name in ("coefficients_used", "area_by_code")
              if (site_dir / f"{name}.parquet").is_file()}
    prov = site_dir / "provenance.json"
    provenance = json.loads(prov.read_text(encoding="utf-8")) if prov.is_file() else {}
    return tables.get("coefficients_used", pd.DataFrame()), provenance, tables.get("area_by_code", pd.DataFrame())


def _class_labels(cfg: Config, msg: Messages) -> dict[str, str]:
    """The name of each carbon class in the page's language; with an InVEST pools table the
    classes are its lucodes, named by its ``lulc_name``."""
    coefficients = load_per_version(load_coefficients, cfg.coefficients)
    if coefficients.is_invest:
        cw = invest_crosswalk(coefficients)
        return {str(c): f"{c} {lbl}" if lbl else str(c) for c, lbl in zip(cw.codes, cw.labels, strict=True)}
    return {}


def _read_years(site: Site, catalog: list[CatalogEntry], coefficients: CoefficientSet, legends: Path | None,
                years: list[int], problems: list[str], msg: Messages) -> tuple[Grid, Any, dict[int, Any]] | None:
    """The site's grid, polygon and codes of the years whose rasters read over the whole site
    window, decimated to a panel's size (all at once; year by year only when that fails, to
    name each year that cannot be read). ``None`` when no year can be read."""
    try:
        return read_site_codes(site, catalog, coefficients, legends, years, MAX_PANEL_PX)
    except (CarbonSinkError, rasterio.errors.RasterioError):
        pass
    ok = []
    for y in years:
        try:
            read_site_codes(site, catalog, coefficients, legends, [y], MAX_PANEL_PX)
            ok.append(y)
        except (CarbonSinkError, rasterio.errors.RasterioError) as exc:
            if "covers the site" not in str(exc):  # a year of other sites' rasters is not a problem here
                problems.append(msg("year_unreadable", year=y, error=exc))
    if not ok:
        return None
    return read_site_codes(site, catalog, coefficients, legends, ok, MAX_PANEL_PX)


# --- figures -----------------------------------------------------------------------------


def _maps(cfg: Config, data: ReportData, out_dir: Path, maps_dir: Path | None) -> dict[str, Path]:
    site = data.site
    catalog = list(load_per_version(load_catalog, cfg.landcover))
    coefficients = load_per_version(load_coefficients, cfg.coefficients)
    wanted = sorted(set(data.stocks["year"])) if not data.stocks.empty else sorted({e.year for e in catalog})
    figures = {}
    try:
        read = _read_years(site, catalog, coefficients, cfg.legends, wanted, data.problems, data.msg)
        if read is None:
            data.problems.append(data.msg("no_land_cover"))
            return {}
        grid, geom, codes = read
        years = sorted(codes)
        figures["land_cover"] = _land_cover_figure(grid, geom, codes, out_dir / "land_cover.png", data.msg,
                                                   data.codes_present)
    except Exception as exc:  # noqa: BLE001 - a figure that cannot be drawn is said on the page
        data.problems.append(data.msg("lc_failed", error=exc))
        return figures
    start = int(data.sinks.loc[data.sinks["is_full_period"], "period_start"].iloc[0]) if (
        not data.sinks.empty and data.sinks["is_full_period"].any()) else years[0]
    start = start if start in years else years[0]
    try:
        written = _density_maps(maps_dir, site.site_id, years, start, data.msg) if maps_dir is not None else {}
        missing = [p.name for p, _ in written.values() if not p.is_file()]
        if not written or missing:
            data.problems.append(data.msg("maps_not_written") + (
                data.msg("maps_missing", names=", ".join(missing)) if missing else ""))
        else:
            figures["density"] = _density_figure(grid, geom, written, out_dir / "stock_density.png")
    except Exception as exc:  # noqa: BLE001 - a figure that cannot be drawn is said on the page
        data.problems.append(data.msg("density_failed", error=exc))
    return figures


def _outline(ax: Any, geom: Any, grid: Grid) -> None:
    """The site boundary in the grid's pixel coordinates: one line for every ring. A site of
    several parts has each part numbered, and a part too small to see at the panel's scale is
    ringed, so that every part can be found."""
    inv = ~grid.transform
    xs: list[Any] = []
    ys: list[Any] = []
    parts = list(getattr(geom, "geoms", [geom]))
    for poly in parts:
        for ring in [poly.exterior, *poly.interiors]:
            x, y = np.asarray(ring.coords).T
            col, row = inv @ (x, y)
            xs += [np.asarray(col) - 0.5, [np.nan]]
            ys += [np.asarray(row) - 0.5, [np.nan]]
    ax.plot(np.concatenate(xs), np.concatenate(ys), color="black", linewidth=1.2)
    if len(parts) < 2:
        return
    size = max(grid.width, grid.height)
    for n, poly in enumerate(parts, start=1):
        pt = poly.representative_point()
        col, row = inv @ (pt.x, pt.y)
        minx, miny, maxx, maxy = poly.bounds
        (c0, r0), (c1, r1) = inv @ (minx, miny), inv @ (maxx, maxy)
        if max(abs(c1 - c0), abs(r1 - r0)) < 0.03 * size:
            ax.plot([col - 0.5], [row - 0.5], marker="o", markersize=12, markerfacecolor="none",
                    markeredgecolor="black", markeredgewidth=1.2)
        ax.annotate(str(n), (col - 0.5, row - 0.5), xytext=(6, 6), textcoords="offset points", fontsize=7,
                    bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "black", "linewidth": 0.5})


def _show(ax: Any, arr: np.ndarray, grid: Grid, scale: tuple[float, float], **kw: Any) -> Any:
    """``imshow`` of a window read decimated (each pixel of ``arr`` is ``scale`` = (columns,
    rows) pixels of ``grid``: ``decimated_grid``) in the full grid's pixel coordinates, over
    the grid's extent."""
    sx, sy = scale
    if max(arr.shape) > MAX_PANEL_PX:  # never more pixels than the panel shows (nearest neighbour)
        step = -(-max(arr.shape) // MAX_PANEL_PX)
        arr, sx, sy = arr[::step, ::step], sx * step, sy * step
    im = ax.imshow(arr, extent=(-0.5, arr.shape[1] * sx - 0.5, arr.shape[0] * sy - 0.5, -0.5),
                   interpolation="nearest", **kw)
    ax.set_xlim(-0.5, grid.width - 0.5)
    ax.set_ylim(grid.height - 0.5, -0.5)
    return im


def _bare(ax: Any, title: str) -> None:
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _panels(fig: Any, nrows: int, ncols: int, *, w: float, h: float, top: float, bottom: float,
            side: float = 0.1, gap_w: float = 0.1, gap_h: float = 0.35, bar: float = 0.0) -> list[list[Any]]:
    """Axes of a grid of panels at fixed places (inches; ``bar``: width kept right of each panel
    for its colour bar): what ``tight_layout`` would find, without drawing the figure twice."""
    fw, fh = fig.get_size_inches()
    rows = []
    for r in range(nrows):
        row = []
        for c in range(ncols):
            x0 = side + c * (w + bar + gap_w)
            y0 = fh - top - (r + 1) * h - r * gap_h
            row.append(fig.add_axes((x0 / fw, y0 / fh, w / fw, h / fh)))
        rows.append(row)
    return rows


def legend_label(code: int, label: str) -> str:
    """A code's legend entry: its label alone when the label begins with a code of its own
    (GB/T ``0701 ...``, CORINE ``131 ...``), else the code and the label."""
    first = label.split(" ", 1)[0]
    if first.isdigit():
        return label
    return f"{code} {label}".strip()


def code_colors(cw: Crosswalk) -> list[str]:
    """The display colour of each code of a legend: the legend's ``color`` column, else the
    fixed qualitative palette by the code's place in the legend."""
    given = cw.colors or (None,) * len(cw.codes)
    return [c or PALETTE[i % len(PALETTE)] for i, c in enumerate(given)]


def _shorten(text: str, limit: int = 48) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _text_width(text: str, fontsize: float = 8) -> float:
    """Roughly how wide ``text`` is drawn, in inches (CJK characters are full width)."""
    em = fontsize / 72
    return sum(em if ord(ch) >= 0x2E80 else 0.58 * em for ch in text)


def _land_cover_figure(grid: Grid, geom: Any, codes: dict[int, tuple[np.ndarray, np.ndarray, Any]],
                       path: Path, msg: Messages, present: dict[int, set[int]] | None = None) -> Path:
    """One panel per year (``codes``: read decimated to the panel's size, see
    ``read_site_codes``) and one legend: every code shown, and every code the run counted
    on the site (``present``), however small its patches."""
    years = sorted(codes)
    k = decimated_grid(grid, MAX_PANEL_PX)[1]
    ncols = min(4, len(years))
    nrows = int(np.ceil(len(years) / ncols))
    legend_items: dict[str, str] = {}
    panels = []
    for y in years:
        values, valid, cw = codes[y]
        colors = code_colors(cw)
        labels = msg.legend_labels(cw)
        idx, known = cw.lookup(values)
        shown = valid & known
        panels.append((y, cw, colors, idx, shown))
        counted = np.array(sorted((present or {}).get(y, ())), dtype=np.int64)
        cidx, cknown = cw.lookup(counted)
        for j in np.union1d(np.unique(idx[shown]), cidx[cknown]):
            legend_items.setdefault(_shorten(legend_label(int(cw.codes[j]), labels[j])).replace("$", r"\$"),
                                    colors[j])  # no mathtext
    # the legend below the panels, in as many columns as fit the figure's width, and as many
    # rows as it needs (the figure grows to hold them: no entry runs off the figure)
    width = 3.1 * ncols + 0.1
    entry = max([_text_width(lbl) for lbl in legend_items] or [1.0]) + 0.45
    legend_cols = max(1, min(len(legend_items) or 1, int(width // entry)))
    legend_rows = int(np.ceil(len(legend_items) / legend_cols))
    panel, top, gap_h = 3.0, 0.75, 0.35
    bottom = 0.25 + 0.2 * legend_rows
    fig = Figure(figsize=(width, top + nrows * panel + (nrows - 1) * gap_h + bottom))
    axes = [ax for row in _panels(fig, nrows, ncols, w=3.0, h=panel, top=top, bottom=bottom, gap_h=gap_h)
            for ax in row]
    for ax, (y, cw, colors, idx, shown) in zip(axes, panels, strict=False):
        img = np.ma.masked_array(idx, mask=~shown)
        _show(ax, img, grid, (k, k), cmap=ListedColormap(colors), vmin=0, vmax=len(colors) - 1)
        _outline(ax, geom, grid)
        _bare(ax, f"{y} ({cw.legend})")
    for ax in axes[len(years):]:
        ax.axis("off")
    fig.legend(handles=[Patch(color=c, label=lbl) for lbl, c in legend_items.items()], loc="lower center",
               ncol=legend_cols, fontsize=8, frameon=False, bbox_to_anchor=(0.5, 0.0))
    fig.suptitle(msg("lc_title"), fontsize=10)
    fig.savefig(path, dpi=DPI, pil_kwargs=PNG)
    return path


def _read_map(path: Path, grid: Grid) -> tuple[np.ndarray, tuple[float, float]]:
    """A density map decimated on read to the panel's size, as the land cover is
    (``decimated_grid``), and how many pixels of the site's ``grid`` each of its pixels is
    (columns, rows). A map written for the report is already that size (carbon/io/maps.py),
    and read whole; a full-resolution map is a COG with overviews: GDAL reads the overview
    nearest the size asked for, not the full map."""
    with rasterio.open(path) as src:  # nodata is NaN (carbon/io/maps.py)
        k = decimated_grid(Grid(src.crs, src.transform, src.width, src.height), MAX_PANEL_PX)[1]
        if k == 1:
            arr = src.read(1)
        else:
            arr = src.read(1, out_shape=(-(-src.height // k), -(-src.width // k)), resampling=Resampling.nearest)
        sx = src.transform.a * src.width / arr.shape[1] / grid.transform.a
        sy = src.transform.e * src.height / arr.shape[0] / grid.transform.e
    return arr, (sx, sy)


def _density_maps(maps_dir: Path, site_id: str, years: list[int], start: int,
                  msg: Messages) -> dict[str, tuple[Path, bool]]:
    """The maps the density figure shows, by panel title (file names of carbon/io/maps.py), and
    whether each is a change: the stock density of the first and the last year, and the
    change over the full period."""
    maps = {msg("density_title", year=y): (maps_dir / f"{site_id}_stock_density_{y}.tif", False)
            for y in sorted({years[0], years[-1]})}
    if start < years[-1]:
        maps[msg("change_title", start=start, end=years[-1])] = (
            maps_dir / f"{site_id}_stock_change_{start}_{years[-1]}.tif", True)
    return maps


def _density_figure(grid: Grid, geom: Any, maps: dict[str, tuple[Path, bool]], path: Path) -> Path:
    panels: list[tuple[str, np.ndarray, tuple[float, float], str, tuple[float, float] | None]] = []
    for title, (p, change) in maps.items():
        a, scale = _read_map(p, grid)
        if not change:
            panels.append((title, a, scale, "YlGn", None))
            continue
        lim = float(np.nanmax(np.abs(a))) if np.isfinite(a).any() else 1.0
        panels.append((title, a, scale, "RdBu", (-lim or -1, lim or 1)))
    # the density panels share one colour scale, hence one colour bar (right of the last of
    # them); the change panel has its own
    shared = [lims is None for *_, lims in panels]
    bars = [not (shared[i] and i + 1 < len(panels) and shared[i + 1]) for i in range(len(panels))]
    panel, bar, gap, side = 3.6, 0.65, 0.15, 0.1
    fig = Figure(figsize=(side + len(panels) * (panel + gap) + bar * sum(bars), panel + 0.6))
    fw, fh = fig.get_size_inches()
    vmax = max(float(np.nanmax(arr)) if np.isfinite(arr).any() else 1.0 for _, arr, _, _, lims in panels if lims is None)
    x = side
    for (title, arr, scale, cmap, lims), with_bar in zip(panels, bars, strict=True):
        ax = fig.add_axes((x / fw, 0.25 / fh, panel / fw, panel / fh))
        vmin, vmax_i = lims if lims else (0.0, vmax)
        im = _show(ax, arr, grid, scale, cmap=cmap, vmin=vmin, vmax=vmax_i)
        _outline(ax, geom, grid)
        _bare(ax, title)
        x += panel + gap
        if with_bar:
            x0, y0, w, h = ax.get_position().bounds
            cax = fig.add_axes((x0 + w + 0.12 / fw, y0 + 0.1 * h, 0.15 / fw, 0.8 * h))
            fig.colorbar(im, cax=cax)
            cax.tick_params(labelsize=8)
            x += bar
    fig.savefig(path, dpi=DPI, pil_kwargs=PNG)
    return path


def _stock_chart(data: ReportData, path: Path) -> Path:
    msg = data.msg
    s = data.stocks.sort_values("year")
    fig = Figure(figsize=(7.5, 4))
    ax = fig.add_axes((0.1, 0.13, 0.87, 0.78))
    ax.stackplot(s["year"], *[s[f"stock_{p}_tc"] for p in POOLS], labels=[msg.pool(p) for p in POOLS], alpha=0.8)
    ax.plot(s["year"], s["stock_tc"], color="black", marker="o", label=msg("chart_total"))
    if "stock_tc_lower95" in s:
        ax.fill_between(s["year"], s["stock_tc_lower95"], s["stock_tc_upper95"], color="grey", alpha=0.35,
                        label=msg("chart_interval"))
    ax.set(xlabel=msg("chart_x"), ylabel=msg("chart_y"), title=msg("chart_title", site=data.site.site_id))
    ax.xaxis.get_major_locator().set_params(integer=True)  # type: ignore[call-arg]  # MaxNLocator
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=DPI, pil_kwargs=PNG)
    return path


# --- page --------------------------------------------------------------------------------


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [] if df.empty else list(df.to_dict("records"))


def _figure(path: Path, alt: str) -> dict[str, str]:
    return {"alt": alt, "name": path.name, "b64": base64.b64encode(path.read_bytes()).decode()}


def _transitions(transitions: pd.DataFrame, sinks: pd.DataFrame) -> dict[str, Any] | None:
    full = sinks[sinks["is_full_period"]] if not sinks.empty else sinks
    if full.empty or transitions.empty:
        return None
    y0, y1 = int(full["period_start"].iloc[0]), int(full["period_end"].iloc[0])
    t = transitions[(transitions["period_start"] == y0) & (transitions["period_end"] == y1)]
    m = t.pivot_table(index="from_class", columns="to_class", values="area_ha", aggfunc="sum", fill_value=0.0)
    return {"y0": y0, "y1": y1, "columns": [str(c) for c in m.columns],
            "rows": [{"name": str(i), "values": [float(v) for v in m.loc[i]]} for i in m.index]}


def _rules(data: ReportData) -> list[Markup]:
    """The method and the rules applied to the site, in plain words, from the provenance the
    run kept (or, without it, the method of the sinks table)."""
    msg, prov = data.msg, data.provenance
    lines: list[Markup] = []

    def say(key: str, **kw: Any) -> Markup:  # the catalog's HTML kept, the run's values escaped
        return Markup(msg(key)).format(**kw) if kw else Markup(msg(key))

    method = prov.get("method") or (str(data.sinks["method"].iloc[0]) if not data.sinks.empty else None)
    if method:
        lines.append(say(f"m_{method}"))
    if not prov:
        return [*lines, say("no_provenance")]
    if prov.get("initial_age") is not None:
        lines.append(say("m_initial_age", age=prov["initial_age"]))
    if prov.get("period_start") is not None:
        lines.append(say("m_period", start=prov["period_start"]))
    grid = prov.get("reference_grid") or {}
    if grid:
        lines.append(say("m_grid", year=grid.get("year"), w=grid.get("width"), h=grid.get("height")))
    adjusted = (prov.get("map_accuracy") or {}).get("areas") == "adjusted"
    lines.append(say("m_areas_adjusted" if adjusted else "m_areas_mapped"))
    flicker = sum(float(v) for v in (prov.get("flicker_filtered_ha") or {}).values())
    if flicker > 0:
        lines.append(say("m_flicker", ha=f"{flicker:,.2f}"))
    mc = prov.get("monte_carlo") or {}
    if mc:
        lines.append(say("m_monte_carlo", draws=f"{int(mc.get('draws', 0)):,}", seed=mc.get("seed"),
                         areas=msg("m_mc_areas") if adjusted else ""))
        rule = mc.get("conservative_rule")
        if rule in ("ar_tool14", "lower90"):
            lines.append(say(f"m_rule_{rule}"))
        policy = (mc.get("sd_default_policy") or {}).get("source")
        if policy:
            lines.append(say("m_sd_default", policy=msg.engine_text(str(policy))))

        def named(items: list[str]) -> str:
            out = []
            for item in items:
                cls, _, pool = str(item).partition("/")
                out.append(f"{data.class_labels.get(cls) or msg.carbon_class(cls)} / {msg.pool(pool)}")
            return ", ".join(out)

        if mc.get("sd_defaulted"):
            lines.append(say("m_sd_defaulted", items=named(mc["sd_defaulted"])))
        if mc.get("sd_unknown"):
            lines.append(say("m_sd_unknown", items=named(mc["sd_unknown"])))
    return lines


def _inputs(data: ReportData) -> list[dict[str, Any]]:
    rows = []
    for year, y in sorted(data.inputs.get("years", {}).items()):
        rasters_of_year = y.get("rasters", {})
        if isinstance(rasters_of_year, list):  # inputs recorded without file hashes
            rasters_of_year = dict.fromkeys(rasters_of_year, "")
        for path, digest in rasters_of_year.items():
            rows.append({"year": year, "legend": y.get("legend", ""), "path": path, "digest": digest, "sample": False})
        for path, digest in y.get("accuracy_sample", {}).items():
            rows.append({"year": year, "legend": "", "path": path, "digest": digest, "sample": True})
    return rows


def _provenance(data: ReportData) -> list[tuple[str, str]]:
    s, site = data.stocks, data.site
    return [
        ("p_site", f"{site.site_id}: {site.name} ({site.site_type}, ecozone {site.ecozone})"),
        ("p_run", str(s["run_id"].iloc[0]) if not s.empty else "-"),
        ("p_computed", str(s["created_at"].iloc[0]) if not s.empty else "-"),
        ("p_coefficients", f"{s['coefficient_set'].iloc[0]} (SHA-256 {s['coefficient_sha256'].iloc[0]})"
         if not s.empty else "-"),
        ("p_code", str(s["code_version"].iloc[0]) if not s.empty else "-"),
        ("p_uncertainty", str(s["uncertainty_method"].iloc[0]) if not s.empty else "-"),
    ]


def _html(data: ReportData, figures: dict[str, Path], web_font: str | None = None) -> str:
    msg = data.msg
    areas = data.class_areas
    adjusted = areas[areas["adjusted"].astype(bool)] if not areas.empty else areas
    sinks = data.sinks.sort_values(["period_start", "period_end"]) if not data.sinks.empty else data.sinks
    used = data.coefficients_used
    method = data.provenance.get("method") or (str(sinks["method"].iloc[0]) if not sinks.empty else "")

    def class_label(cls: str) -> str:
        return data.class_labels.get(str(cls)) or msg.carbon_class(str(cls))

    return render(
        "site.html.j2", msg.lang, site=data.site, web_font=web_font, problems=data.problems,
        sinks=_records(sinks), stocks=_records(data.stocks.sort_values("year") if not data.stocks.empty else data.stocks),
        pools=POOLS, gain_pools=GAIN_LOSS_POOLS, class_label=class_label,
        class_areas=_records(areas.sort_values(["year", "carbon_class"]) if not areas.empty else areas),
        adjusted_years=", ".join(str(y) for y in sorted({int(y) for y in adjusted["year"]})) if not adjusted.empty
        else "",
        samples=", ".join(sorted({Path(str(p)).name for p in adjusted["accuracy_sample"] if str(p)}))
        if not adjusted.empty else "",
        figures=[_figure(figures[k], msg(alt)) for k, alt in (
            ("land_cover", "fig_land_cover"), ("density", "fig_density"), ("stock_by_pool", "fig_stock"))
            if k in figures],
        transitions=_transitions(data.transitions, data.sinks),
        rules=_rules(data), method=method,
        coefficients=_records(used),
        run_id=str(data.stocks["run_id"].iloc[0]) if not data.stocks.empty else "-",
        provenance=_provenance(data), inputs=_inputs(data), runs=_records(data.history),
    )
