"""Scanning a site: its reference grid in row strips (a large site in chunks of rows on
threads), each strip's coverage, pixel areas and every year's codes through the compiled
kernel, summed into class areas, transitions and the per-pixel history.

Memory is bounded by the strip size, never by the raster size (docs/methods.md §3-§5).
"""

from __future__ import annotations

import hashlib
import os
import queue
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.array as da
import numpy as np
import shapely
import xarray as xr

from carbon.errors import InputError
from carbon.io.rasters import YearReader
from carbon.pipeline.plan import YearPlan
from carbon.rules import dynamics, kernels
from carbon.rules.area import AreaModel
from carbon.rules.coefficients import (
    code_offset,
    code_table,
)
from carbon.rules.coverage import coverage_fraction, rows_inside
from carbon.rules.grid import Grid, RasterInfo, aligned_offset

#: Cells per strip: bounds the memory of one site, whatever the raster size.
DEFAULT_MAX_CELLS = 262_144

#: Strips that only add totals (stock difference without maps) hold just the codes: larger.
TOTALS_STRIP_FACTOR = 4

#: Cells per chunk of a large site: chunks are read and accumulated on separate threads
#: (the kernel and GDAL release the GIL), each in strips of ``max_cells``.
CHUNK_CELLS = 4_194_304

#: Chunk height unit when the reference raster's own block height is unusable.
CHUNK_ROW_ALIGN = 256

#: Threads for the chunks of one site (default: the machine's cores, at most 4; each holds a strip).
THREADS = int(os.environ.get("CARBON_SINK_THREADS", "0")) or min(4, os.cpu_count() or 1)

_NO_COVERAGE = np.ones((1, 1))  # the kernel's coverage argument when every cell is inside

@dataclass
class Partial:
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

    def __add__(self, other: Partial) -> Partial:
        if self.agg is not None and other.agg is not None:
            self.agg.merge(other.agg)
        return Partial(
            self.site_ha + other.site_ha, self.code_area + other.code_area, self.pixels + other.pixels,
            self.nodata_ha + other.nodata_ha, self.unknown + other.unknown, self.trans + other.trans,
            [a + b for a, b in zip(self.digests, other.digests, strict=True)], self.agg,
        )

@dataclass
class ScanPlan:
    """Everything the strips of one site share (read-only once built)."""

    year_meta: dict[int, YearPlan]
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
    def build(cls, year_meta: dict[int, YearPlan], years: list[int], periods: list[tuple[int, int]],
              class_names: list[str], dyn: dynamics.Dynamics, grid: Grid, geom: Any, max_cells: int,
              ref: RasterInfo) -> ScanPlan:
        for y in years:  # a raster matched across the antimeridian is read by pixel offsets only
            for info in year_meta[y].infos:
                if info.lon_shift and aligned_offset(info, grid) is None:
                    raise InputError(
                        f"the site crosses the antimeridian and this raster of year {y}, on its other side, is "
                        f"not on the site's reference grid ({ref.path}): resample it onto that grid's pixels",
                        path=info.path)
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

    def empty(self, with_agg: bool) -> Partial:
        y, k = len(self.years), self.n_classes
        width = self.class_of_code.shape[1]
        return Partial(0.0, np.zeros((y, width)), np.zeros((y, width), dtype=np.int64), np.zeros(y),
                        np.zeros(y, dtype=np.int64), np.zeros((len(self.periods), k, k)), [[] for _ in self.years],
                        dynamics.Aggregates(k, self.years, self.periods) if with_agg else None)

    def class_areas(self, code_area: np.ndarray) -> np.ndarray:
        """(year, class) ha from (year, crosswalk row) ha."""
        return np.stack([np.bincount(self.class_of_code[i, : self.n_codes[i]],
                                     weights=code_area[i, : self.n_codes[i]], minlength=self.n_classes)
                         for i in range(len(self.years))])

    def stock_difference_aggregates(self, part: Partial) -> dynamics.Aggregates:
        agg = dynamics.Aggregates(self.n_classes, self.years, self.periods)
        agg.add_totals(self.class_areas(part.code_area), {p: part.trans[i] for i, p in enumerate(self.periods)})
        return agg

