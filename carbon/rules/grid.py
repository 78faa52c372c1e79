"""Pixel grids and geometry on them: the value types of a raster's header and of a site's
reference grid, reprojection of site polygons, and the choice of a site's window.

Pure (pyproj, shapely, affine): nothing here opens a file. docs/methods.md §3, §5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS, Transformer
from shapely.geometry.base import BaseGeometry

from carbon.rules.area import pixel_area_m2

#: Relative tolerance for two grids to count as the same (pixel size and origin offset).
GRID_TOLERANCE = 1e-6


@dataclass(frozen=True)
class RasterInfo:
    path: str
    crs: CRS
    transform: Affine
    width: int
    height: int
    dtype: str
    nodata: float | None
    block_height: int = 1  # rows per internal block (tile or strip) of band 1

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        left, top = self.transform.c, self.transform.f
        right = left + self.transform.a * self.width
        bottom = top + self.transform.e * self.height
        return min(left, right), min(top, bottom), max(left, right), max(top, bottom)


@dataclass(frozen=True)
class Grid:
    """A north-up pixel grid: the site's reference grid (a window of some raster's grid)."""

    crs: CRS
    transform: Affine
    width: int
    height: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    def row_bounds(self, row_off: int, nrows: int) -> tuple[float, float, float, float]:
        t = self.transform
        top = t.f + t.e * row_off
        bottom = top + t.e * nrows
        return t.c, min(top, bottom), t.c + t.a * self.width, max(top, bottom)


def to_crs(geom: BaseGeometry, src: CRS, dst: CRS) -> BaseGeometry:
    """Reproject a geometry, densifying its edges first so curved edges stay curved."""
    if CRS.from_user_input(src) == CRS.from_user_input(dst):
        return geom
    minx, miny, maxx, maxy = geom.bounds
    step = max(maxx - minx, maxy - miny) / 256.0
    if step > 0:
        geom = shapely.segmentize(geom, step)
    tr = Transformer.from_crs(src, dst, always_xy=True)
    return shapely.transform(geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def intersects(info: RasterInfo, geom_in_raster_crs: BaseGeometry) -> bool:
    return bool(shapely.box(*info.bounds).intersects(geom_in_raster_crs))


def nominal_pixel_area_m2(info: RasterInfo, geom_in_raster_crs: BaseGeometry) -> float:
    """Area of one pixel at the site's centroid (used to pick the finest grid)."""
    c = geom_in_raster_crs.centroid
    col, row = ~info.transform @ (c.x, c.y)
    t = info.transform @ Affine.translation(math.floor(col), math.floor(row))
    return float(pixel_area_m2(info.crs, t, 0, 1, 1)[0, 0])


def site_grid(info: RasterInfo, geom_in_raster_crs: BaseGeometry) -> Grid:
    """The window of ``info``'s grid that covers the site, snapped outwards to whole pixels
    (it may reach beyond the raster: those pixels read as nodata)."""
    t = info.transform
    minx, miny, maxx, maxy = geom_in_raster_crs.bounds
    cols = sorted(((minx - t.c) / t.a, (maxx - t.c) / t.a))
    rows = sorted(((maxy - t.f) / t.e, (miny - t.f) / t.e))
    c0, c1 = math.floor(cols[0] + 1e-9), math.ceil(cols[1] - 1e-9)
    r0, r1 = math.floor(rows[0] + 1e-9), math.ceil(rows[1] - 1e-9)
    c1, r1 = max(c1, c0 + 1), max(r1, r0 + 1)
    return Grid(crs=info.crs, transform=t @ Affine.translation(c0, r0), width=c1 - c0, height=r1 - r0)


def aligned_offset(info: RasterInfo, grid: Grid) -> tuple[int, int] | None:
    """(col, row) of the grid's origin in the raster if the two grids coincide, else None."""
    if info.crs != grid.crs:
        return None
    a, g = info.transform, grid.transform
    if not (math.isclose(a.a, g.a, rel_tol=GRID_TOLERANCE) and math.isclose(a.e, g.e, rel_tol=GRID_TOLERANCE)):
        return None
    col = (g.c - a.c) / a.a
    row = (g.f - a.f) / a.e
    if abs(col - round(col)) > 1e-3 or abs(row - round(row)) > 1e-3:
        return None
    return round(col), round(row)


