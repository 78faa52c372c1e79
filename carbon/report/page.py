"""Per-site report for analysts and auditors: one self-contained HTML page and PNG figures.

The numbers on the page are the ledger's (the site's current estimate); the maps are drawn
from the land-cover rasters and the density maps the engine writes. A year that cannot be
read, or a failed last run, is said on the page, and the rest is still shown.
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from rasterio.enums import Resampling

from carbon.errors import CarbonSinkError, InputError
from carbon.io.config import Config
from carbon.io.ledger import Ledger
from carbon.io.outputs import inside, run_maps
from carbon.io.sites import load_per_version, load_sites
from carbon.io.tables import load_catalog, load_coefficients
from carbon.pipeline.plan import read_site_codes
from carbon.rules import dating
from carbon.rules.coefficients import CatalogEntry, CoefficientSet
from carbon.rules.grid import Grid
from carbon.rules.site import Site, select_sites
from carbon.rules.vocabulary import POOLS

#: Display colours of carbon classes, for legends without their own colours.
CLASS_COLORS = {"forest": "#2d6a2d", "shrubland": "#7fb04a", "grassland": "#c6df8f", "cropland": "#f3d98b",
                "wetland": "#3fa7a0", "water": "#2b6cb0", "settlement": "#d9534f", "barren": "#c9b79c",
                "mining_land": "#6b5b4b", "snow_ice": "#e8f1f8"}
#: Resolution of the figures (dots per inch) and the most pixels a map panel needs across.
DPI = 100
MAX_PANEL_PX = 400
#: zlib level of the PNG figures: 3 writes them about a third faster than the default 6, 10-20 % larger.
PNG = {"compress_level": 3}
POOL_NAMES = {"agb": "above-ground biomass", "bgb": "below-ground biomass", "deadwood": "dead wood",
              "litter": "litter", "soc": "soil organic carbon"}


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


def site_report(cfg: Config, site_id: str, out_dir: Path | None = None, maps_dir: str | Path | None = None) -> Path:
    """Write ``index.html`` and its PNG figures for one site; returns the page's path.

    The report draws what was published and never computes a stock: the ledger's tables, the
    land-cover rasters, and the density maps that the run behind the current estimate wrote
    (``<output_dir>/runs/<run_id>/maps/<site_id>`` or ``report-maps/<site_id>``, or
    ``maps_dir``). A map that was not written is said on the page."""
    out_dir = Path(out_dir) if out_dir is not None else inside(cfg.output_dir, "reports", site_id)
    data = _gather(cfg, site_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    if maps_dir is None and not data.stocks.empty:
        maps_dir = run_maps(cfg.output_dir, str(data.stocks["run_id"].iloc[0]), site_id)
    figures: dict[str, Path] = {}
    figures.update(_maps(cfg, data, out_dir, Path(maps_dir) if maps_dir is not None else None))
    if not data.stocks.empty:
        try:
            figures["stock_by_pool"] = _stock_chart(data, out_dir / "stock_by_pool.png")
        except Exception as exc:  # noqa: BLE001 - said on the page
            data.problems.append(f"The stock chart cannot be drawn: {exc}")
    page = out_dir / "index.html"
    page.write_text(_html(data, figures), encoding="utf-8")
    return page


# --- data --------------------------------------------------------------------------------


def _gather(cfg: Config, site_id: str) -> ReportData:
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
        problems.append(f"The latest run ({last['run_id']}, {last['created_at']}) failed: {last['error']}")
        if stocks.empty:
            problems.append("No successful run: no estimate to show.")
        else:
            problems.append(f"The figures below are from the last successful run ({stocks['run_id'].iloc[0]}).")
    if not sinks.empty:
        problems += dating.gap_warnings(sinks[sinks["is_full_period"]], stocks)
        for part in str(sinks["uncertainty_method"].iloc[0]).split("; ")[1:]:
            problems.append(f"Uncertainty: {part}.")
    return ReportData(site, stocks, sinks, transitions, history, inputs, problems, class_areas)


def _read_years(site: Site, catalog: list[CatalogEntry], coefficients: CoefficientSet, legends: Path | None,
                years: list[int], problems: list[str]) -> tuple[Grid, Any, dict[int, Any]] | None:
    """The site's grid, polygon and codes of the years whose rasters read over the whole site
    window (all at once; year by year only when that fails, to name each year that cannot be
    read). ``None`` when no year can be read."""
    try:
        return read_site_codes(site, catalog, coefficients, legends, years)
    except (CarbonSinkError, rasterio.errors.RasterioError):
        pass
    ok = []
    for y in years:
        try:
            read_site_codes(site, catalog, coefficients, legends, [y])
            ok.append(y)
        except (CarbonSinkError, rasterio.errors.RasterioError) as exc:
            if "covers the site" not in str(exc):  # a year of other sites' rasters is not a problem here
                problems.append(f"Map year {y} cannot be read: {exc}")
    if not ok:
        return None
    return read_site_codes(site, catalog, coefficients, legends, ok)


# --- figures -----------------------------------------------------------------------------


def _maps(cfg: Config, data: ReportData, out_dir: Path, maps_dir: Path | None) -> dict[str, Path]:
    site = data.site
    catalog = list(load_per_version(load_catalog, cfg.landcover))
    coefficients = load_per_version(load_coefficients, cfg.coefficients)
    wanted = sorted(set(data.stocks["year"])) if not data.stocks.empty else sorted({e.year for e in catalog})
    figures = {}
    try:
        read = _read_years(site, catalog, coefficients, cfg.legends, wanted, data.problems)
        if read is None:
            data.problems.append("No land-cover map can be drawn: no map year of the site can be read.")
            return {}
        grid, geom, codes = read
        years = sorted(codes)
        figures["land_cover"] = _land_cover_figure(grid, geom, codes, out_dir / "land_cover.png")
    except Exception as exc:  # noqa: BLE001 - a figure that cannot be drawn is said on the page
        data.problems.append(f"Land-cover maps cannot be drawn: {exc}")
        return figures
    start = int(data.sinks.loc[data.sinks["is_full_period"], "period_start"].iloc[0]) if (
        not data.sinks.empty and data.sinks["is_full_period"].any()) else years[0]
    start = start if start in years else years[0]
    try:
        written = _density_maps(maps_dir, site.site_id, years, start) if maps_dir is not None else {}
        missing = [p.name for p in written.values() if not p.is_file()]
        if not written or missing:
            data.problems.append(
                "The stock density maps of this estimate were not written (the run that published it wrote no maps: "
                "re-run the site with --maps or with reports)" + (f"; missing: {', '.join(missing)}" if missing else ""))
        else:
            figures["density"] = _density_figure(grid, geom, written, out_dir / "stock_density.png")
    except Exception as exc:  # noqa: BLE001 - a figure that cannot be drawn is said on the page
        data.problems.append(f"Stock density maps cannot be drawn: {exc}")
    return figures


def _outline(ax: Any, geom: Any, grid: Grid) -> None:
    """The site boundary in the grid's pixel coordinates: one line for every ring."""
    inv = ~grid.transform
    xs: list[Any] = []
    ys: list[Any] = []
    for poly in getattr(geom, "geoms", [geom]):
        for ring in [poly.exterior, *poly.interiors]:
            x, y = np.asarray(ring.coords).T
            col, row = inv @ (x, y)
            xs += [np.asarray(col) - 0.5, [np.nan]]
            ys += [np.asarray(row) - 0.5, [np.nan]]
    ax.plot(np.concatenate(xs), np.concatenate(ys), color="black", linewidth=1.2)


