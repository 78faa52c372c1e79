"""Exact fractional coverage of grid cells by a site polygon (docs/methods.md §4).

Uses exactextract, which computes the exact area fraction of every cell covered by a
polygon, so boundary pixels count by the share of them inside the site instead of
all-or-nothing (centre-in or all-touched rasterisation).
"""

from __future__ import annotations

import numpy as np
import shapely
from exactextract import exact_extract
from exactextract.raster import NumPyRasterSource
from shapely.geometry.base import BaseGeometry

from carbon.rules.grid import Grid


def coverage_fraction(geom: BaseGeometry, grid: Grid, row_off: int, nrows: int) -> np.ndarray:
    """Fraction (0..1) of each cell of rows ``row_off .. row_off+nrows`` inside ``geom``
    (``geom`` in the grid's CRS)."""
    xmin, ymin, xmax, ymax = grid.row_bounds(row_off, nrows)
    if rows_inside(geom, grid, row_off, nrows):
        return np.ones((nrows, grid.width), dtype=np.float64)  # every cell of the rows is inside
    out = np.zeros((nrows, grid.width), dtype=np.float64)
    part = shapely.clip_by_rect(geom, xmin, ymin, xmax, ymax)
    if part.is_empty or part.area == 0:
        return out
    raster = NumPyRasterSource(np.zeros((nrows, grid.width), dtype=np.uint8), xmin, ymin, xmax, ymax)
    feature = {"type": "Feature", "properties": {}, "geometry": shapely.geometry.mapping(part)}
    result = exact_extract(raster, [feature], ["cell_id", "coverage"], output="geojson")
    props = result[0]["properties"]
    cells = np.asarray(props["cell_id"], dtype=np.int64)
    frac = np.asarray(props["coverage"], dtype=np.float64)
    out.reshape(-1)[cells] = frac
    return out


def rows_inside(geom: BaseGeometry, grid: Grid, row_off: int, nrows: int) -> bool:
    """Whether every cell of rows ``row_off .. row_off+nrows`` lies wholly inside ``geom``."""
    return bool(geom.contains(shapely.box(*grid.row_bounds(row_off, nrows))))
