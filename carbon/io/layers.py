"""The sites as a GIS layer: one feature per site, its polygon with its current official
full-period sink, interval, conservative sink, the stocks of its first and last map years, its
area and the ledger run behind them (GeoPackage or GeoParquet, docs/operations.md).

CRS: a layer holds one CRS. When every site of the sites file shares one, the polygons are
written in it, as the sites file gives them; when the sites are in several CRSs, every polygon
is written in EPSG:4326 (longitude, latitude) and each feature's ``source_crs`` names the CRS of
its sites file (one layer, so a GIS shows every site at once).
"""

from __future__ import annotations

import logging
from pathlib import Path

import geopandas as gpd
import pandas as pd
from pyproj import CRS

from carbon.errors import InputError
from carbon.io.ledger import Ledger
from carbon.io.sites import load_sites
from carbon.rules.site import Site

log = logging.getLogger(__name__)

#: Formats of the layer and their file names' suffixes.
FORMATS = {"gpkg": ".gpkg", "geoparquet": ".parquet"}
#: The layer's name inside a GeoPackage.
LAYER = "sites"
#: The file a metering run writes beside its manifest.
RUN_LAYER = "sites.gpkg"
SINK_FIELDS = ["period_start", "period_end", "area_ha", "sink_tco2e", "sink_tco2e_lower90", "sink_tco2e_upper90",
               "conservative_sink_tco2e", "annual_sink_tco2e", "method"]


def site_layer(ledger: Ledger, sites: tuple[Site, ...] | list[Site], site_ids: list[str] | None = None
               ) -> gpd.GeoDataFrame:
    """One feature per site with a current official full-period sink (all, or ``site_ids``),
    in the sites' CRS when they share one, else in EPSG:4326 (module docstring)."""
    chosen = None if site_ids is None else set(site_ids)
    wanted = [s for s in sites if chosen is None or s.site_id in chosen]
    # each site's row and its first and last year's stock, looked up by site (a layer of 100,000
    # sites was a scan of the ledger's stocks a site)
    sinks = ledger.current("sinks", columns=["site_id", "is_full_period", *SINK_FIELDS, "run_id", "site_run_id"])
    sink_of = sinks[sinks["is_full_period"]].drop(columns="is_full_period").set_index("site_id").to_dict("index")
    stocks = ledger.current("stocks", columns=["site_id", "year", "stock_tc"]).sort_values(["site_id", "year"],
                                                                                          kind="stable")
    first_of = stocks.drop_duplicates("site_id", keep="first").set_index("site_id").to_dict("index")
    last_of = stocks.drop_duplicates("site_id", keep="last").set_index("site_id").to_dict("index")
    rows, geoms, crss = [], [], []
    for s in wanted:
        sink = sink_of.get(s.site_id)
        if sink is None:
            continue  # not metered yet, failed, or a single map year: no full-period sink
        first, last = first_of[s.site_id], last_of[s.site_id]
        rows.append({
            "site_id": s.site_id, "name": s.name, "site_type": s.site_type,
            **{f: sink[f] for f in SINK_FIELDS},
            "first_year": int(first["year"]), "stock_first_tc": float(first["stock_tc"]),
            "last_year": int(last["year"]), "stock_last_tc": float(last["stock_tc"]),
            "run_id": str(sink["run_id"]), "site_run_id": int(sink["site_run_id"]),
            "source_crs": s.crs.to_string(),
        })
        geoms.append(s.geometry)
        crss.append(s.crs)
    if not rows:
        raise InputError("no site has a current full-period sink in the ledger: run `carbon-sink run` first"
                         + (f" (sites asked for: {', '.join(site_ids)})" if site_ids else ""))
    frame = pd.DataFrame(rows)
    if all(c == crss[0] for c in crss):
        return gpd.GeoDataFrame(frame, geometry=geoms, crs=crss[0])
    wgs84 = CRS.from_epsg(4326)
    parts = [gpd.GeoSeries([g], crs=c).to_crs(wgs84).iloc[0] for g, c in zip(geoms, crss, strict=True)]
    return gpd.GeoDataFrame(frame, geometry=parts, crs=wgs84)


def write_layer(layer: gpd.GeoDataFrame, path: str | Path, fmt: str | None = None) -> Path:
    """Write ``layer`` as a GeoPackage (layer ``sites``) or GeoParquet; ``fmt`` defaults to the
    file's suffix. The file is replaced whole (written beside it, then renamed)."""
    path = Path(path)
    fmt = fmt or next((k for k, suffix in FORMATS.items() if path.suffix.lower() == suffix), None)
    if fmt not in FORMATS:
        raise InputError(f"a sites layer is written as {' or '.join(FORMATS)} ({', '.join(FORMATS.values())}), "
                         f"not {fmt or path.suffix!r}", path=path)
    if path.is_dir() or not path.parent.is_dir():
        raise InputError("the layer's path must be a file in an existing folder", path=path)
    tmp = path.with_name(f".tmp-{path.name}")  # same suffix: GDAL picks the format by it
    tmp.unlink(missing_ok=True)
    try:
        if fmt == "gpkg":
            layer.to_file(tmp, driver="GPKG", layer=LAYER, engine="pyogrio")
        else:
            layer.to_parquet(tmp, index=False)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_run_layer(ledger_url: str, sites_file: str | Path, run_dir: Path) -> Path | None:
    """The layer a metering run writes beside its manifest (``sites.gpkg``): every site of the
    configuration with a current official full-period sink, as the ledger holds them once the
    run has published. Never fails the run: a layer that cannot be written is logged."""
    try:
        return write_layer(site_layer(Ledger(ledger_url), load_sites(sites_file)), run_dir / RUN_LAYER, "gpkg")
    except Exception as exc:  # noqa: BLE001 - the run's results are published; the layer is a convenience
        log.warning("the sites layer of the run cannot be written (%s): %s", run_dir / RUN_LAYER, exc)
        return None