def _thin(arr: np.ndarray, max_px: int = MAX_PANEL_PX) -> np.ndarray:
    """Every k-th pixel of a large window (nearest neighbour, what the panel shows anyway):
    a panel is about 300 pixels across, so a larger array only costs resampling time."""
    k = int(np.ceil(max(arr.shape) / max_px)) if max(arr.shape) > max_px else 1
    return arr[::k, ::k] if k > 1 else arr


def _show(ax: Any, arr: np.ndarray, grid: Grid, **kw: Any) -> Any:
    """``imshow`` of a (possibly thinned) window in the full grid's pixel coordinates."""
    return ax.imshow(_thin(arr), extent=(-0.5, grid.width - 0.5, grid.height - 0.5, -0.5), interpolation="nearest",
                     **kw)


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


def _land_cover_figure(grid: Grid, geom: Any, codes: dict[int, tuple[np.ndarray, np.ndarray, Any]],
                       path: Path) -> Path:
    years = sorted(codes)
    ncols = min(4, len(years))
    nrows = int(np.ceil(len(years) / ncols))
    panel, top, bottom, gap_h = 3.0, 0.75, 0.5, 0.35
    fig = Figure(figsize=(3.1 * ncols + 0.1, top + nrows * panel + (nrows - 1) * gap_h + bottom))
    axes = [ax for row in _panels(fig, nrows, ncols, w=3.0, h=panel, top=top, bottom=bottom, gap_h=gap_h)
            for ax in row]
    legend_items: dict[str, str] = {}
    for ax, y in zip(axes, years, strict=False):
        values, valid, cw = codes[y]
        colors = [c or CLASS_COLORS.get(k, "#999999") for c, k in
                  zip(cw.colors or [None] * len(cw.codes), cw.classes, strict=True)]
        idx, known = cw.lookup(values)
        shown = valid & known
        img = np.ma.masked_array(idx, mask=~shown)
        _show(ax, img, grid, cmap=ListedColormap(colors), vmin=0, vmax=len(colors) - 1)
        _outline(ax, geom, grid)
        _bare(ax, f"{y} ({cw.legend})")
        for j in np.unique(idx[shown]):
            legend_items[f"{cw.codes[j]} {cw.labels[j]}".replace("$", r"\$")] = colors[j]  # no mathtext
    for ax in axes[len(years):]:
        ax.axis("off")
    fig.legend(handles=[Patch(color=c, label=lbl) for lbl, c in legend_items.items()], loc="lower center",
               ncol=max(1, min(5, len(legend_items))), fontsize=8, frameon=False)
    fig.suptitle("Land cover with the site boundary (black; white = no data)", fontsize=10)
    fig.savefig(path, dpi=DPI, pil_kwargs=PNG)
    return path


