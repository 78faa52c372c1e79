"""Per-site accounting: rasters -> class areas and transitions -> stocks and sinks.

One pass over the site's window of the reference grid, in row strips: for each strip,
the exact coverage of every cell by the site polygon, the ellipsoidal area of every
cell, and each year's codes aligned to the grid. Weighted histograms accumulate the
area by source code per year and the class-to-class transition areas per period; all
tables follow from those (stocks are linear in areas). Memory is bounded by the strip
size, never by the raster size.
"""

from __future__ import annotations

import hashlib
import os
import queue
import uuid
from collections import defaultdict
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely
import xarray as xr

from carbon import accounting, dynamics, kernels, uncertainty
from carbon.area import AreaModel
from carbon.constants import CARBON_CLASSES, CO2_PER_C, INVEST_LEGEND, POOLS
from carbon.coverage import coverage_fraction, rows_inside
from carbon.errors import CarbonSinkError, InputError
from carbon.rasters import Grid, RasterInfo, YearReader, inspect_raster, intersects, nominal_pixel_area_m2, site_grid, to_crs
from carbon.sites import Site
from carbon.tables import CatalogEntry, CoefficientSet, Crosswalk, code_offset, code_table, invest_crosswalk, load_crosswalk

#: Cells per strip: bounds the memory of one site, whatever the raster size.
DEFAULT_MAX_CELLS = 262_144
#: Strips that only add totals (stock difference without maps) hold just the codes: larger.
TOTALS_STRIP_FACTOR = 4
M2_PER_HA = 10_000.0


@dataclass
class SiteResult:
    """Every table of one site, validated against schemas/outputs.py before it is returned."""

    site_id: str
    stocks: pd.DataFrame
    stocks_by_class: pd.DataFrame
    area_by_code: pd.DataFrame
    sinks: pd.DataFrame
    transitions: pd.DataFrame
    coefficients_used: pd.DataFrame
    provenance: dict[str, Any] = field(default_factory=dict)
    stock: xr.DataArray | None = field(default=None, repr=False)  # (year, carbon_class, pool), t C
    aggregates: dynamics.Aggregates | None = field(default=None, repr=False)  # areas by class, age, transition
    coefficients: dynamics.Coefficients | None = field(default=None, repr=False)

    def tables(self) -> dict[str, pd.DataFrame]:
        return {
            "stocks": self.stocks,
            "stocks_by_class": self.stocks_by_class,
            "area_by_code": self.area_by_code,
            "sinks": self.sinks,
            "transitions": self.transitions,
            "coefficients_used": self.coefficients_used,
        }


