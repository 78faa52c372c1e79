"""Planning a site: which rasters of which map years cover it, with their crosswalks, and
its carbon classes; a sliver or a site too large to scan is refused here. Reads raster
headers only (docs/methods.md §2, §5; docs/data-contracts.md, Sites)."""

from __future__ import annotations

import hashlib
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from carbon.errors import InputError
from carbon.io.maps import decimated_grid
from carbon.io.rasters import YearReader, examine_raster
from carbon.io.tables import load_accuracy, load_crosswalk
from carbon.rules import policies
from carbon.rules.accuracy import AccuracySample
from carbon.rules.coefficients import (
    CatalogEntry,
    CoefficientSet,
    Crosswalk,
    invest_crosswalk,
)
from carbon.rules.grid import Grid, RasterInfo, shifts_meeting, site_grid, to_crs
from carbon.rules.site import Site, SiteLimits, check_site_area
from carbon.rules.vocabulary import CARBON_CLASSES, INVEST_LEGEND


@dataclass
class YearPlan:
    year: int
    legend: str
    crosswalk: Crosswalk
    infos: list[RasterInfo]
    class_of_code: np.ndarray  # class index per crosswalk row
    area_ha: np.ndarray = field(init=False)
    pixels: np.ndarray = field(init=False)
    nodata_ha: float = 0.0
    digest: Any = field(default_factory=hashlib.sha256)
    accuracy: AccuracySample | None = None  # the year's map accuracy-assessment sample (methods §8)
    accuracy_path: str | None = None

    def __post_init__(self) -> None:
        self.area_ha = np.zeros(len(self.crosswalk.codes), dtype=np.float64)
        self.pixels = np.zeros(len(self.crosswalk.codes), dtype=np.int64)

def plan_site(
    site: Site,
    catalog: list[CatalogEntry],
    coefficients: CoefficientSet,
    legends_dir: str | Path | None = None,
    years: list[int] | None = None,
    limits: SiteLimits | None = None,
) -> dict[int, YearPlan]:
    """The map years of a site: for each, the rasters that cover it and its crosswalk.

    Reads raster headers only; raises InputError for a sliver (geodesic area below
    ``limits.min_area_ha``), a site outside every raster, a site whose window on a covering
    raster's grid exceeds ``limits.max_pixels`` (:func:`check_site_pixels`), a requested year
    absent from the catalog, or legends that do not fit the coefficients. A geographic raster
    across the antimeridian from the site is matched to it a turn (360 degrees) east or west
    (``RasterInfo.shifted``), so a site across the antimeridian is read from both sides.
    """
    limits = limits or SiteLimits()
    check_site_area(site, limits)
    by_year: dict[int, list[CatalogEntry]] = defaultdict(list)
    for e in catalog:
        by_year[e.year].append(e)
    if years:
        absent = sorted(set(years) - set(by_year))
        if absent:
            raise InputError(
                f"requested year(s) {absent} absent from the land-cover catalog (catalog years: {sorted(by_year)})",
                site_id=site.site_id,
            )
    wanted = sorted(set(years) if years else set(by_year))
    crosswalks: dict[str, Crosswalk] = {}
    accuracy: dict[str, AccuracySample] = {}
    out: dict[int, YearPlan] = {}
    geoms: dict[str, Any] = {}
    for y in wanted:
        infos = []
        for e in by_year[y]:
            info, problem = examine_raster(e.path)
            if info is None:  # unreadable, or its extent unknown: it may cover the site
                assert problem is not None
                raise problem
            key = info.crs.to_wkt()
            if key not in geoms:
                geoms[key] = to_crs(site.geometry, site.crs, info.crs)
            meetings = shifts_meeting(info, geoms[key])
            if problem is not None and meetings:  # a bad raster fails only the sites it covers
                raise problem
            infos += [(e, meeting) for meeting in meetings]
        if not infos:
            if years:
                raise InputError(f"no raster of year {y} covers the site", site_id=site.site_id)
            continue
        legends = sorted({e.legend for e, _ in infos})
        if len(legends) > 1:
            raise InputError(
                f"the rasters of year {y} covering the site use different legends {legends}",
                site_id=site.site_id,
            )
        check_site_pixels(site, [(i, geoms[i.crs.to_wkt()]) for _, i in infos], limits)
        legend = legends[0]
        if coefficients.is_invest != (legend == INVEST_LEGEND):
            raise InputError(
                f"legend {legend!r} of year {y} does not fit coefficient set {coefficients.name!r}: "
                f"an InVEST pools table needs catalog legend {INVEST_LEGEND!r}, a coefficient table needs a "
                "legend crosswalk",
                site_id=site.site_id,
            )
        if legend not in crosswalks:
            crosswalks[legend] = (
                invest_crosswalk(coefficients) if coefficients.is_invest else load_crosswalk(legend, legends_dir)
            )
        samples = sorted({e.accuracy for e, _ in infos if e.accuracy is not None})
        if len(samples) > 1 or (samples and any(e.accuracy is None for e, _ in infos)):
            raise InputError(f"the rasters of year {y} covering the site name different accuracy samples "
                             f"({', '.join(samples)}, or some none): one map, one sample", site_id=site.site_id)
        sample = None
        if samples:
            if samples[0] not in accuracy:
                accuracy[samples[0]] = load_accuracy(samples[0], crosswalks[legend])
            sample = accuracy[samples[0]]
        out[y] = YearPlan(year=y, legend=legend, crosswalk=crosswalks[legend], infos=[i for _, i in infos],
                          class_of_code=np.zeros(0, dtype=np.int64), accuracy=sample,
                          accuracy_path=samples[0] if sample is not None else None)
    if not out:
        raise InputError(
            "the site lies outside every raster of the land-cover catalog", site_id=site.site_id
        )
    return out