def _read_map(path: Path) -> np.ndarray:
    """A density map, decimated on read when it is larger than a panel shows."""
    with rasterio.open(path) as src:  # nodata is NaN (carbon/io/maps.py)
        k = int(np.ceil(max(src.height, src.width) / MAX_PANEL_PX))
        if k <= 1:
            return src.read(1)
        return src.read(1, out_shape=(int(np.ceil(src.height / k)), int(np.ceil(src.width / k))),
                        resampling=Resampling.nearest)


def _density_maps(maps_dir: Path, site_id: str, years: list[int], start: int) -> dict[str, Path]:
    """The maps the density figure shows, by panel title (file names of carbon/io/maps.py): the
    stock density of the first and the last year, and the change over the full period."""
    maps = {f"stock density {y} (t C/ha)": maps_dir / f"{site_id}_stock_density_{y}.tif"
            for y in sorted({years[0], years[-1]})}
    if start < years[-1]:
        maps[f"change {start}-{years[-1]} (t C/ha; removals > 0)"] = (
            maps_dir / f"{site_id}_stock_change_{start}_{years[-1]}.tif")
    return maps


def _density_figure(grid: Grid, geom: Any, maps: dict[str, Path], path: Path) -> Path:
    panels: list[tuple[str, np.ndarray, str, tuple[float, float] | None]] = []
    for title, p in maps.items():
        a = _read_map(p)
        if not title.startswith("change"):
            panels.append((title, a, "YlGn", None))
            continue
        lim = float(np.nanmax(np.abs(a))) if np.isfinite(a).any() else 1.0
        panels.append((title, a, "RdBu", (-lim or -1, lim or 1)))
    # the density panels share one colour scale, hence one colour bar (right of the last of
    # them); the change panel has its own
    shared = [lims is None for *_, lims in panels]
    bars = [not (shared[i] and i + 1 < len(panels) and shared[i + 1]) for i in range(len(panels))]
    panel, bar, gap, side = 3.6, 0.65, 0.15, 0.1
    fig = Figure(figsize=(side + len(panels) * (panel + gap) + bar * sum(bars), panel + 0.6))
    fw, fh = fig.get_size_inches()
    vmax = max(float(np.nanmax(arr)) if np.isfinite(arr).any() else 1.0 for _, arr, _, lims in panels if lims is None)
    x = side
    for (title, arr, cmap, lims), with_bar in zip(panels, bars, strict=True):
        ax = fig.add_axes((x / fw, 0.25 / fh, panel / fw, panel / fh))
        vmin, vmax_i = lims if lims else (0.0, vmax)
        im = _show(ax, arr, grid, cmap=cmap, vmin=vmin, vmax=vmax_i)
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
    s = data.stocks.sort_values("year")
    fig = Figure(figsize=(7.5, 4))
    ax = fig.add_axes((0.1, 0.13, 0.87, 0.78))
    ax.stackplot(s["year"], *[s[f"stock_{p}_tc"] for p in POOLS], labels=[POOL_NAMES[p] for p in POOLS], alpha=0.8)
    ax.plot(s["year"], s["stock_tc"], color="black", marker="o", label="total")
    if "stock_tc_lower95" in s:
        ax.fill_between(s["year"], s["stock_tc_lower95"], s["stock_tc_upper95"], color="grey", alpha=0.35,
                        label="95% interval (Monte Carlo)")
    ax.set(xlabel="year", ylabel="t C", title=f"{data.site.site_id}: carbon stock by pool")
    ax.xaxis.get_major_locator().set_params(integer=True)  # type: ignore[call-arg]  # MaxNLocator
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=DPI, pil_kwargs=PNG)
    return path