@dataclass
class _Year:
    year: int
    legend: str
    crosswalk: Crosswalk
    infos: list[RasterInfo]
    class_of_code: np.ndarray  # class index per crosswalk row
    area_ha: np.ndarray = field(init=False)
    pixels: np.ndarray = field(init=False)
    nodata_ha: float = 0.0
    digest: Any = field(default_factory=hashlib.sha256)

    def __post_init__(self) -> None:
        self.area_ha = np.zeros(len(self.crosswalk.codes), dtype=np.float64)
        self.pixels = np.zeros(len(self.crosswalk.codes), dtype=np.int64)


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
) -> SiteResult:
    """Stocks, sinks and transitions of one site from every catalog year that covers it.

    ``years`` restricts the map years (each must be in the catalog and cover the site);
    ``start_year`` overrides the start of the whole period (default: the site's
    ``baseline_year``, else its first map year); ``method`` overrides the site's ``method``
    property (docs/methods.md §9). With ``maps_dir``, per-year stock density maps and the
    change map are written there as Cloud-Optimized GeoTIFFs. ``draws`` Monte Carlo draws
    give every stock and sink its interval; ``conservative_rule`` (``ar_tool14`` or
    ``lower90``) makes the conservative sink (docs/methods.md §10).
    """
    from schemas.outputs import validate_site_result  # noqa: PLC0415 (schemas import carbon.constants)

    year_meta = plan_site(site, catalog, coefficients, legends_dir, years)
    year_list = sorted(year_meta)
    start = start_year if start_year is not None else (site.baseline_year or year_list[0])
    if start not in year_meta:
        raise InputError(
            f"the period start {start} has no land-cover map covering the site (map years: {year_list})",
            site_id=site.site_id,
        )
    period_list = accounting.periods(year_list, start)
    dyn = site_dynamics(site, coefficients, method)

    class_names = _class_names(coefficients, year_meta)
    ref_year, ref_info = _reference(site, year_meta)
    geom_ref = to_crs(site.geometry, site.crs, ref_info.crs)
    grid = site_grid(ref_info, geom_ref)

    plan = _Plan.build(year_meta, year_list, period_list, class_names, dyn, grid, geom_ref, max_cells, ref_info)
    map_writer = None
    with ExitStack() as stack:
        if maps_dir is not None:
            from carbon.maps import DensityMapWriter  # noqa: PLC0415

            # classes absent from the table get NaN here; the strict lookup below then
            # fails and the writer discards the maps
            ecozone_maps = None if coefficients.is_invest else site.ecozone
            map_coef = _coefficient_arrays(coefficients.densities(ecozone_maps, class_names, strict=False))
            map_writer = stack.enter_context(DensityMapWriter(Path(maps_dir), site.site_id, grid, year_list, start))
            part = _process_rows(plan, 0, grid.height, map_writer=map_writer, map_coef=map_coef)
        else:
            part = _process_chunks(plan)

        if part.unknown.any():
            unknown = _unknown_codes(plan)
            problems = [
                f"{path}: codes {sorted(codes)} are in no row of the {_legend_of(year_meta, path)!r} crosswalk"
                for path, codes in sorted(unknown.items())
            ]
            raise InputError("land-cover codes without a carbon class", site_id=site.site_id, problems=problems)
        site_area_ha = part.site_ha
        for i, y in enumerate(year_list):
            meta = year_meta[y]
            n = len(meta.crosswalk.codes)
            meta.area_ha += part.code_area[i, :n]
            meta.pixels += part.pixels[i, :n]
            meta.nodata_ha += float(part.nodata_ha[i])
            meta.digest.update(b"".join(part.digests[i]))
        agg = part.agg if part.agg is not None else plan.stock_difference_aggregates(part)
        if site_area_ha == 0:
            raise InputError("the site polygon covers no pixel of its reference grid", site_id=site.site_id)
        empty = [y for y in year_list if year_meta[y].area_ha.sum() == 0]
        if empty:
            raise InputError(
                f"no land-cover data inside the site in map year(s) {empty} (rasters cover its bounding box only, "
                "or are nodata there): choose the years to use",
                site_id=site.site_id,
            )
        ecozone = None if coefficients.is_invest else site.ecozone
        area = dynamics.class_area(agg, class_names)
        present = [c for c, a in zip(class_names, area.sum("year").values, strict=True) if a > 0]
        densities = coefficients.densities(ecozone, present, site_id=site.site_id)

    coef = _coefficient_arrays(densities.reindex(class_names))
    nodata = xr.DataArray([year_meta[y].nodata_ha for y in year_list], dims="year", coords={"year": year_list})
    stock = dynamics.year_stocks(agg, coef)
    stocks, by_class = accounting.stock_tables(site.site_id, stock, area, nodata)
    full = (start, year_list[-1]) if start < year_list[-1] else None
    sinks = accounting.sink_table(site.site_id, period_list, dynamics.period_flows(agg, coef), site_area_ha, full)
    trans = accounting.transition_table(site.site_id, period_list, agg.transitions, class_names)

    provenance = _provenance(site, year_meta, coefficients, grid, ref_year, site_area_ha, start)
    provenance["method"] = dyn.method
    provenance["initial_age"] = dyn.initial_age
    provenance["flicker_filtered_ha"] = {str(y): a for y, a in agg.flicker_ha.items()}
    seed = uncertainty.seed_for(site.site_id, coefficients.sha256, dyn.method, str(dyn.initial_age), str(period_list),
                                *[year_meta[y].digest.hexdigest() for y in year_list])
    provenance["monte_carlo"] = {"draws": draws, "seed": seed, "conservative_rule": conservative_rule}
    _add_uncertainty(stocks, sinks, agg, coef, draws=draws, rule=conservative_rule, seed=seed)
    for df in (stocks, sinks):
        df["method"] = dyn.method
        df["coefficient_set"] = coefficients.name
        df["coefficient_sha256"] = coefficients.sha256
    stocks["legend"] = [year_meta[y].legend for y in stocks["year"]]
    result = SiteResult(
        site_id=site.site_id,
        stocks=stocks,
        stocks_by_class=by_class,
        area_by_code=_area_by_code(site.site_id, year_meta),
        sinks=sinks,
        transitions=trans,
        coefficients_used=_coefficients_used(site, densities, coefficients),
        provenance=provenance,
        stock=stock,
        aggregates=agg,
        coefficients=coef,
    )
    validate_site_result(result)
    return result


