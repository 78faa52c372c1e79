"""One site's computation: rasters -> class areas and transitions -> stocks and sinks.

``compute_site`` is a handful of named steps: plan the site's map years (plan.py), apply
its policies (rules/policies.py), scan its pixels (scan.py), turn the sums into stock,
sink and transition tables (rules/accounting.py, rules/dynamics.py), add their intervals
(rules/uncertainty.py) and provenance, and validate every table (schemas/outputs.py).
"""

from __future__ import annotations

import hashlib
import threading
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from carbon.errors import InputError
from carbon.io.maps import DensityMapWriter
from carbon.pipeline.plan import (
    YearPlan,
    class_names_of,
    legend_of,
    plan_site,
    reference_grid,
)
from carbon.pipeline.scan import (
    DEFAULT_MAX_CELLS,
    Partial,
    ScanPlan,
    scan_rows,
    scan_site,
    unknown_codes,
)
from carbon.rules import accounting, accuracy, adjustment, dynamics, kernels, policies, uncertainty
from carbon.rules.coefficients import CatalogEntry, CoefficientSet
from carbon.rules.grid import Grid, site_grid, to_crs
from carbon.rules.results import SiteResult
from carbon.rules.site import Site, SiteLimits
from carbon.rules.vocabulary import CLASS_AREA_COLUMNS, CO2_PER_C, POOLS
from schemas.outputs import validate_site_result

#: A coefficient without an SD gets this (docs/methods.md §10).
DEFAULT_SD_POLICY = uncertainty.SdDefaults.ipcc_nominal()