# --- page --------------------------------------------------------------------------------


def _img(path: Path, alt: str) -> str:
    b64 = base64.b64encode(path.read_bytes()).decode()
    return f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}"><figcaption>' \
           f'{html.escape(alt)} (<a href="{path.name}">{path.name}</a>)</figcaption></figure>'


def _num(v: Any, digits: int = 2, col: str | None = None) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "<td></td>"
    attr = f' data-col="{col}"' if col else ""
    return f'<td class="n"{attr} data-value="{float(v)!r}">{float(v):,.{digits}f}</td>'


def _sink_table(sinks: pd.DataFrame) -> str:
    if sinks.empty:
        return "<p>No sink in the ledger for this site.</p>"
    head = ("<tr><th>period</th><th>area (ha)</th><th>stock start (t C)</th><th>stock end (t C)</th>"
            "<th>change (t C)</th><th>sink (t CO2e)</th><th>90% interval (t CO2e)</th><th>U90 (%)</th>"
            "<th>conservative sink (t CO2e)</th><th>annual sink (t CO2e/yr)</th><th>method</th></tr>")
    rows = []
    for r in sinks.sort_values(["period_start", "period_end"]).itertuples():
        full = " (full period)" if r.is_full_period else ""
        rows.append(
            f'<tr data-period="{r.period_start}-{r.period_end}"><td>{r.period_start}-{r.period_end}{full}</td>'
            f"{_num(r.area_ha)}{_num(r.stock_start_tc)}{_num(r.stock_end_tc)}{_num(r.stock_change_tc)}"
            f"{_num(r.sink_tco2e, col='sink_tco2e')}"
            f"<td>{r.sink_tco2e_lower90:,.1f} to {r.sink_tco2e_upper90:,.1f}</td>{_num(r.sink_tco2e_u90_pct, 1)}"
            f"{_num(r.conservative_sink_tco2e)}{_num(r.annual_sink_tco2e)}<td>{html.escape(str(r.method))}</td></tr>"
        )
    return f'<table id="sinks">{head}{"".join(rows)}</table>'


