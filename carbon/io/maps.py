"""Per-pixel outputs: stock density per year (t C/ha) and its change, as Cloud-Optimized GeoTIFFs.

Maps asked for (``runs/<run_id>/maps``) are full resolution: written strip by strip into tiled
GeoTIFFs and then copied to the COG layout, with overviews (``COG_OVERVIEWS``), so memory
stays bounded. Maps written only for a site's report (``runs/<run_id>/report-maps``,
``carbon/io/outputs.py``) are written at the resolution the report draws
(``REPORT_MAP_PX`` a side, :func:`decimated_grid`): the pixels of the full map that a
nearest-neighbour read of it at that size would take, kept in memory as the strips go by and
written once at the end. Pixels outside the site or without data are nodata (NaN).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from types import TracebackType
from typing import Literal

import numpy as np
import rasterio
import rasterio.shutil
from affine import Affine
from rasterio.windows import Window

from carbon.io.outputs import REPORT_MAPS
from carbon.io.rasters import gdal_env
from carbon.rules.grid import Grid

NODATA = np.float32(np.nan)
#: Overviews of every map (halving until it fits a 512-pixel block: GDAL's COG default), built
#: by nearest neighbour from the full map: a report reads the one nearest its panel's size
#: instead of the whole map, and shows the same pixels a nearest-neighbour read of the full
#: map would (GDAL's default for overviews, cubic, would smooth across the site's edge).
COG_OVERVIEWS = {"overviews": "auto", "overview_resampling": "nearest"}
#: The most pixels a side of a map written for a report (the report's panels,
#: ``carbon/report/page.py`` ``MAX_PANEL_PX``, draw no more).
REPORT_MAP_PX = 400


def decimated_grid(grid: Grid, max_px: int) -> tuple[Grid, int]:
    """The grid with pixels ``k`` times larger (same origin, ``ceil(size / k)`` pixels a side),
    ``k`` the smallest whole factor that brings both sides to ``max_px`` or fewer; ``(grid, 1)``
    when it is small enough. Its pixel ``(r, c)`` covers pixels ``k*r..k*r+k-1`` (rows) and
    ``k*c..`` (columns) of ``grid``; a read onto it by nearest neighbour takes the one at their
    centre, ``(k*r + k//2, k*c + k//2)``."""
    k = max(1, math.ceil(max(grid.width, grid.height) / max_px))
    if k == 1:
        return grid, 1
    return Grid(crs=grid.crs, transform=grid.transform @ Affine.scale(k), width=math.ceil(grid.width / k),
                height=math.ceil(grid.height / k)), k


class DensityMapWriter:
    """The density maps of one site, fed strip by strip by the scan (``write_empty``,
    ``write_year``) and finished on exit (discarded if the block raised).

    ``max_px``: write the maps decimated to at most that many pixels a side
    (:func:`decimated_grid`), ``None`` for full resolution; ``"auto"``: ``REPORT_MAP_PX`` when
    ``out_dir`` is in a run's ``report-maps`` folder (maps only its report draws), else full
    resolution."""

    def __init__(self, out_dir: Path, site_id: str, grid: Grid, years: list[int], start_year: int,
                 max_px: int | None | Literal["auto"] = "auto") -> None:
        self.out_dir = out_dir
        self.site_id = site_id
        self.grid = grid
        self.years = years
        self.start_year = start_year  # the change map covers the full period: start_year -> last year
        if max_px == "auto":
            max_px = REPORT_MAP_PX if Path(out_dir).parent.name == REPORT_MAPS else None
        self.max_px = max_px
        self._tmp: dict[str, rasterio.io.DatasetWriter] = {}
        self._small: dict[int, np.ndarray] = {}  # decimated: year -> its map, filled as strips go by
        self._names = [f"{site_id}_stock_density_{y}" for y in years]
        if start_year < years[-1]:
            self._names.append(f"{site_id}_stock_change_{start_year}_{years[-1]}")
        self.paths: list[Path] = []
        self._shown, k = decimated_grid(grid, max_px) if max_px else (grid, 1)
        #: decimated: the full grid's rows and columns that the map's rows and columns take
        #: (beyond the grid: never written, nodata)
        self._rows = np.arange(self._shown.height) * k + k // 2
        self._cols = np.arange(self._shown.width) * k + k // 2
        self._cols = self._cols[self._cols < grid.width]

    @property
    def decimated(self) -> bool:
        return self._shown is not self.grid

    def _profile(self, grid: Grid) -> dict[str, object]:
        return {"dtype": "float32", "count": 1, "width": grid.width, "height": grid.height,
                "crs": grid.crs.to_wkt(), "transform": grid.transform, "nodata": NODATA}

    def __enter__(self) -> DensityMapWriter:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.decimated:
            for y in self.years:
                self._small[y] = np.full(self._shown.shape, NODATA, dtype=np.float32)
            return self
        profile = {"driver": "GTiff", **self._profile(self.grid), "tiled": True, "blockxsize": 256,
                   "blockysize": 256, "compress": "deflate"}
        for name in self._names:
            self._tmp[name] = rasterio.open(self.out_dir / f".{name}.tmp.tif", "w", **profile)
        return self

    def _strip_rows(self, row_off: int, nrows: int) -> tuple[int, np.ndarray]:
        """Decimated: the first map row the strip ``row_off..row_off+nrows`` holds, and the
        strip's rows it takes."""
        r0, r1 = np.searchsorted(self._rows, (row_off, row_off + nrows))
        return int(r0), self._rows[r0:r1] - row_off

    def _places(self, row_off: int, nrows: int, inside: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
        """Decimated: the first map row of the strip, which of the map's pixels there are inside
        the site (rows, columns), and the place of each of those among the strip's inside
        pixels (row-major: the order of a strip's densities)."""
        r0, rows = self._strip_rows(row_off, nrows)
        if not len(rows):
            return r0, np.zeros((0, len(self._cols)), dtype=bool), np.zeros(0, dtype=np.int64)
        before = np.concatenate(([0], np.cumsum(np.count_nonzero(inside[: rows[-1]], axis=1))))[rows]
        taken = inside[rows]
        at = (before[:, None] + np.cumsum(taken, axis=1) - 1)[:, self._cols]
        keep = taken[:, self._cols]
        return r0, keep, at[keep]

    def pixels(self, row_off: int, nrows: int, inside: np.ndarray) -> np.ndarray | None:
        """The places, among the inside pixels of rows ``row_off..row_off+nrows`` (row-major),
        of those the maps keep, in that order: decimated maps need the density of no other
        (``write_year(..., taken=True)``); ``None``: full resolution, every one."""
        return self._places(row_off, nrows, inside)[2] if self.decimated else None

    def write_empty(self, row_off: int, nrows: int) -> None:
        if self.decimated:
            return  # the decimated maps start as nodata
        block = np.full((nrows, self.grid.width), NODATA, dtype=np.float32)
        for ds in self._tmp.values():
            ds.write(block, 1, window=Window(0, row_off, self.grid.width, nrows))

    def write_year(self, year: int, row_off: int, nrows: int, inside: np.ndarray, density: np.ndarray,
                   taken: bool = False) -> None:
        """Density (t C/ha) of the inside pixels of rows ``row_off..row_off+nrows`` for
        ``year``; ``taken``: of those at ``pixels(row_off, nrows, inside)`` only."""
        if self.decimated:
            r0, keep, at = self._places(row_off, nrows, inside)
            if keep.size:
                block = np.full(keep.shape, NODATA, dtype=np.float32)
                block[keep] = density if taken else density[at]
                self._small[year][r0:r0 + len(keep), : len(self._cols)] = block
            return
        if taken:
            raise ValueError("full-resolution maps take the density of every inside pixel")
        window = Window(0, row_off, self.grid.width, nrows)
        block = np.full((nrows, self.grid.width), NODATA, dtype=np.float32)
        block[inside] = density
        self._tmp[f"{self.site_id}_stock_density_{year}"].write(block, 1, window=window)
        if self.start_year < self.years[-1]:
            if year == self.start_year:
                self._start_block = block
            if year == self.years[-1]:
                self._tmp[self._names[-1]].write(block - self._start_block, 1, window=window)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.decimated:
            if exc_type is None:
                self._write_small()
            self._small.clear()
            return
        for name, ds in self._tmp.items():
            ds.close()
            tmp = self.out_dir / f".{name}.tmp.tif"
            if exc_type is None:
                final = self.out_dir / f"{name}.tif"
                with gdal_env():  # GDAL's default block cache (5% of RAM) held ~300 MB more at 8000^2
                    rasterio.shutil.copy(tmp, final, driver="COG", compress="deflate", **COG_OVERVIEWS)
                self.paths.append(final)
            os.remove(tmp)

    def _write_small(self) -> None:
        """The decimated maps, each written once as a COG (small enough to need no overview)."""
        arrays = [self._small[y] for y in self.years]
        if self.start_year < self.years[-1]:
            arrays.append(self._small[self.years[-1]] - self._small[self.start_year])
        profile = {"driver": "COG", **self._profile(self._shown), "compress": "deflate"}
        for name, arr in zip(self._names, arrays, strict=True):
            final = self.out_dir / f"{name}.tif"
            with gdal_env(), rasterio.open(final, "w", **profile) as dst:
                dst.write(arr, 1)
            self.paths.append(final)