def compute_site(
    site: Site,
    catalog: list[CatalogEntry],
    coefficients: CoefficientSet,
    *,
    legends_dir: str | Path | None = None,
    years: list[int] | None = None,
    start_year: int | None = None,
    method: str | None = None,
    maps_dir: str | Path | None = None,
    max_cells: int = DEFAULT_MAX_CELLS,
    draws: int = uncertainty.DEFAULT_DRAWS,
    conservative_rule: str = "ar_tool14",
    sd_defaults: uncertainty.SdDefaults | None = DEFAULT_SD_POLICY,
    limits: SiteLimits | None = None,
    validate: bool = True,
    year_plan: dict[int, YearPlan] | None = None,
) -> SiteResult:
    """Stocks, sinks and transitions of one site from every catalog year that covers it.

    ``years`` restricts the map years (each must be in the catalog and cover the site);
    ``start_year`` overrides the start of the whole period (default: the site's
    ``baseline_year``, else its first map year); ``method`` overrides the site's ``method``
    property (docs/methods.md §9). With ``maps_dir``, per-year stock density maps and the
    change map are written there as Cloud-Optimized GeoTIFFs. ``draws`` Monte Carlo draws
    give every stock and sink its interval; ``conservative_rule`` (``ar_tool14`` or
    ``lower90``) makes the conservative sink (docs/methods.md §10). A coefficient without an SD
    gets the default of ``sd_defaults`` (None: none; its uncertainty is then marked unknown, §10).
    ``limits``: the smallest site area and largest pixel window accepted (the configuration's).
    ``validate``: check every table against its contract (``schemas/outputs.py``); a batch of
    sites leaves it to ``validate_site_results``, which checks the whole batch at once.
    ``year_plan``: the site's plan already made with these arguments (``plan_site``, e.g. for its input
    key, carbon/pipeline/key.py); it is filled in here, so it serves one computation.
    """
    kernels.warm_in_background()  # numba's start in a fresh process, beside the planning and first reads
    year_meta = year_plan if year_plan is not None else plan_site(site, catalog, coefficients, legends_dir, years, limits=limits)
    year_list = sorted(year_meta)
    start = policies.period_start(site, year_list, start_year)
    period_list = accounting.periods(year_list, start)
    dyn = policies.site_dynamics(site, coefficients, method)
    class_names = class_names_of(coefficients, year_meta)
    ref_year, ref_info = reference_grid(site, year_meta)
    geom_ref = to_crs(site.geometry, site.crs, ref_info.crs)
    grid = site_grid(ref_info, geom_ref)
    plan = ScanPlan.build(year_meta, year_list, period_list, class_names, dyn, grid, geom_ref, max_cells, ref_info)

    with ExitStack() as maps:  # maps written while scanning are discarded if the site fails
        part = _scan(plan, site, coefficients, class_names, start, maps, maps_dir)
        agg, site_area_ha = _settle(plan, part, site)
        area = dynamics.class_area(agg, class_names)
        seed = policies.monte_carlo_seed(site.geometry_sha256, coefficients.sha256, dyn, period_list,
                                         [year_meta[y].digest.hexdigest() for y in year_list]
                                         + _sample_digests(year_meta))
        shift = _area_shift(site, year_meta, year_list, len(class_names), draws, seed)
        present = _present_classes(class_names, area, shift)
        sd_fill, coef, used = _site_coefficients(site, coefficients, class_names, present, sd_defaults, dyn)

    stock = dynamics.year_stocks(agg, coef)
    flows = dynamics.period_flows(agg, coef)
    parts, mapped_totals = None, None
    if shift.any:  # stocks and sinks on the map-error-adjusted areas (docs/methods.md §8)
        parts = adjustment.density_parts(agg, coef)
        mapped_totals = _mapped_totals(stock, flows, period_list)
        stock = stock.copy(data=adjustment.stock_by_class(stock.values, shift, parts))
        area = area.copy(data=shift.adjusted)
        flows = adjustment.period_flows(flows, period_list, shift, parts)
    nodata = xr.DataArray([year_meta[y].nodata_ha for y in year_list], dims="year", coords={"year": year_list})
    stocks, by_class = accounting.stock_tables(site.site_id, stock, area, nodata)
    full = (start, year_list[-1]) if start < year_list[-1] else None
    sinks = accounting.sink_table(site.site_id, period_list, flows, site_area_ha, full)
    trans = accounting.transition_table(site.site_id, period_list, agg.transitions, class_names)

    labels = {"method": dyn.method, "coefficient_set": coefficients.name, "coefficient_sha256": coefficients.sha256}
    stocks, sinks = uncertainty.add_intervals(
        stocks, sinks, agg, coef, draws=draws, rule=conservative_rule, seed=seed, note=sd_fill.label(),
        shared=sd_fill.shared_mask(class_names), shift=shift, parts=parts,
        stock_labels={**labels, "legend": [year_meta[y].legend for y in stocks["year"]]}, sink_labels=labels)

    provenance = _provenance(site, year_meta, coefficients, grid, ref_year, site_area_ha, start)
    provenance["method"] = dyn.method
    provenance["initial_age"] = dyn.initial_age
    provenance["flicker_filtered_ha"] = {str(y): a for y, a in agg.flicker_ha.items()}
    provenance["map_accuracy"] = _accuracy_provenance(year_meta, shift, mapped_totals)
    provenance["monte_carlo"] = {"draws": draws, "seed": seed, "conservative_rule": conservative_rule,
                                 "sd_default_policy": None if sd_defaults is None else sd_defaults.key(),
                                 "sd_defaulted": [f"{c}/{p}" for c, p in sd_fill.defaulted],
                                 "sd_unknown": [f"{c}/{p}" for c, p in sd_fill.unknown]}
    result = SiteResult(
        site_id=site.site_id,
        stocks=stocks,
        stocks_by_class=by_class,
        area_by_code=_area_by_code(site.site_id, year_meta),
        sinks=sinks,
        transitions=trans,
        coefficients_used=used,
        class_areas=_class_areas(site.site_id, year_meta),
        provenance=provenance,
        stock=stock,
        aggregates=agg,
        coefficients=coef,
    )
    if validate:
        validate_site_result(result)
    return result


def _scan(plan: ScanPlan, site: Site, coefficients: CoefficientSet, class_names: list[str], start: int,
          maps: ExitStack,
          maps_dir: str | Path | None) -> Partial:
    """The site's pixels summed (scan.py); with ``maps_dir``, in one pass that also writes the
    per-year stock density maps and the change map (carbon/io/maps.py)."""
    if maps_dir is None:
        return scan_site(plan)
    # classes absent from the table get NaN here; the strict lookup after the scan then fails
    # and the writer discards the maps
    ecozone = None if coefficients.is_invest else site.ecozone
    map_coef = dynamics.coefficient_arrays(coefficients.densities(ecozone, class_names, strict=False))
    writer = maps.enter_context(DensityMapWriter(Path(maps_dir), site.site_id, plan.grid, plan.years, start))
    if writer.decimated:  # maps for a report only: each strip fills its own rows, from any thread
        return scan_site(plan, map_writer=writer, map_coef=map_coef)
    return scan_rows(plan, 0, plan.grid.height, map_writer=writer, map_coef=map_coef)