def strip_rows(plan: ScanPlan, write: bool) -> int:
    # the per-pixel history holds several arrays per cell; totals alone hold the codes only,
    # TOTALS_STRIP_FACTOR * max_cells cells over two years, fewer per year when there are more
    if write:
        cells = plan.max_cells
    else:
        cells = TOTALS_STRIP_FACTOR * plan.max_cells * 2 // max(2, len(plan.years))
    return max(1, cells // plan.grid.width)

def chunk_bounds(plan: ScanPlan) -> list[int]:
    """Row bounds of the chunks of a large site: about ``CHUNK_CELLS`` each, cut where the
    reference raster's blocks (tiles) are cut, so no tile is decoded by two chunks."""
    g, ref = plan.grid, plan.ref
    align = ref.block_height if 1 <= ref.block_height <= 4096 else CHUNK_ROW_ALIGN
    rows = max(align, (CHUNK_CELLS // g.width) // align * align)
    phase = round((g.transform.f - ref.transform.f) / ref.transform.e) % align  # grid row 0 in the raster
    first = rows - phase if rows > phase else rows + align - phase
    bounds = [0, *range(first, g.height, rows)]
    return [*bounds, g.height] if bounds[-1] != g.height else bounds

def site_landcover(plan: ScanPlan, chunks: int | list[int]) -> xr.Dataset:
    """The site's land cover on its reference grid as a lazy, dask-chunked Dataset: ``code``
    (year, y, x; the raw codes of each year's mosaic) and ``valid`` (False where no raster
    has data), in chunks of whole rows: ``chunks`` rows each, or between the given row
    bounds. Each chunk is read (all years at once) only when computed."""

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

def _read_block(plan: ScanPlan, row0: int, nrows: int) -> tuple[np.ndarray, np.ndarray]:
    with ExitStack() as stack:
        return _read_rows(plan, [YearReader(plan.year_meta[y].infos, plan.grid, stack) for y in plan.years],
                          row0, nrows)

def _read_rows(plan: ScanPlan, readers: list[YearReader], row0: int, nrows: int,
               buffers: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every year's codes and validity of rows ``row0 .. row0 + nrows``: (year, rows, columns),
    read into ``buffers`` (flat codes and validity, room for at least ``nrows`` rows) when
    given: a previous strip's, overwritten (fresh arrays cost a page fault per 4 KiB each strip)."""
    if buffers is None:
        raw = np.empty((len(plan.years), nrows, plan.grid.width), dtype=plan.codes_dtype)
        valid = np.empty(raw.shape, dtype=bool)
    else:  # the first cells of the flat buffers, so the arrays stay C-contiguous
        shape = (len(plan.years), nrows, plan.grid.width)
        size = shape[0] * nrows * plan.grid.width
        raw, valid = buffers[0][:size].reshape(shape), buffers[1][:size].reshape(shape)
    for i, reader in enumerate(readers):
        reader.read_into(row0, nrows, raw[i], valid[i])
    return raw, valid

def scan_site(plan: ScanPlan, map_writer: Any = None, map_coef: Any = None) -> Partial:
    """The whole site, strip by strip; a large one (more than ``CHUNK_CELLS`` cells) in
    chunks of rows cut where the reference raster's tiles are (the chunks of
    :func:`site_landcover`), accumulated on ``THREADS`` threads, their partial sums added
    pairwise in row order (a balanced tree: the same sums whatever thread ran which chunk).
    ``map_writer``, ``map_coef``: see :func:`scan_rows`; the writer is then called from the
    chunks' threads (``DensityMapWriter`` with decimated maps: each strip fills its own rows)."""
    g = plan.grid
    if g.width * g.height <= CHUNK_CELLS or THREADS == 1:
        return scan_rows(plan, 0, g.height, map_writer=map_writer, map_coef=map_coef)
    bounds = chunk_bounds(plan)
    with ExitStack() as stack:
        # one set of open rasters per thread, lent to a task for all its strips (a dataset is
        # used by one thread at a time; consecutive strips then share GDAL's cached tiles), with
        # the thread's own copy of the site polygon (GEOS prepared geometries are not shared)
        for _ in range(THREADS):
            geom = shapely.from_wkb(shapely.to_wkb(plan.geom))
            shapely.prepare(geom)
            plan.reader_sets.put(([YearReader(plan.year_meta[y].infos, g, stack) for y in plan.years], geom))
        # a failed chunk comes back as a value, so every task has ended (the pool is shut down)
        # before the rasters close
        with ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="carbon-scan") as pool:
            parts: list[Partial | BaseException] = list(
                pool.map(lambda p, r0, r1: _scan_chunk(p, r0, r1, map_writer, map_coef),
                         [plan] * (len(bounds) - 1), bounds[:-1], bounds[1:]))
    while len(parts) > 1:  # the balanced tree, in row order
        parts = [_add(parts[i], parts[i + 1]) if i + 1 < len(parts) else parts[i] for i in range(0, len(parts), 2)]
    total = parts[0]
    if isinstance(total, BaseException):
        raise total
    return total

def _add(a: Partial | BaseException, b: Partial | BaseException) -> Partial | BaseException:
    if isinstance(a, BaseException):
        return a
    if isinstance(b, BaseException):
        return b
    return a + b

def _scan_chunk(plan: ScanPlan, row0: int, row1: int, map_writer: Any = None,
                map_coef: Any = None) -> Partial | Exception:
    """Rows ``row0 .. row1`` on this thread, strip by strip, with a set of open rasters lent
    for the whole chunk (consecutive strips share GDAL's cached tiles)."""
    readers, geom = plan.reader_sets.get()
    try:
        return scan_rows(plan, row0, row1, map_writer=map_writer, map_coef=map_coef, readers=readers, geom=geom)
    except Exception as exc:  # noqa: BLE001 - raised by scan_site once every chunk has ended
        return exc
    finally:
        plan.reader_sets.put((readers, geom))

def scan_rows(plan: ScanPlan, row0: int, row1: int, map_writer: Any = None, map_coef: Any = None,
                  readers: list[YearReader] | None = None, geom: Any = None) -> Partial:
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
    rows_per_strip = strip_rows(plan, write)
    size = n_years * min(rows_per_strip, max(row1 - row0, 0)) * g.width
    buffers = (np.empty(size, dtype=plan.codes_dtype), np.empty(size, dtype=bool))
    cells = size // n_years if write else 0
    pixel_buffers = (np.empty(n_years * cells, dtype=np.int32), np.empty(cells))
    scratch: dict[str, np.ndarray] = {}  # the per-pixel history's working arrays, kept from strip to strip
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
            raw, valid = _read_rows(plan, readers, row_off, nrows, buffers)
            # the digest of the codes read (the seed of the draws) goes row by row over the rows
            # that reach into the site, so it does not depend on strips, chunks or threads
            rows = range(nrows) if inside is None else np.flatnonzero(inside.any(axis=1))
            for i in range(n_years):
                packed = np.packbits(valid[i], axis=1)  # each row packed on its own, as np.packbits(row)
                digests = part.digests[i]
                codes_i = raw[i]
                for r in rows:
                    h = hashlib.sha256(codes_i[r])
                    h.update(packed[r])
                    digests.append(h.digest())
            if plan.direct:
                codes = raw
            else:  # wide codes: their crosswalk rows (n_codes where unknown) go to the kernel
                codes = np.empty(raw.shape, dtype=np.int64)
                for i, y in enumerate(plan.years):
                    idx, known = plan.year_meta[y].crosswalk.lookup(raw[i])
                    codes[i] = np.where(known, idx, plan.n_codes[i])
            strip = plan.areas.strip(row_off, nrows)
            n = nrows * g.width if write else 0
            classes = pixel_buffers[0][: n_years * n].reshape(n_years, n)  # overwritten by the kernel
            weight = pixel_buffers[1][:n]
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
                continue  # the site fails: the codes are listed by unknown_codes
            if inside is not None:  # some cells outside the site
                flat = inside.reshape(-1)
                classes, weight = classes[:, flat], weight[flat]
            on_year = None
            if map_writer is not None:
                if inside is None:
                    inside = np.ones((nrows, g.width), dtype=bool)

                def on_year(y: int, cls: np.ndarray, ages: np.ndarray, lam: np.ndarray | None,
                            spans: np.ndarray | None, *, _r: int = row_off, _n: int = nrows,
                            _inside: np.ndarray = inside) -> None:
                    # the classes as the history reads them (flicker filtered), with their ages;
                    # only at the pixels the maps keep (decimated maps: carbon/io/maps.py)
                    at = map_writer.pixels(_r, _n, _inside)
                    if at is not None:
                        cls, ages = cls[at], ages[at]
                        lam = None if lam is None else lam[at]
                        spans = None if spans is None else spans[at]
                    density = dynamics.pixel_density(cls, ages, map_coef, lam, spans)
                    map_writer.write_year(y, _r, _n, _inside, density, taken=at is not None)
            assert part.agg is not None
            part.agg.add(classes, weight, plan.dyn, on_year=on_year,
                         year_area=plan.class_areas(code_area) if strip_areas else None, scratch=scratch)
    return part

def unknown_codes(plan: ScanPlan) -> dict[str, set[int]]:
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
