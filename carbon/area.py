"""Ellipsoidal pixel area in any CRS (docs/methods.md §3).

Pure arithmetic over a grid description (CRS + affine transform): no file access.

* Geographic grids: the exact area of the ellipsoidal quadrangle between two parallels
  and two meridians, A = (b^2 / 2) * dlambda * |q(phi2) - q(phi1)| (authalic latitude
  function q; Snyder 1987, Eq. 3-12), so a 1/12000 deg WorldCover pixel at 30.5 N is
  73.9 m^2, not 100 m^2. Angular units (degrees, grads) come from the CRS.
* Projected grids: the geodesic area, on the CRS's own ellipsoid, of pixels whose corners
  are taken to longitude/latitude (edges densified), at nodes about 2 km apart, as a ratio
  to the planar area that is interpolated in between. The ratio is exactly 1 for
  equal-area projections (CLCD Albers: 900 m^2) and corrects conformal ones (UTM, LCC), a
  non-Greenwich prime meridian, and projections whose PROJ scale factors are spherical
  (Web Mercator, Mollweide on WGS 84).
"""

from __future__ import annotations

import functools
import math

import numpy as np
from affine import Affine
from pyproj import CRS, Geod, Transformer

#: Area ratios within this of 1 are treated as exactly 1 (equal-area grids).
EQUAL_AREA_TOLERANCE = 1e-6  # above the ~1e-8 noise of the geodesic ratio
#: Ground spacing of the nodes at which the area ratio is measured before bilinear
#: interpolation: the ratio varies smoothly, and 2 km apart the interpolation error is ~1e-8.
NODE_SPACING_M = 2000.0


def _q(phi: np.ndarray, e: float) -> np.ndarray:
    s = np.sin(phi)
    if e == 0.0:
        return 2.0 * s
    es = e * s
    return s / (1.0 - es * es) + np.log((1.0 - es) / (1.0 + es)) / (-2.0 * e)


def quadrangle_area_m2(lat1_deg: np.ndarray, lat2_deg: np.ndarray, dlon_deg: float, crs: CRS) -> np.ndarray:
    """Area on ``crs``'s ellipsoid between two parallels, ``dlon_deg`` wide (vectorised)."""
    ell = crs.ellipsoid
    if ell is None:
        raise ValueError(f"CRS has no ellipsoid: {crs.to_string()}")
    a = ell.semi_major_metre
    b = ell.semi_minor_metre
    e = math.sqrt(max(0.0, 1.0 - (b * b) / (a * a)))
    phi1 = np.radians(np.asarray(lat1_deg, dtype=np.float64))
    phi2 = np.radians(np.asarray(lat2_deg, dtype=np.float64))
    return 0.5 * b * b * math.radians(abs(dlon_deg)) * np.abs(_q(phi2, e) - _q(phi1, e))


def _unit(crs: CRS) -> float:
    """Size of one unit of the CRS's first axis: metres, or radians for angular units."""
    for axis in crs.axis_info:
        if axis.unit_conversion_factor:
            return float(axis.unit_conversion_factor)
    return 1.0


def pixel_area_m2(crs: CRS, transform: Affine, row_off: int, nrows: int, ncols: int) -> np.ndarray:
    """Ellipsoidal area (m^2) of every pixel of a block of a grid, shape (nrows, ncols).

    ``transform`` is the grid's transform; the block starts at row ``row_off``,
    column 0.
    """
    crs = CRS.from_user_input(crs)
    if crs.is_geographic:
        if transform.b != 0 or transform.d != 0:
            raise ValueError("rotated geographic grids are not supported")
        to_deg = math.degrees(_unit(crs))
        rows = np.arange(row_off, row_off + nrows, dtype=np.float64)
        lat_top = (transform.f + transform.e * rows) * to_deg
        lat_bottom = lat_top + transform.e * to_deg
        per_row = quadrangle_area_m2(lat_top, lat_bottom, transform.a * to_deg, crs)
        return np.broadcast_to(per_row[:, None], (nrows, ncols))

    return AreaModel(crs, transform, row_off + nrows, ncols).block_m2(row_off, nrows)


#: Points per pixel edge when a pixel is taken to longitude/latitude for its geodesic area.
EDGE_POINTS = 4


def _geodesic_pixel_area(geod: Geod, to_ll: Transformer, transform: Affine, col: float, row: float) -> float:
    """Geodesic area (m^2) of the pixel whose top-left corner is at (col, row)."""
    t = np.linspace(0.0, 1.0, EDGE_POINTS, endpoint=False)
    cols = np.concatenate([col + t, np.full(EDGE_POINTS, col + 1.0), col + 1.0 - t, np.full(EDGE_POINTS, col)])
    rows = np.concatenate([np.full(EDGE_POINTS, row), row + t, np.full(EDGE_POINTS, row + 1.0), row + 1.0 - t])
    x, y = transform @ (cols, rows)
    lon, lat = to_ll.transform(x, y)
    area, _ = geod.polygon_area_perimeter(lon, lat)
    return abs(area)