def _settle(plan: ScanPlan, part: Partial, site: Site) -> tuple[dynamics.Aggregates, float]:
    """The scan's sums credited to each map year; a site with unknown codes, no pixel or a
    year without data fails here, naming them."""
    year_meta = plan.year_meta
    if part.unknown.any():
        unknown = unknown_codes(plan)
        problems = [
            f"{path}: codes {sorted(codes)} are in no row of the {legend_of(year_meta, path)!r} crosswalk"
            for path, codes in sorted(unknown.items())
        ]
        raise InputError("land-cover codes without a carbon class", site_id=site.site_id, problems=problems)
    for i, y in enumerate(plan.years):
        meta = year_meta[y]
        n = len(meta.crosswalk.codes)
        meta.area_ha += part.code_area[i, :n]
        meta.pixels += part.pixels[i, :n]
        meta.nodata_ha += float(part.nodata_ha[i])
        meta.digest.update(b"".join(part.digests[i]))
    agg = part.agg if part.agg is not None else plan.stock_difference_aggregates(part)
    if part.site_ha == 0:
        raise InputError("the site polygon covers no pixel of its reference grid", site_id=site.site_id)
    empty = [y for y in plan.years if year_meta[y].area_ha.sum() == 0]
    if empty:
        raise InputError(
            f"no land-cover data inside the site in map year(s) {empty} (rasters cover its bounding box only, "
            "or are nodata there): choose the years to use",
            site_id=site.site_id,
        )
    return agg, part.site_ha


def _present_classes(class_names: list[str], area: xr.DataArray, shift: adjustment.AreaShift) -> list[str]:
    """The classes present at the site in any year, mapped or after the map-error adjustment."""
    there = area.sum("year").values + shift.adjusted.sum(axis=0)
    return [c for c, a in zip(class_names, there, strict=True) if a > 0]


#: What the coefficients of a site come to, by everything they depend on (``_site_coefficients``):
#: thousands of sites share a few ecozones and sets of classes. At most this many are kept (a few
#: kB each; sites of one legend meet a few hundred sets of classes in practice), the oldest out.
SITE_COEFFICIENTS_KEPT = 4096
_SITE_COEFFICIENTS_LOCK = threading.Lock()
_SITE_COEFFICIENTS: dict[tuple[Any, ...], tuple[uncertainty.SdFill, dynamics.Coefficients, pd.DataFrame]] = {}


def _site_coefficients(site: Site, coefficients: CoefficientSet, class_names: list[str], present: list[str],
                       sd_defaults: uncertainty.SdDefaults | None, dyn: dynamics.Dynamics,
                       ) -> tuple[uncertainty.SdFill, dynamics.Coefficients, pd.DataFrame]:
    """The coefficients of the classes present at the site (a class, pool or ecozone the table
    lacks is an error naming it), their SDs filled by the default policy (docs/methods.md §10),
    as arrays over all the site's classes, and the site's coefficients-used table; computed
    once per coefficient set, ecozone, classes, SD policy and dynamics."""
    ecozone = None if coefficients.is_invest else site.ecozone
    key = (coefficients.path, coefficients.sha256, coefficients.name, ecozone, tuple(present), tuple(class_names),
           None if sd_defaults is None else repr(sd_defaults.key()), dyn)
    known = _SITE_COEFFICIENTS.get(key)
    if known is None:
        densities = coefficients.densities(ecozone, present, site_id=site.site_id)
        densities, sd_fill = uncertainty.fill_missing_sd(densities, sd_defaults)
        coef = dynamics.coefficient_arrays(densities.reindex(class_names))
        used = _coefficients_used(site, densities, coefficients, sd_fill, dyn)
        known = (sd_fill, coef, used)
        with _SITE_COEFFICIENTS_LOCK:  # sites of one process may run on threads
            while len(_SITE_COEFFICIENTS) >= SITE_COEFFICIENTS_KEPT:  # the oldest goes
                _SITE_COEFFICIENTS.pop(next(iter(_SITE_COEFFICIENTS)), None)
            _SITE_COEFFICIENTS[key] = known
    sd_fill, coef, used = known
    used = used.copy()
    used["site_id"] = site.site_id
    return sd_fill, coef, used


def _sample_digest(sample: accuracy.AccuracySample) -> str:
    return hashlib.sha256(repr(sample.classes).encode() + sample.counts.tobytes()).hexdigest()