#: Cells per chunk of a large site: chunks are read and accumulated on separate threads
#: (the kernel and GDAL release the GIL), each in strips of ``max_cells``.
CHUNK_CELLS = 4_194_304
#: Chunk height unit when the reference raster's own block height is unusable.
CHUNK_ROW_ALIGN = 256
#: Threads for the chunks of one site (default: the machine's cores, at most 4; each holds a strip).
THREADS = int(os.environ.get("CARBON_SINK_THREADS", "0")) or min(4, os.cpu_count() or 1)
_NO_COVERAGE = np.ones((1, 1))  # the kernel's coverage argument when every cell is inside


@dataclass
class _Partial:
    """What a block of rows adds to a site: every field is a sum, so blocks combine in any
    grouping (they are combined in row order, so results do not depend on threads)."""

    site_ha: float
    code_area: np.ndarray  # (year, crosswalk row) ha
    pixels: np.ndarray  # (year, crosswalk row)
    nodata_ha: np.ndarray  # (year,)
    unknown: np.ndarray  # (year,) valid pixels whose code no crosswalk row has
    trans: np.ndarray  # (period, class, class) ha; stock difference without maps only
    digests: list[list[bytes]]  # per year, the SHA-256 of each row's codes and validity, in row order
    agg: dynamics.Aggregates | None  # gain-loss, or any method with maps: the per-pixel history

    def __add__(self, other: _Partial) -> _Partial:
        if self.agg is not None and other.agg is not None:
            self.agg.merge(other.agg)
        return _Partial(
            self.site_ha + other.site_ha, self.code_area + other.code_area, self.pixels + other.pixels,
            self.nodata_ha + other.nodata_ha, self.unknown + other.unknown, self.trans + other.trans,
            [a + b for a, b in zip(self.digests, other.digests, strict=True)], self.agg,
        )


@dataclass
class _Plan:
    """Everything the strips of one site share (read-only once built)."""

    year_meta: dict[int, _Year]
    years: list[int]
    periods: list[tuple[int, int]]
    n_classes: int
    dyn: dynamics.Dynamics
    grid: Grid
    geom: Any
    max_cells: int
    areas: AreaModel
    codes_dtype: np.dtype
    tables: np.ndarray  # (year, possible raw value) crosswalk row; >= n_codes: unknown
    offsets: np.ndarray  # (year,) added to a raw code before the table look-up
    n_codes: np.ndarray  # (year,)
    class_of_code: np.ndarray  # (year, crosswalk row) class index
    period_index: np.ndarray  # (period, 2) year indices
    direct: bool  # raw codes index the tables (8/16-bit); otherwise codes are looked up first
    ref: RasterInfo  # the raster whose grid the site grid is a window of
    key: str = field(default_factory=lambda: uuid.uuid4().hex)  # names this site's tasks in a Dask graph
    reader_sets: queue.Queue = field(default_factory=queue.Queue, repr=False)  # open rasters lent to tasks

    @classmethod
    def build(cls, year_meta: dict[int, _Year], years: list[int], periods: list[tuple[int, int]],
              class_names: list[str], dyn: dynamics.Dynamics, grid: Grid, geom: Any, max_cells: int,
              ref: RasterInfo) -> _Plan:
        dtypes = [np.dtype(i.dtype) for y in years for i in year_meta[y].infos]
        dtype = np.result_type(*dtypes)
        n_codes = np.array([len(year_meta[y].crosswalk.codes) for y in years], dtype=np.int64)
        width = int(n_codes.max())
        class_of_code = np.zeros((len(years), width), dtype=np.int64)
        for i, y in enumerate(years):
            class_of_code[i, : n_codes[i]] = year_meta[y].class_of_code
        direct = dtype.kind in "ui" and dtype.itemsize <= 2
        if direct:
            tables = np.stack([code_table(year_meta[y].crosswalk.codes, dtype.str) for y in years]).astype(np.int64)
            offset = code_offset(dtype)
        else:  # codes are replaced by their crosswalk rows (n_codes: unknown) before the kernel
            tables = np.tile(np.arange(width + 1, dtype=np.int64), (len(years), 1))
            offset = 0
        index = {y: i for i, y in enumerate(years)}
        shapely.prepare(geom)  # many containment tests, from several threads
        return cls(year_meta, years, periods, len(class_names), dyn, grid, geom, max(1, max_cells),
                   AreaModel(grid.crs, grid.transform, grid.height, grid.width), dtype, tables,
                   np.full(len(years), offset, dtype=np.int64), n_codes, class_of_code,
                   np.array([[index[a], index[b]] for a, b in periods], dtype=np.int64).reshape(-1, 2), direct, ref)

    def empty(self, with_agg: bool) -> _Partial:
        y, k = len(self.years), self.n_classes
        width = self.class_of_code.shape[1]
        return _Partial(0.0, np.zeros((y, width)), np.zeros((y, width), dtype=np.int64), np.zeros(y),
                        np.zeros(y, dtype=np.int64), np.zeros((len(self.periods), k, k)), [[] for _ in self.years],
                        dynamics.Aggregates(k, self.years, self.periods) if with_agg else None)

    def class_areas(self, code_area: np.ndarray) -> np.ndarray:
        """(year, class) ha from (year, crosswalk row) ha."""
        return np.stack([np.bincount(self.class_of_code[i, : self.n_codes[i]],
                                     weights=code_area[i, : self.n_codes[i]], minlength=self.n_classes)
                         for i in range(len(self.years))])

    def stock_difference_aggregates(self, part: _Partial) -> dynamics.Aggregates:
        agg = dynamics.Aggregates(self.n_classes, self.years, self.periods)
        agg.add_totals(self.class_areas(part.code_area), {p: part.trans[i] for i, p in enumerate(self.periods)})
        return agg


