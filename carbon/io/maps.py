"""Per-pixel outputs: stock density per year (t C/ha) and its change, as Cloud-Optimized GeoTIFFs.

Written strip by strip into tiled GeoTIFFs and then copied to the COG layout, with
overviews (``COG_OVERVIEWS``), so memory stays bounded. Pixels outside the site or without
data are nodata (NaN).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from carbon.io.rasters import gdal_env
from carbon.rules.grid import Grid

NODATA = np.float32(np.nan)
#: Overviews of every map (halving until it fits a 512-pixel block: GDAL's COG default), built
#: by nearest neighbour from the full map: a report reads the one nearest its panel's size
#: instead of the whole map, and shows the same pixels a nearest-neighbour read of the full
#: map would (GDAL's default for overviews, cubic, would smooth across the site's edge).
COG_OVERVIEWS = {"overviews": "auto", "overview_resampling": "nearest"}


class DensityMapWriter:
    def __init__(self, out_dir: Path, site_id: str, grid: Grid, years: list[int], start_year: int) -> None:
        self.out_dir = out_dir
        self.site_id = site_id
        self.grid = grid
        self.years = years
        self.start_year = start_year  # the change map covers the full period: start_year -> last year
        self._tmp: dict[str, rasterio.io.DatasetWriter] = {}
        self._names = [f"{site_id}_stock_density_{y}" for y in years]
        if start_year < years[-1]:
            self._names.append(f"{site_id}_stock_change_{start_year}_{years[-1]}")
        self.paths: list[Path] = []

    def __enter__(self) -> DensityMapWriter:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        profile = {
            "driver": "GTiff",
            "dtype": "float32",
            "count": 1,
            "width": self.grid.width,
            "height": self.grid.height,
            "crs": self.grid.crs.to_wkt(),
            "transform": self.grid.transform,
            "nodata": NODATA,
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
            "compress": "deflate",
        }
        for name in self._names:
            self._tmp[name] = rasterio.open(self.out_dir / f".{name}.tmp.tif", "w", **profile)
        return self

    def write_empty(self, row_off: int, nrows: int) -> None:
        block = np.full((nrows, self.grid.width), NODATA, dtype=np.float32)
        for ds in self._tmp.values():
            ds.write(block, 1, window=Window(0, row_off, self.grid.width, nrows))

    def write_year(self, year: int, row_off: int, nrows: int, inside: np.ndarray, density: np.ndarray) -> None:
        """Density (t C/ha) of the inside pixels of rows ``row_off..row_off+nrows`` for ``year``."""
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
        for name, ds in self._tmp.items():
            ds.close()
            tmp = self.out_dir / f".{name}.tmp.tif"
            if exc_type is None:
                final = self.out_dir / f"{name}.tif"
                with gdal_env():  # GDAL's default block cache (5% of RAM) held ~300 MB more at 8000^2
                    rasterio.shutil.copy(tmp, final, driver="COG", compress="deflate", **COG_OVERVIEWS)
                self.paths.append(final)
            os.remove(tmp)