def _sample_digests(year_meta: dict[int, YearPlan]) -> list[str]:
    """What the draws of the adjusted areas depend on beyond the codes read: each year's
    accuracy sample (nothing for years without one, so their seeds are unchanged)."""
    return [f"{y}:{_sample_digest(m.accuracy)}" for y, m in sorted(year_meta.items()) if m.accuracy is not None]


def _area_shift(site: Site, year_meta: dict[int, YearPlan], years: list[int], n_classes: int, draws: int,
                seed: int) -> adjustment.AreaShift:
    """Mapped and error-adjusted area of each carbon class per year, with ``draws`` joint draws
    of the adjusted (docs/methods.md §8); a sample that cannot support the site's estimate is
    an error naming the site and the sample."""
    maps = [adjustment.YearMap(year_meta[y].accuracy, year_meta[y].accuracy_path, year_meta[y].area_ha,
                               year_meta[y].class_of_code) for y in years]
    rng = np.random.default_rng(uncertainty.seed_for(str(seed), "map accuracy"))
    try:
        return adjustment.area_shift(years, maps, n_classes, draws, rng)
    except InputError as e:
        paths = sorted({m.accuracy_path for m in year_meta.values() if m.accuracy_path})
        raise InputError(f"{', '.join(paths)}: {e}", site_id=site.site_id) from e


def _mapped_totals(stock: xr.DataArray, flows: xr.Dataset, periods: list[tuple[int, int]]) -> dict[str, Any]:
    """The site's stocks and sinks on the mapped (unadjusted) areas, kept in the provenance."""
    years = stock.sum(("carbon_class", "pool"))
    change = (flows["stock_end_tc"] - flows["stock_start_tc"]).sum("pool").values
    return {"stock_tc": {str(int(y)): float(v) for y, v in zip(years["year"].values, years.values, strict=True)},
            "sink_tco2e": {f"{a}-{b}": float(c * CO2_PER_C) for (a, b), c in zip(periods, change, strict=True)}}


def _accuracy_provenance(year_meta: dict[int, YearPlan], shift: adjustment.AreaShift,
                         mapped: dict[str, Any] | None) -> dict[str, Any]:
    """Which map years have an accuracy sample (path and digest), whether the stocks and sinks
    are on adjusted areas, and, if so, the figures on the mapped areas beside them."""
    years = {}
    for y in sorted(year_meta):
        m = year_meta[y]
        years[str(y)] = None if m.accuracy is None else {
            "sample": m.accuracy_path,
            "sample_counts_sha256": _sample_digest(m.accuracy),
            "sample_units": int(m.accuracy.counts.sum()),
        }
    return {"areas": "adjusted" if shift.any else "mapped (no accuracy sample)", "years": years,
            "on_mapped_areas": mapped}


def _area_by_code(site_id: str, year_meta: dict[int, YearPlan]) -> pd.DataFrame:
    rows = []
    for y in sorted(year_meta):
        m = year_meta[y]
        for j in np.flatnonzero(m.pixels):
            rows.append(
                {
                    "site_id": site_id,
                    "year": y,
                    "legend": m.legend,
                    "code": int(m.crosswalk.codes[j]),
                    "label": m.crosswalk.labels[j],
                    "carbon_class": m.crosswalk.classes[j],
                    "pixel_count": int(m.pixels[j]),
                    "area_ha": float(m.area_ha[j]),
                }
            )
    cols = ["site_id", "year", "legend", "code", "label", "carbon_class", "pixel_count", "area_ha"]
    return pd.DataFrame(rows, columns=cols)

def _class_areas(site_id: str, year_meta: dict[int, YearPlan]) -> pd.DataFrame:
    """Per year and carbon class, the mapped area (ha, land with data) and, where the year's
    map has an accuracy-assessment sample, the error-adjusted area with its 95% interval from
    the stratified estimator applied to the site's own mapped areas (docs/methods.md §8);
    without a sample the adjusted columns repeat the mapped area."""
    rows = []
    for y in sorted(year_meta):
        m = year_meta[y]
        classes = np.asarray(m.crosswalk.classes)
        if m.accuracy is not None:
            est = accuracy.stratified_area(m.accuracy, m.area_ha)
            adjusted_by_code, cov = est.area, est.covariance
        for cls in dict.fromkeys(m.crosswalk.classes):
            idx = np.flatnonzero(classes == cls)
            mapped = float(m.area_ha[idx].sum())
            if m.accuracy is None:
                adj, half = mapped, 0.0
            else:
                adj = float(adjusted_by_code[idx].sum())
                half = accuracy.Z95 * float(np.sqrt(max(cov[np.ix_(idx, idx)].sum(), 0.0)))
            if mapped == 0 and adj == 0:
                continue
            rows.append({"site_id": site_id, "year": y, "carbon_class": str(cls), "area_ha": mapped,
                         "area_adjusted_ha": adj, "area_adjusted_ha_lower95": max(adj - half, 0.0),
                         "area_adjusted_ha_upper95": adj + half, "adjusted": m.accuracy is not None,
                         "accuracy_sample": m.accuracy_path or ""})
    return pd.DataFrame(rows, columns=CLASS_AREA_COLUMNS)


