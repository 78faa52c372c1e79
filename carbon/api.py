"""The public Python API: what an analyst calls from a notebook.

    >>> import carbon.api as cs
    >>> res = cs.compute("my_sites.geojson", landcover="landcover/catalog.csv")   # or a GeoDataFrame
    >>> res.sinks                      # pandas: one row per site and period (t CO2e, removals > 0)
    >>> res.sites                      # GeoDataFrame: each site's polygon (its own CRS) and its sink
    >>> res.stock["wuhan-quarry-reclaim"]   # xarray: t C by year, carbon class and pool
    >>> cs.landcover(res, "wuhan-quarry-reclaim")  # xarray, lazy (dask), CRS attached

Nothing here publishes: to publish to the ledger, run ``carbon-sink run`` (or the
``metering-run`` flow). Every rule applied is in docs/methods.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor used by landcover())
import xarray as xr

from carbon.io.config import Config, load_config
from carbon.io.resources import BUILTIN_LEGENDS, COEFFICIENTS, DEMO_CONFIG
from carbon.io.sites import load_sites, sites_from_frame
from carbon.io.tables import load_catalog, load_coefficients
from carbon.pipeline.loop import for_each_site
from carbon.pipeline.plan import class_names_of, plan_site, reference_grid
from carbon.pipeline.scan import DEFAULT_MAX_CELLS, ScanPlan, site_landcover
from carbon.pipeline.site import compute_site
from carbon.rules import accounting, policies, uncertainty
from carbon.rules.coefficients import CatalogEntry, CoefficientSet
from carbon.rules.grid import site_grid, to_crs
from carbon.rules.results import SiteResult
from carbon.rules.site import Site, select_sites

__all__ = ["BUILTIN_LEGENDS", "DEMO_CONFIG", "IPCC_TIER1", "Results", "compute", "landcover", "load_config"]

#: The built-in IPCC 2019 Tier 1 coefficient set (data/coefficients/README.md).
IPCC_TIER1 = COEFFICIENTS / "ipcc2019_tier1.csv"


@dataclass
class Results:
    """The tables of every site computed, and the error of each site that failed."""

    site_results: dict[str, SiteResult]
    errors: dict[str, str]
    site_geometries: dict[str, Site] = field(repr=False)
    catalog: list[CatalogEntry] = field(repr=False)
    coefficients: CoefficientSet = field(repr=False)
    legends_dir: Path | None = field(default=None, repr=False)

    def _table(self, name: str) -> pd.DataFrame:
        frames = [r.tables()[name] for r in self.site_results.values()]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    @property
    def sinks(self) -> pd.DataFrame:
        """One row per site and period: stocks at both ends, sink and annual sink (t CO2e),
        intervals and the conservative sink."""
        return self._table("sinks")

    @property
    def stocks(self) -> pd.DataFrame:
        """One row per site and map year: area (ha) and stock by pool (t C), with intervals."""
        return self._table("stocks")

    @property
    def stocks_by_class(self) -> pd.DataFrame:
        return self._table("stocks_by_class")

    @property
    def transitions(self) -> pd.DataFrame:
        return self._table("transitions")

    @property
    def stock(self) -> dict[str, xr.DataArray]:
        """Per site, the stocks (t C) by year, carbon class and pool."""
        return {s: r.stock for s, r in self.site_results.items() if r.stock is not None}

    @property
    def sites(self) -> gpd.GeoDataFrame:
        """Each computed site's polygon with its full-period sink, 90% interval and conservative
        sink; in the first site's CRS (sites in other CRSs are reprojected to it)."""
        sinks = self.sinks
        full = sinks[sinks["is_full_period"]] if not sinks.empty else sinks
        rows = []
        crs = next(iter(self.site_geometries.values())).crs if self.site_geometries else None
        for site_id in self.site_results:
            site = self.site_geometries[site_id]
            geom = to_crs(site.geometry, site.crs, crs) if crs is not None else site.geometry
            row = {"site_id": site_id, "name": site.name, "geometry": geom}
            match = full[full["site_id"] == site_id] if not full.empty else full
            for col in ("period_start", "period_end", "area_ha", "sink_tco2e", "sink_tco2e_lower90",
                        "sink_tco2e_upper90", "conservative_sink_tco2e"):
                row[col] = match[col].iloc[0] if len(match) else None
            rows.append(row)
        return gpd.GeoDataFrame(rows, geometry="geometry", crs=crs)