def check_site_pixels(site: Site, rasters: list[tuple[RasterInfo, Any]], limits: SiteLimits) -> int:
    """The site's size before any pixel is read: the largest window of its bounding box on the
    grid of a raster covering it (``(info, polygon in the raster's CRS)`` pairs), in pixels; the
    reference grid is one of these windows. InputError naming the estimate and the limit when it
    is above ``limits.max_pixels``."""
    largest, where = 0, ""
    for info, geom in rasters:
        g = site_grid(info, geom)
        if g.width * g.height > largest:
            largest, where = g.width * g.height, f"{g.width:,} x {g.height:,} pixels of {info.path}"
    if largest > limits.max_pixels:
        raise InputError(f"the site is too large to scan: its bounding box covers about {largest:,} pixels "
                         f"({where}), above the limit of {limits.max_pixels:,.0f}; check its polygon and CRS, or "
                         "raise max_site_pixels in the configuration", site_id=site.site_id)
    return largest


def class_names_of(coefficients: CoefficientSet, year_meta: dict[int, YearPlan]) -> list[str]:
    if coefficients.is_invest:
        names = [str(c) for c in sorted(coefficients.table["lucode"].astype(int))]
    else:
        names = list(CARBON_CLASSES)
    pos = {c: i for i, c in enumerate(names)}
    for meta in year_meta.values():
        meta.class_of_code = np.array([pos[c] for c in meta.crosswalk.classes], dtype=np.int32)
        meta.area_ha = np.zeros(len(meta.crosswalk.codes), dtype=np.float64)
        meta.pixels = np.zeros(len(meta.crosswalk.codes), dtype=np.int64)
    return names


def reference_grid(site: Site, year_meta: dict[int, YearPlan]) -> tuple[int, RasterInfo]:
    """The site's reference raster and its year (docs/methods.md §5; rules/policies.py)."""
    return policies.reference_grid(site, {y: m.infos for y, m in year_meta.items()})


def legend_of(year_meta: dict[int, YearPlan], path: str) -> str:
    for m in year_meta.values():
        if any(i.path == path for i in m.infos):
            return m.legend
    return "?"


#: GDAL's block cache while a site's land cover is read decimated (``read_site_codes``): one
#: row of tiles of each year's raster is all the rows read at once need (the default,
#: ``carbon.io.rasters.GDAL_CACHE_MB``, would keep every tile of a large site read).
DECIMATED_READ_CACHE_MB = 16


def read_site_codes(site: Site, catalog: list[CatalogEntry], coefficients: CoefficientSet,
                    legends_dir: str | Path | None = None, years: list[int] | None = None,
                    max_px: int | None = None,
                    ) -> tuple[Grid, Any, dict[int, tuple[np.ndarray, np.ndarray, Crosswalk]]]:
    """The site's reference grid, its polygon in that grid's CRS, and per year the codes and
    validity of the whole window with the year's crosswalk (for figures).

    ``max_px``: the window decimated to at most that many pixels a side (:func:`decimated_grid`:
    the pixel at the centre of each k x k block of the reference grid, nodata where that centre
    lies beyond the grid), read one such row of the grid at a time, so that a large site is
    never held at full resolution, in a small block cache; the grid returned is still the full
    one."""
    year_meta = plan_site(site, catalog, coefficients, legends_dir, years)
    _, ref_info = reference_grid(site, year_meta)
    geom_ref = to_crs(site.geometry, site.crs, ref_info.crs)
    grid = site_grid(ref_info, geom_ref)
    shown, k = decimated_grid(grid, max_px) if max_px else (grid, 1)
    out = {}
    with ExitStack() as stack:
        readers = {y: YearReader(meta.infos, grid, stack) for y, meta in sorted(year_meta.items())}
        if k == 1:
            for y, reader in readers.items():
                codes, valid, _ = reader.read(0, grid.height)
                out[y] = (codes, valid, year_meta[y].crosswalk)
            return grid, geom_ref, out
        rows = np.arange(shown.height) * k + k // 2
        cols = np.arange(shown.width) * k + k // 2
        rows, cols = rows[rows < grid.height], cols[cols < grid.width]
        stack.enter_context(rasterio.Env(GDAL_CACHEMAX=DECIMATED_READ_CACHE_MB << 20))  # bytes (see gdal_env)
        for y, reader in readers.items():
            codes = np.zeros(shown.shape, dtype=np.result_type(*[np.dtype(i.dtype) for i in year_meta[y].infos]))
            valid = np.zeros(shown.shape, dtype=bool)
            for i, r in enumerate(rows):
                row_codes, row_valid, _ = reader.read(int(r), 1)
                codes[i, : len(cols)] = row_codes[0, cols]
                valid[i, : len(cols)] = row_valid[0, cols]
            out[y] = (codes, valid, year_meta[y].crosswalk)
    return grid, geom_ref, out