def _growth_curve(row: dict[str, Any], pool: str, dyn: dynamics.Dynamics) -> str:
    """How the stock of a (class, pool) reaches its value over time at this site (methods §9);
    ``row``: the class's row of the densities table."""
    if dyn.method == "stock_difference":
        return "none: stock difference counts the stock at once"
    if pool == "soc":
        return f"linear change over {dyn.soc_years} years from the previous class's stock"

    def value(name: str) -> Any:
        return row.get(name)

    curve = value(f"curve_{pool}")
    if curve == "chapman_richards":
        return f"chapman_richards: k={float(value(f'curve_k_{pool}')):g}/yr, p={float(value(f'curve_p_{pool}')):g}"
    if curve == dynamics.AGE_CURVE:
        return f"age_curve: {value(f'age_curve_{pool}')}"
    growth = value(f"growth_{pool}")
    if growth is not None and pd.notna(growth) and float(growth) > 0:
        return f"linear: {float(growth):g} t C/ha/yr up to the stock"
    return "none: the stock at once (no growth rate)"


def _coefficients_used(site: Site, densities: pd.DataFrame, coefficients: CoefficientSet,
                       sd_fill: uncertainty.SdFill, dyn: dynamics.Dynamics) -> pd.DataFrame:
    """The coefficient behind every class and pool at the site, with its source, where its
    SD comes from (``sd_source``: the table, the default policy, or none) and the growth curve
    that applies (``growth_curve``)."""
    defaulted, unknown = set(sd_fill.defaulted), set(sd_fill.unknown)
    rows = []
    for cls, row in zip(densities.index, densities.to_dict("records"), strict=True):
        for p in POOLS:
            sd = row[f"sd_{p}"]
            key = (str(cls), p)
            if key in defaulted:
                sd_source = sd_fill.source or "default"
            elif key in unknown:
                sd_source = "unknown: no SD and no default policy"
            else:
                sd_source = "coefficient table" if not pd.isna(sd) else "none (zero stock)"
            rows.append(
                {
                    "site_id": site.site_id,
                    "carbon_class": cls,
                    "pool": p,
                    "stock_tc_per_ha": float(row[p]),
                    "sd_tc_per_ha": None if pd.isna(sd) else float(sd),
                    "sd_source": sd_source,
                    "growth_curve": _growth_curve(row, p, dyn),
                    "source": str(row[f"source_{p}"]),
                    "coefficient_set": coefficients.name,
                }
            )
    return pd.DataFrame(rows, columns=["site_id", "carbon_class", "pool", "stock_tc_per_ha", "sd_tc_per_ha", "sd_source",
                                       "growth_curve", "source", "coefficient_set"])


def _provenance(site: Site, year_meta: dict[int, YearPlan], coefficients: CoefficientSet, grid: Grid,
                ref_year: int, site_area_ha: float, start: int) -> dict[str, Any]:
    return {
        "site_id": site.site_id,
        "site_geometry_sha256": site.geometry_sha256,
        "site_area_ha": site_area_ha,
        "period_start": start,
        "coefficient_set": coefficients.name,
        "coefficient_sha256": coefficients.sha256,
        "reference_grid": {
            "year": ref_year,
            "crs": grid.crs.to_wkt(),
            "transform": list(grid.transform)[:6],
            "width": grid.width,
            "height": grid.height,
        },
        "years": {
            str(y): {
                "legend": m.legend,
                "crosswalk": m.crosswalk.path,
                "crosswalk_sha256": m.crosswalk.sha256,
                "rasters": [i.path for i in m.infos],
                "codes_read_sha256": m.digest.hexdigest(),
            }
            for y, m in sorted(year_meta.items())
        },
    }