def _stock_table(stocks: pd.DataFrame) -> str:
    if stocks.empty:
        return ""
    head = "<tr><th>year</th><th>area (ha)</th><th>no data (ha)</th>" + "".join(
        f"<th>{POOL_NAMES[p]} (t C)</th>" for p in POOLS) + "<th>total (t C)</th><th>95% interval (t C)</th></tr>"
    rows = []
    for r in stocks.sort_values("year").itertuples():
        cells = "".join(_num(getattr(r, f"stock_{p}_tc")) for p in POOLS)
        rows.append(f'<tr data-year="{r.year}"><td>{r.year}</td>{_num(r.area_ha)}{_num(r.nodata_ha)}{cells}'
                    f"{_num(r.stock_tc, col='stock_tc')}"
                    f"<td>{r.stock_tc_lower95:,.1f} to {r.stock_tc_upper95:,.1f}</td></tr>")
    return f'<table id="stocks">{head}{"".join(rows)}</table>'


def _class_area_table(areas: pd.DataFrame) -> str:
    """Mapped and error-adjusted area of each carbon class per year (docs/methods.md §8), with
    a sentence saying whether the stocks rest on adjusted or mapped areas."""
    if areas.empty:
        return "<p>No class areas in the ledger for this site.</p>"
    adjusted = areas[areas["adjusted"].astype(bool)]
    if adjusted.empty:
        note = ("<p class=\"note\" id=\"areas-basis\">Areas are <b>unadjusted</b>: no map year of this site has an "
                "accuracy-assessment sample, so the areas, stocks and sinks are the mapped ones and carry no map "
                "error (docs/methods.md §8).</p>")
    else:
        years = sorted(int(y) for y in adjusted["year"].unique())
        samples = sorted({str(p) for p in adjusted["accuracy_sample"] if str(p)})
        note = ("<p class=\"note\" id=\"areas-basis\">Areas <b>adjusted for map error</b> in "
                f"{', '.join(map(str, years))} with the accuracy sample(s) {html.escape(', '.join(samples))} "
                "(stratified estimator, Olofsson et al. 2013): the stocks and sinks above rest on the adjusted "
                "areas, and their intervals include the area uncertainty (docs/methods.md §8).</p>")
    head = ("<tr><th>year</th><th>carbon class</th><th>mapped (ha)</th><th>adjusted (ha)</th>"
            "<th>95% interval (ha)</th></tr>")
    rows = []
    for r in areas.sort_values(["year", "carbon_class"]).itertuples():
        interval = (f"<td>{r.area_adjusted_ha_lower95:,.2f} to {r.area_adjusted_ha_upper95:,.2f}</td>"
                    if r.adjusted else "<td>unadjusted</td>")
        rows.append(f'<tr data-year="{r.year}" data-class="{html.escape(str(r.carbon_class))}"><td>{r.year}</td>'
                    f"<td>{html.escape(str(r.carbon_class))}</td>{_num(r.area_ha, col='area_ha')}"
                    f"{_num(r.area_adjusted_ha, col='area_adjusted_ha')}{interval}</tr>")
    return f'{note}<table id="class-areas">{head}{"".join(rows)}</table>'


def _transition_table(transitions: pd.DataFrame, sinks: pd.DataFrame) -> str:
    full = sinks[sinks["is_full_period"]] if not sinks.empty else sinks
    if full.empty or transitions.empty:
        return "<p>No transition matrix (a single map year).</p>"
    y0, y1 = int(full["period_start"].iloc[0]), int(full["period_end"].iloc[0])
    t = transitions[(transitions["period_start"] == y0) & (transitions["period_end"] == y1)]
    m = t.pivot_table(index="from_class", columns="to_class", values="area_ha", aggfunc="sum", fill_value=0.0)
    head = "<tr><th>from \\ to (ha)</th>" + "".join(f"<th>{html.escape(c)}</th>" for c in m.columns) + "</tr>"
    rows = "".join(f"<tr><th>{html.escape(i)}</th>" + "".join(_num(v) for v in m.loc[i]) + "</tr>" for i in m.index)
    return f"<p>Land-cover transitions {y0} to {y1}, hectares.</p><table id=\"transitions\">{head}{rows}</table>"