def compute(sites: str | Path | gpd.GeoDataFrame | None = None, *, landcover: str | Path | None = None,
            coefficients: str | Path | None = None, legends: str | Path | None = None,
            config: str | Path | Config | None = None, site_ids: Sequence[str] | None = None,
            years: Sequence[int] | None = None, start_year: int | None = None, method: str | None = None,
            draws: int | None = None, conservative_rule: str | None = None,
            sd_defaults: uncertainty.SdDefaults | None | str = "configuration",
            max_cells: int = DEFAULT_MAX_CELLS) -> Results:
    """Compute the stocks and sinks of sites (a sites file or a GeoDataFrame) from a land-cover
    catalog, with a coefficient set (default: the built-in IPCC Tier 1 set). ``config``
    supplies whatever is not given (default: the demo). A site whose inputs are bad fails
    alone: its message is in ``errors``. ``draws``, ``conservative_rule`` and ``sd_defaults`` (what
    a coefficient without an SD is given, docs/methods.md §10) default to the configuration's,
    or without one to 10,000 draws, AR-TOOL14 and IPCC's nominal ±90%."""
    cfg = config if isinstance(config, Config) else load_config(config) if (
        config is not None or sites is None or landcover is None) else None
    if sites is None:
        assert cfg is not None
        site_list = load_sites(cfg.sites)
    elif isinstance(sites, gpd.GeoDataFrame):
        site_list = sites_from_frame(sites)
    else:
        site_list = load_sites(sites)
    chosen = {s.site_id: s for s in select_sites(site_list, list(site_ids) if site_ids else None)}
    catalog = load_catalog(landcover if landcover is not None else cfg.landcover)  # type: ignore[union-attr]
    coef_path = coefficients if coefficients is not None else (cfg.coefficients if cfg is not None else IPCC_TIER1)
    coef = load_coefficients(coef_path)
    legends_dir = Path(legends) if legends is not None else (cfg.legends if cfg is not None else None)

    if isinstance(sd_defaults, str):
        policy = cfg.sd_defaults if cfg is not None else uncertainty.SdDefaults.ipcc_nominal()
    else:
        policy = sd_defaults
    n_draws = draws if draws is not None else cfg.monte_carlo_draws if cfg is not None else uncertainty.DEFAULT_DRAWS
    rule = conservative_rule or (cfg.conservative_rule if cfg is not None else uncertainty.RULES[0])

    def one(site_id: str) -> SiteResult:
        return compute_site(chosen[site_id], catalog, coef, legends_dir=legends_dir,
                            years=list(years) if years else None, start_year=start_year, method=method,
                            draws=n_draws, conservative_rule=rule, sd_defaults=policy,
                            max_cells=max_cells)

    outcomes = for_each_site(list(chosen), one)
    return Results(site_results={o.site_id: o.value for o in outcomes if o.status == "succeeded"},
                   errors={o.site_id: o.error or "" for o in outcomes if o.status == "failed"},
                   site_geometries=chosen, catalog=catalog, coefficients=coef, legends_dir=legends_dir)


def landcover(results: Results, site_id: str, chunk_rows: int = 512) -> xr.Dataset:
    """The site's land cover on its reference grid as a lazy, dask-chunked Dataset: ``code``
    (year, y, x) and ``valid``, with the grid's CRS (``spatial_ref``, rioxarray) attached."""
    site = results.site_geometries[site_id]
    year_meta = plan_site(site, results.catalog, results.coefficients, results.legends_dir)
    years = sorted(year_meta)
    names = class_names_of(results.coefficients, year_meta)
    _, ref = reference_grid(site, year_meta)
    geom = to_crs(site.geometry, site.crs, ref.crs)
    grid = site_grid(ref, geom)
    periods = accounting.periods(years, years[0])
    plan = ScanPlan.build(year_meta, years, periods, names, policies.site_dynamics(site, results.coefficients),
                          grid, geom, DEFAULT_MAX_CELLS, ref)
    ds = site_landcover(plan, chunk_rows)
    return ds.rio.write_crs(grid.crs.to_wkt())