@functools.lru_cache(maxsize=64)
def _to_lonlat(crs_wkt: str) -> tuple[Geod, Transformer]:
    crs = CRS.from_wkt(crs_wkt)
    ell = crs.ellipsoid
    if ell is None:
        raise ValueError(f"CRS has no ellipsoid: {crs.name}")
    geod = Geod(a=ell.semi_major_metre, b=ell.semi_minor_metre)
    lonlat = CRS.from_proj4(f"+proj=longlat +a={ell.semi_major_metre} +b={ell.semi_minor_metre} +no_defs")
    return geod, Transformer.from_crs(crs, lonlat, always_xy=True)


def area_ratio(crs: CRS, transform: Affine, row_off: int, nrows: int, ncols: int) -> np.ndarray | float:
    """Ellipsoidal / planar pixel area at pixel centres, from nodes ``NODE_SPACING_M``
    apart, bilinearly interpolated; a plain 1.0 for equal-area grids."""
    return AreaModel(crs, transform, row_off + nrows, ncols).ratio(row_off, nrows)


class AreaModel:
    """Pixel areas of one grid: the area ratio is measured once at nodes over the whole grid,
    and each block of rows is interpolated from them (no work repeated per strip)."""

    def __init__(self, crs: CRS, transform: Affine, height: int, width: int) -> None:
        self.crs = CRS.from_user_input(crs)
        self.transform = transform
        self.width = width
        unit = _unit(self.crs)
        self.planar = abs(transform.a * transform.e - transform.b * transform.d) * unit * unit
        step = int(min(256, max(4, round(NODE_SPACING_M / math.sqrt(self.planar)))))
        self.node_r = _nodes(height, step)
        self.node_c = _nodes(width, step)
        self.nodes: np.ndarray | None = None
        self.equal_area = False
        if not self.crs.is_geographic:
            geod, to_ll = _to_lonlat(self.crs.to_wkt())
            s = np.empty((len(self.node_r), len(self.node_c)))
            for i, r in enumerate(self.node_r):
                for j, c in enumerate(self.node_c):
                    s[i, j] = _geodesic_pixel_area(geod, to_ll, transform, c, r) / self.planar
            if not np.all(np.isfinite(s)) or np.any(s <= 0):
                raise ValueError(f"pixel area undefined inside the grid (CRS {self.crs.name})")
            self.equal_area = bool(np.max(np.abs(s - 1.0)) < EQUAL_AREA_TOLERANCE)
            self.nodes = s  # (node rows, node columns): small whatever the grid size

    def ratio(self, row_off: int, nrows: int) -> np.ndarray | float:
        if self.equal_area or self.nodes is None:
            return 1.0
        rows = np.arange(row_off, row_off + nrows, dtype=np.float64)
        if len(self.node_r) == 1:
            at_rows = np.repeat(self.nodes, nrows, axis=0)
        else:
            i1 = np.clip(np.searchsorted(self.node_r, rows, side="right"), 1, len(self.node_r) - 1)
            i0 = i1 - 1
            t = ((rows - self.node_r[i0]) / (self.node_r[i1] - self.node_r[i0]))[:, None]
            at_rows = self.nodes[i0] * (1.0 - t) + self.nodes[i1] * t  # (nrows, node columns)
        return _interp_axis(at_rows, self.node_c, self.width, axis=1)

    def block_m2(self, row_off: int, nrows: int) -> np.ndarray:
        """Pixel areas (m^2) of rows ``row_off .. row_off + nrows``."""
        if self.crs.is_geographic:
            return pixel_area_m2(self.crs, self.transform, row_off, nrows, self.width)
        ratio = self.ratio(row_off, nrows)
        if isinstance(ratio, float):
            return np.full((nrows, self.width), self.planar * ratio)
        return self.planar * ratio


def _nodes(n: int, step: int) -> np.ndarray:
    nodes = np.arange(0, n, step, dtype=np.float64)
    if nodes[-1] != n - 1:
        nodes = np.append(nodes, n - 1)
    return nodes


def _interp_axis(values: np.ndarray, nodes: np.ndarray, n: int, axis: int) -> np.ndarray:
    """Linear interpolation of ``values`` (sampled at ``nodes`` along ``axis``) to 0..n-1."""
    target = np.arange(n, dtype=np.float64)
    if len(nodes) == 1:
        return np.repeat(values, n, axis=axis)
    i1 = np.clip(np.searchsorted(nodes, target, side="right"), 1, len(nodes) - 1)
    i0 = i1 - 1
    t = (target - nodes[i0]) / (nodes[i1] - nodes[i0])
    v0 = np.take(values, i0, axis=axis)
    v1 = np.take(values, i1, axis=axis)
    shape = [1, 1]
    shape[axis] = n
    t = t.reshape(shape)
    return v0 * (1.0 - t) + v1 * t