def _strip_rows(plan: _Plan, write: bool) -> int:
    # the per-pixel history holds several arrays per cell; totals alone hold the codes only,
    # TOTALS_STRIP_FACTOR * max_cells cells over two years, fewer per year when there are more
    if write:
        cells = plan.max_cells
    else:
        cells = TOTALS_STRIP_FACTOR * plan.max_cells * 2 // max(2, len(plan.years))
    return max(1, cells // plan.grid.width)


def _chunk_bounds(plan: _Plan) -> list[int]:
    """Row bounds of the chunks of a large site: about ``CHUNK_CELLS`` each, cut where the
    reference raster's blocks (tiles) are cut, so no tile is decoded by two chunks."""
    g, ref = plan.grid, plan.ref
    align = ref.block_height if 1 <= ref.block_height <= 4096 else CHUNK_ROW_ALIGN
    rows = max(align, (CHUNK_CELLS // g.width) // align * align)
    phase = round((g.transform.f - ref.transform.f) / ref.transform.e) % align  # grid row 0 in the raster
    first = rows - phase if rows > phase else rows + align - phase
    bounds = [0, *range(first, g.height, rows)]
    return [*bounds, g.height] if bounds[-1] != g.height else bounds


def site_landcover(plan: _Plan, chunks: int | list[int]) -> xr.Dataset:
    """The site's land cover on its reference grid as a lazy, dask-chunked Dataset: ``code``
    (year, y, x; the raw codes of each year's mosaic) and ``valid`` (False where no raster
    has data), in chunks of whole rows: ``chunks`` rows each, or between the given row
    bounds. Each chunk is read (all years at once) only when computed."""
    import dask  # noqa: PLC0415
    import dask.array as da  # noqa: PLC0415

    g = plan.grid
    n_years = len(plan.years)
    bounds = chunks if isinstance(chunks, list) else [*range(0, g.height, chunks), g.height]
    codes, valid = [], []
    for r0, r1 in zip(bounds[:-1], bounds[1:], strict=True):
        n = r1 - r0
        block = dask.delayed(_read_block, pure=True, traverse=False)(plan, r0, n,
                                                                     dask_key_name=f"read-{plan.key}-{r0}")
        codes.append(da.from_delayed(block[0], (n_years, n, g.width), dtype=plan.codes_dtype))
        valid.append(da.from_delayed(block[1], (n_years, n, g.width), dtype=bool))
    t = g.transform
    coords = {"year": plan.years, "y": t.f + t.e * (np.arange(g.height) + 0.5),
              "x": t.c + t.a * (np.arange(g.width) + 0.5)}
    return xr.Dataset({"code": (("year", "y", "x"), da.concatenate(codes, axis=1)),
                       "valid": (("year", "y", "x"), da.concatenate(valid, axis=1))}, coords=coords)


def _read_block(plan: _Plan, row0: int, nrows: int) -> tuple[np.ndarray, np.ndarray]:
    with ExitStack() as stack:
        return _read_rows(plan, [YearReader(plan.year_meta[y].infos, plan.grid, stack) for y in plan.years],
                          row0, nrows)


def _read_rows(plan: _Plan, readers: list[YearReader], row0: int, nrows: int) -> tuple[np.ndarray, np.ndarray]:
    """Every year's codes and validity of rows ``row0 .. row0 + nrows``: (year, rows, columns)."""
    raw = np.empty((len(plan.years), nrows, plan.grid.width), dtype=plan.codes_dtype)
    valid = np.empty(raw.shape, dtype=bool)
    for i, reader in enumerate(readers):
        reader.read_into(row0, nrows, raw[i], valid[i])
    return raw, valid


def _process_chunks(plan: _Plan) -> _Partial:
    """The whole site, strip by strip; a large one (more than ``CHUNK_CELLS`` cells) in
    chunks of rows cut where the reference raster's tiles are (the chunks of
    :func:`site_landcover`), accumulated on Dask's threaded scheduler, their partial sums
    added pairwise in row order."""
    g = plan.grid
    if g.width * g.height <= CHUNK_CELLS or THREADS == 1:
        return _process_rows(plan, 0, g.height)
    import dask  # noqa: PLC0415
    import dask.threaded  # noqa: PLC0415

    bounds = _chunk_bounds(plan)
    parts = [dask.delayed(_process_chunk, pure=True)(plan, r0, r1, dask_key_name=f"sum-{plan.key}-{r0}")
             for r0, r1 in zip(bounds[:-1], bounds[1:], strict=True)]
    while len(parts) > 1:  # a balanced tree: partial sums are freed as soon as they are added
        parts = [dask.delayed(_add)(parts[i], parts[i + 1]) if i + 1 < len(parts) else parts[i]
                 for i in range(0, len(parts), 2)]
    with ExitStack() as stack:
        # one set of open rasters per thread, lent to a task for all its strips (a dataset is
        # used by one thread at a time; consecutive strips then share GDAL's cached tiles), with
        # the thread's own copy of the site polygon (GEOS prepared geometries are not shared)
        for _ in range(THREADS):
            geom = shapely.from_wkb(shapely.to_wkb(plan.geom))
            shapely.prepare(geom)
            plan.reader_sets.put(([YearReader(plan.year_meta[y].infos, g, stack) for y in plan.years], geom))
        # a failed chunk comes back as a value, so every task has ended before the rasters close
        (total,) = dask.compute(parts[0], scheduler=dask.threaded.get, num_workers=THREADS)
    if isinstance(total, BaseException):
        raise total
    return total


def _add(a: _Partial | BaseException, b: _Partial | BaseException) -> _Partial | BaseException:
    if isinstance(a, BaseException):
        return a
    if isinstance(b, BaseException):
        return b
    return a + b


def _process_chunk(plan: _Plan, row0: int, row1: int) -> _Partial | Exception:
    """Rows ``row0 .. row1`` on this thread, strip by strip, with a set of open rasters lent
    for the whole chunk (consecutive strips share GDAL's cached tiles)."""
    readers, geom = plan.reader_sets.get()
    try:
        return _process_rows(plan, row0, row1, readers=readers, geom=geom)
    except Exception as exc:  # noqa: BLE001 - raised by _process_chunks once every chunk has ended
        return exc
    finally:
        plan.reader_sets.put((readers, geom))


def _process_rows(plan: _Plan, row0: int, row1: int, map_writer: Any = None, map_coef: Any = None,
                  readers: list[YearReader] | None = None, geom: Any = None) -> _Partial:
    """Rows ``row0 .. row1`` of the site grid, strip by strip (docs/methods.md §3-§5), read
    with ``readers`` (one per year) or with rasters opened here; ``geom``: this thread's copy
    of the site polygon."""
    g = plan.grid
    geom = plan.geom if geom is None else geom
    method = plan.dyn.method
    write = map_writer is not None or method != "stock_difference"
    strip_areas = write and method == "stock_difference"
    part = plan.empty(write)
    periods = plan.period_index[:0] if write else plan.period_index  # with classes, Aggregates counts transitions
    n_years = len(plan.years)
    rows_per_strip = _strip_rows(plan, write)
    with ExitStack() as stack:
        if readers is None:
            readers = [YearReader(plan.year_meta[y].infos, g, stack) for y in plan.years]
        for row_off in range(row0, row1, rows_per_strip):
            nrows = min(rows_per_strip, row1 - row_off)
            everywhere = rows_inside(geom, g, row_off, nrows)
            if everywhere:  # whole rows inside the site: no coverage array, no masking
                cov, inside = _NO_COVERAGE, None
            else:
                cov = coverage_fraction(geom, g, row_off, nrows)
                inside = cov > 0
                if not inside.any():
                    if map_writer is not None:
                        map_writer.write_empty(row_off, nrows)
                    continue
            raw, valid = _read_rows(plan, readers, row_off, nrows)
            # the digest of the codes read (the seed of the draws) goes row by row over the rows
            # that reach into the site, so it does not depend on strips, chunks or threads
            rows = range(nrows) if inside is None else np.flatnonzero(inside.any(axis=1))
            for i in range(n_years):
                for r in rows:
                    h = hashlib.sha256(raw[i, r])
                    h.update(np.packbits(valid[i, r]))
                    part.digests[i].append(h.digest())
            if plan.direct:
                codes = raw
            else:  # wide codes: their crosswalk rows (n_codes where unknown) go to the kernel
                codes = np.empty(raw.shape, dtype=np.int64)
                for i, y in enumerate(plan.years):
                    idx, known = plan.year_meta[y].crosswalk.lookup(raw[i])
                    codes[i] = np.where(known, idx, plan.n_codes[i])
            strip = plan.areas.strip(row_off, nrows)
            n = nrows * g.width if write else 0
            classes = np.empty((n_years, n), dtype=np.int32)
            weight = np.empty(n)
            # stock difference with maps takes the strip's class areas from its code areas
            code_area = np.zeros_like(part.code_area) if strip_areas else part.code_area
            part.site_ha += kernels.accumulate_strip(
                codes, valid, plan.tables, plan.offsets, plan.n_codes, plan.class_of_code,
                strip.row_m2, strip.ratio, strip.j, strip.t, cov, not everywhere, periods,
                code_area, part.pixels, part.nodata_ha, part.unknown, part.trans, classes, weight, write)
            if not write:
                continue
            if strip_areas:
                part.code_area += code_area
            if part.unknown.any():
                continue  # the site fails: the codes are listed by _unknown_codes
            if not everywhere:
                flat = inside.reshape(-1)
                classes, weight = classes[:, flat], weight[flat]
            on_year = None
            if map_writer is not None:
                if inside is None:
                    inside = np.ones((nrows, g.width), dtype=bool)

                def on_year(y: int, ages: np.ndarray, lam: np.ndarray | None, *, _c=classes, _r=row_off, _n=nrows,
                            _inside=inside) -> None:
                    density = dynamics.pixel_density(_c[plan.years.index(y)], ages, map_coef, lam)
                    map_writer.write_year(y, _r, _n, _inside, density)
            assert part.agg is not None
            part.agg.add(classes, weight, plan.dyn, on_year=on_year,
                         year_area=plan.class_areas(code_area) if strip_areas else None)
    return part


def _unknown_codes(plan: _Plan) -> dict[str, set[int]]:
    """Codes inside the site that no crosswalk row has, by raster file (the error path)."""
    g = plan.grid
    found: dict[str, set[int]] = defaultdict(set)
    rows_per_strip = max(1, plan.max_cells // g.width)
    with ExitStack() as stack:
        for y in plan.years:
            meta = plan.year_meta[y]
            reader = YearReader(meta.infos, g, stack)
            for row_off in range(0, g.height, rows_per_strip):
                nrows = min(rows_per_strip, g.height - row_off)
                inside = coverage_fraction(plan.geom, g, row_off, nrows) > 0
                if not inside.any():
                    continue
                codes, valid, tile = reader.read(row_off, nrows)
                _, known = meta.crosswalk.lookup(codes)
                bad = valid & ~known & inside
                for t in np.unique(tile[bad]):
                    found[meta.infos[t].path].update(np.unique(codes[bad & (tile == t)]).tolist())
    return found


def read_site_codes(site: Site, catalog: list[CatalogEntry], coefficients: CoefficientSet,
                    legends_dir: str | Path | None = None, years: list[int] | None = None,
                    ) -> tuple[Grid, Any, dict[int, tuple[np.ndarray, np.ndarray, Crosswalk]]]:
    """The site's reference grid, its polygon in that grid's CRS, and per year the codes and
    validity of the whole window with the year's crosswalk (for figures: small sites only)."""
    year_meta = plan_site(site, catalog, coefficients, legends_dir, years)
    _, ref_info = _reference(site, year_meta)
    geom_ref = to_crs(site.geometry, site.crs, ref_info.crs)
    grid = site_grid(ref_info, geom_ref)
    out = {}
    with ExitStack() as stack:
        for y, meta in sorted(year_meta.items()):
            codes, valid, _ = YearReader(meta.infos, grid, stack).read(0, grid.height)
            out[y] = (codes, valid, meta.crosswalk)
    return grid, geom_ref, out


def default_method(coefficients: CoefficientSet) -> str:
    """gain_loss with a coefficient table (young stands grow, soils move over 20 years);
    stock_difference with an InVEST pools table, which has no growth rates (InVEST's own
    method, so InVEST inputs give InVEST's answer). docs/methods.md §9."""
    return "stock_difference" if coefficients.is_invest else "gain_loss"


def site_dynamics(site: Site, coefficients: CoefficientSet, method: str | None = None) -> dynamics.Dynamics:
    """The site's method (run override, else its ``method`` property, else the default) and
    its ``initial_age`` property (years; empty or ``mature``: mature)."""
    chosen = method or site.properties.get("method") or default_method(coefficients)
    if chosen not in dynamics.METHODS:
        raise InputError(f"unknown method {chosen!r}: use one of {', '.join(dynamics.METHODS)}", site_id=site.site_id)
    raw = site.properties.get("initial_age")
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "mature")):
        return dynamics.Dynamics(chosen, None)
    try:
        age = int(float(raw))
    except (TypeError, ValueError):
        raise InputError(f"initial_age must be a whole number of years or 'mature', not {raw!r}",
                         site_id=site.site_id) from None
    if age < 0:
        raise InputError(f"initial_age must not be negative ({age})", site_id=site.site_id)
    return dynamics.Dynamics(chosen, age)


def _coefficient_arrays(densities: pd.DataFrame) -> dynamics.Coefficients:
    stock = densities[list(POOLS)].to_numpy(dtype=np.float64)
    growth = densities[[f"growth_{p}" for p in POOLS]].to_numpy(dtype=np.float64)
    sd = densities[[f"sd_{p}" for p in POOLS]].to_numpy(dtype=np.float64)
    return dynamics.Coefficients(classes=list(densities.index), stock=np.nan_to_num(stock, nan=0.0), growth=growth,
                                 sd=sd)


def _add_uncertainty(stocks: pd.DataFrame, sinks: pd.DataFrame, agg: dynamics.Aggregates,
                     coef: dynamics.Coefficients, *, draws: int, rule: str, seed: int) -> None:
    """Monte Carlo intervals on every stock and sink row, Approach 1 beside them, and the
    conservative sink (docs/methods.md §10)."""
    if rule not in uncertainty.RULES:
        raise InputError(f"unknown conservative rule {rule!r}: use one of {', '.join(uncertainty.RULES)}")
    cv = coef.cv
    factors = uncertainty.draw_factors(cv, draws, seed)
    label = f"IPCC Approach 2: Monte Carlo, {draws} lognormal draws, coefficients correlated across pixels and years"
    by_year = uncertainty.summarize(dynamics.year_contributions(agg, coef), factors, cv)
    order = {y: i for i, y in enumerate(agg.years)}
    _put(stocks, "stock_tc", by_year, [order[y] for y in stocks["year"]])
    stocks["uncertainty_method"] = label
    if sinks.empty:  # a single map year: no period, but the same columns
        for f in ("mean", "median", "lower90", "upper90", "lower95", "upper95", "u90_pct", "u95_pct",
                  "u95_pct_approach1"):
            sinks[f"sink_tco2e_{f}"] = pd.Series(dtype=float)
        sinks["conservative_sink_tco2e"] = pd.Series(dtype=float)
        sinks["conservative_rule"] = pd.Series(dtype=str)
        sinks["uncertainty_method"] = pd.Series(dtype=str)
        return
    start, end = dynamics.period_contributions(agg, coef)
    by_period = uncertainty.summarize(end - start, factors, cv, scale=CO2_PER_C)
    index = {p: i for i, p in enumerate(agg.periods)}
    _put(sinks, "sink_tco2e", by_period, [index[(a, b)] for a, b in zip(sinks["period_start"], sinks["period_end"],
                                                                          strict=True)])
    sinks["conservative_sink_tco2e"] = [
        uncertainty.conservative_sink(r.sink_tco2e, r.sink_tco2e_lower90, r.sink_tco2e_upper90, r.sink_tco2e_u90_pct,
                                      rule)
        for r in sinks.itertuples()
    ]
    sinks["conservative_rule"] = rule
    sinks["uncertainty_method"] = label


def _put(df: pd.DataFrame, name: str, summary: uncertainty.Summary, rows: list[int]) -> None:
    for field_name in ("mean", "median", "lower90", "upper90", "lower95", "upper95", "u90_pct", "u95_pct",
                       "u95_pct_approach1"):
        df[f"{name}_{field_name}"] = np.asarray(getattr(summary, field_name))[rows]


# --- helpers -----------------------------------------------------------------------------


def plan_site(
    site: Site,
    catalog: list[CatalogEntry],
    coefficients: CoefficientSet,
    legends_dir: str | Path | None = None,
    years: list[int] | None = None,
) -> dict[int, _Year]:
    """The map years of a site: for each, the rasters that cover it and its crosswalk.

    Reads raster headers only; raises InputError for a site outside every raster, a
    requested year absent from the catalog, or legends that do not fit the coefficients.
    """
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
    out: dict[int, _Year] = {}
    geoms: dict[str, Any] = {}
    for y in wanted:
        infos = []
        for e in by_year[y]:
            info = inspect_raster(e.path)
            key = info.crs.to_wkt()
            if key not in geoms:
                geoms[key] = to_crs(site.geometry, site.crs, info.crs)
            if intersects(info, geoms[key]):
                infos.append((e, info))
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
        out[y] = _Year(year=y, legend=legend, crosswalk=crosswalks[legend], infos=[i for _, i in infos],
                       class_of_code=np.zeros(0, dtype=np.int64))
    if not out:
        raise InputError(
            "the site lies outside every raster of the land-cover catalog", site_id=site.site_id
        )
    return out


def _class_names(coefficients: CoefficientSet, year_meta: dict[int, _Year]) -> list[str]:
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


def _reference(site: Site, year_meta: dict[int, _Year]) -> tuple[int, RasterInfo]:
    """Reference grid: the finest pixel at the site (ties: the earliest year, first tile)."""
    best: tuple[float, int, int] | None = None
    choice: tuple[int, RasterInfo] | None = None
    for y in sorted(year_meta):
        for i, info in enumerate(year_meta[y].infos):
            area = nominal_pixel_area_m2(info, to_crs(site.geometry, site.crs, info.crs))
            key = (round(area, 6), y, i)
            if best is None or key < best:
                best, choice = key, (y, info)
    assert choice is not None
    return choice


def _area_by_code(site_id: str, year_meta: dict[int, _Year]) -> pd.DataFrame:
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


def _coefficients_used(site: Site, densities: pd.DataFrame, coefficients: CoefficientSet) -> pd.DataFrame:
    rows = []
    for cls in densities.index:
        for p in POOLS:
            sd = densities.loc[cls, f"sd_{p}"]
            rows.append(
                {
                    "site_id": site.site_id,
                    "carbon_class": cls,
                    "pool": p,
                    "stock_tc_per_ha": float(densities.loc[cls, p]),
                    "sd_tc_per_ha": None if pd.isna(sd) else float(sd),
                    "source": str(densities.loc[cls, f"source_{p}"]),
                    "coefficient_set": coefficients.name,
                }
            )
    return pd.DataFrame(rows, columns=["site_id", "carbon_class", "pool", "stock_tc_per_ha", "sd_tc_per_ha", "source", "coefficient_set"])


def _legend_of(year_meta: dict[int, _Year], path: str) -> str:
    for m in year_meta.values():
        if any(i.path == path for i in m.infos):
            return m.legend
    return "?"


def _provenance(site: Site, year_meta: dict[int, _Year], coefficients: CoefficientSet, grid: Grid,
                ref_year: int, site_area_ha: float, start: int) -> dict[str, Any]:
    return {
        "site_id": site.site_id,
        "site_geometry_sha256": hashlib.sha256(site.geometry_wkb + site.crs.to_wkt().encode()).hexdigest(),
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


# --- whole-configuration entry point -----------------------------------------------------


@dataclass
class RunResult:
    """Results of several sites: the ones that computed, and the error of each that failed."""

    results: dict[str, SiteResult]
    errors: dict[str, str]

    def table(self, name: str) -> pd.DataFrame:
        frames = [r.tables()[name] for r in self.results.values()]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def compute_config(config: Any, site_ids: list[str] | None = None, *, maps: bool = False,
                   method: str | None = None, max_cells: int = DEFAULT_MAX_CELLS) -> RunResult:
    """Validated tables for every site of a configuration (or the listed ones).

    Inputs shared by all sites (sites file, catalog, coefficients) must be valid or
    nothing runs; a site whose own inputs are bad fails alone and is reported.
    """
    from carbon.config import Config, load_config  # noqa: PLC0415
    from carbon.sites import load_sites, select_sites  # noqa: PLC0415
    from carbon.tables import load_catalog, load_coefficients  # noqa: PLC0415

    cfg = config if isinstance(config, Config) else load_config(config)
    sites = select_sites(load_sites(cfg.sites), site_ids)
    catalog = load_catalog(cfg.landcover)
    coefficients = load_coefficients(cfg.coefficients)
    results: dict[str, SiteResult] = {}
    errors: dict[str, str] = {}
    for site in sites:
        try:
            results[site.site_id] = compute_site(
                site, catalog, coefficients, legends_dir=cfg.legends, method=method,
                draws=cfg.monte_carlo_draws, conservative_rule=cfg.conservative_rule,
                maps_dir=cfg.output_dir / "maps" / site.site_id if maps else None, max_cells=max_cells,
            )
        except CarbonSinkError as exc:
            errors[site.site_id] = str(exc)
        except Exception as exc:  # noqa: BLE001 - an unforeseen failure fails this site alone, named
            errors[site.site_id] = f"unexpected {type(exc).__name__}: {exc}"
    return RunResult(results=results, errors=errors)