def _provenance(data: ReportData) -> str:
    s = data.stocks
    items = {
        "site": f"{data.site.site_id}: {data.site.name} ({data.site.site_type}, ecozone {data.site.ecozone})",
        "ledger run": s["run_id"].iloc[0] if not s.empty else "-",
        "computed at": str(s["created_at"].iloc[0]) if not s.empty else "-",
        "coefficient set": f"{s['coefficient_set'].iloc[0]} (SHA-256 {s['coefficient_sha256'].iloc[0]})"
        if not s.empty else "-",
        "code version": s["code_version"].iloc[0] if not s.empty else "-",
        "uncertainty": s["uncertainty_method"].iloc[0] if not s.empty else "-",
    }
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in items.items())
    rasters = []
    for year, y in sorted(data.inputs.get("years", {}).items()):
        rasters_of_year = y.get("rasters", {})
        if isinstance(rasters_of_year, list):  # inputs recorded without file hashes
            rasters_of_year = dict.fromkeys(rasters_of_year, "")
        for path, digest in rasters_of_year.items():
            rasters.append(f"<tr><td>{year}</td><td>{html.escape(y.get('legend', ''))}</td>"
                           f"<td>{html.escape(path)}</td><td><code>{digest}</code></td></tr>")
        for path, digest in y.get("accuracy_sample", {}).items():
            rasters.append(f"<tr><td>{year}</td><td>accuracy sample</td>"
                           f"<td>{html.escape(path)}</td><td><code>{digest}</code></td></tr>")
    raster_table = ("<table><tr><th>year</th><th>legend</th><th>input file</th><th>SHA-256</th></tr>"
                    + "".join(rasters) + "</table>") if rasters else ""
    runs = "".join(f"<tr><td>{r.site_run_id}</td><td>{r.run_id}</td><td>{r.status}</td><td>{r.created_at}</td></tr>"
                   for r in data.history.itertuples())
    return (f"<table>{rows}</table>{raster_table}<h3>Every run of this site</h3>"
            f"<table><tr><th>site run</th><th>run</th><th>status</th><th>time</th></tr>{runs}</table>")


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.85em}td,th{border:1px solid #ccc;padding:3px 6px}
td.n{text-align:right;font-variant-numeric:tabular-nums}th{background:#f3f3f3;text-align:left}
figure{margin:1em 0}img{max-width:100%}.problem{background:#fde8e8;border-left:4px solid #c0392b;padding:0.5em 1em}
.note{color:#555;font-size:0.9em}"""

CHECK = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var bad = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).length;
  document.body.setAttribute('data-figures', imgs.length + ' loaded, ' + bad + ' broken');
});
</script>"""


def _html(data: ReportData, figures: dict[str, Path]) -> str:
    site = data.site
    problems = "".join(f'<p class="problem">{html.escape(p)}</p>' for p in data.problems)
    figs = "".join(_img(figures[k], alt) for k, alt in (
        ("land_cover", "Land cover of each map year with the site boundary"),
        ("density", "Stock density, first and last year, and its change"),
        ("stock_by_pool", "Carbon stock by pool over the years, with the 95% interval")) if k in figures)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>carbon-sink report: {html.escape(site.site_id)}</title>
<style>{CSS}</style></head>
<body data-figures="pending">
<h1>{html.escape(site.name)} <small>({html.escape(site.site_id)})</small></h1>
{problems}
<p class="note">Units: carbon stocks in tonnes of carbon (t C); sinks in tonnes of CO2 equivalent (t CO2e),
sink = stock change x 44/12. Sign: <b>removals are positive</b>, emissions negative. Areas are ellipsoidal
hectares, boundary pixels counted by the share inside the site. Methods: docs/methods.md.</p>
<h2>Sinks</h2>{_sink_table(data.sinks)}
<h2>Stocks</h2>{_stock_table(data.stocks)}
<h2>Areas by carbon class</h2>{_class_area_table(data.class_areas)}
<h2>Maps and charts</h2>{figs or "<p>No figure could be drawn (see above).</p>"}
<h2>Land-cover transitions</h2>{_transition_table(data.transitions, data.sinks)}
<h2>Provenance</h2>{_provenance(data)}
{CHECK}
</body></html>
"""
