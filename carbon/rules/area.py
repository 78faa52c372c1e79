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
import threading
from dataclasses import dataclass

import numpy as np
from affine import Affine
from pyproj import CRS, Geod, Proj, Transformer

#: Area ratios within this of 1 are treated as exactly 1 (equal-area grids).
EQUAL_AREA_TOLERANCE = 1e-6  # above the ~1e-8 noise of the geodesic ratio
#: Ground spacing of the nodes at which the area ratio is measured before bilinear
#: interpolation: the ratio varies smoothly, and 2 km apart the interpolation error is ~1e-8.
NODE_SPACING_M = 2000.0
#: Nodes measured per vectorised batch (each holds 16 outline points in a few float arrays).
NODE_BATCH = 16_384


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
    x, y = transform @ (cols, rows)  # type: ignore[operator]  # affine maps arrays element-wise
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


@dataclass(frozen=True)
class StripAreas:
    """Pixel areas of a block of rows in a form a kernel evaluates per pixel without a
    (rows, columns) array: ``area(r, c) = row_m2[r] * (ratio[j[r], c] * (1 - t[r]) +
    ratio[j[r] + 1, c] * t[r])``."""

    row_m2: np.ndarray  # (rows,) planar area (projected) or the row's pixel area (geographic)
    ratio: np.ndarray  # (m >= 2, columns) area ratios along node rows, interpolated to every column
    j: np.ndarray  # (rows,) int64: the node row above each row, an index into ``ratio``
    t: np.ndarray  # (rows,) position of each row between its two node rows (0..1)

    def dense(self) -> np.ndarray:
        r = self.ratio[self.j] * (1.0 - self.t)[:, None] + self.ratio[self.j + 1] * self.t[:, None]
        return self.row_m2[:, None] * r


class AreaModel:
    """Pixel areas of one grid: the area ratio is measured once at nodes over the whole grid
    (one vectorised pass), and each block of rows is interpolated from them; the two or
    three node rows a strip needs are interpolated along the columns once and reused by the
    strips that follow."""

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
        self._rows: dict[int, np.ndarray] = {}  # node row -> its ratios at every column (a few kept)
        self._lock = threading.Lock()
        self._ones = np.ones((2, width))
        if not self.crs.is_geographic:
            s = _node_ratios(self.crs, transform, self.node_r, self.node_c, self.planar)
            if not np.all(np.isfinite(s)) or np.any(s <= 0):
                raise ValueError(f"pixel area undefined inside the grid (CRS {self.crs.name})")
            self.equal_area = bool(np.max(np.abs(s - 1.0)) < EQUAL_AREA_TOLERANCE)
            self.nodes = s  # (node rows, node columns): small whatever the grid size

    def _node_row(self, i: int) -> np.ndarray:
        with self._lock:  # chunks of a site may ask from several threads
            row = self._rows.get(i)
            if row is None:
                assert self.nodes is not None
                row = _interp_axis(self.nodes[i], self.node_c, self.width, axis=0)
                if len(self._rows) >= 8:  # strips go down the grid: the oldest rows are done with
                    self._rows.pop(next(iter(self._rows)))
                self._rows[i] = row
            return row

    def strip(self, row_off: int, nrows: int) -> StripAreas:
        """Pixel areas of rows ``row_off .. row_off + nrows`` as a :class:`StripAreas`."""
        zero_t = np.zeros(nrows)
        zero_j = np.zeros(nrows, dtype=np.int64)
        if self.crs.is_geographic:
            per_row = pixel_area_m2(self.crs, self.transform, row_off, nrows, 1)[:, 0]
            return StripAreas(np.ascontiguousarray(per_row), self._ones, zero_j, zero_t)
        planar = np.full(nrows, self.planar)
        if self.equal_area or self.nodes is None:
            return StripAreas(planar, self._ones, zero_j, zero_t)
        if len(self.node_r) == 1:
            row = self._node_row(0)
            return StripAreas(planar, np.stack([row, row]), zero_j, zero_t)
        rows = np.arange(row_off, row_off + nrows, dtype=np.float64)
        i1 = np.clip(np.searchsorted(self.node_r, rows, side="right"), 1, len(self.node_r) - 1)
        i0 = i1 - 1
        t = (rows - self.node_r[i0]) / (self.node_r[i1] - self.node_r[i0])
        first = int(i0.min())
        ratio = np.stack([self._node_row(i) for i in range(first, int(i1.max()) + 1)])
        return StripAreas(planar, ratio, (i0 - first).astype(np.int64), t)

    def ratio(self, row_off: int, nrows: int) -> np.ndarray | float:
        if self.equal_area or self.nodes is None:
            return 1.0
        s = self.strip(row_off, nrows)
        return s.dense() / self.planar

    def block_m2(self, row_off: int, nrows: int) -> np.ndarray:
        """Pixel areas (m^2) of rows ``row_off .. row_off + nrows``."""
        if self.crs.is_geographic:
            return pixel_area_m2(self.crs, self.transform, row_off, nrows, self.width)
        ratio = self.ratio(row_off, nrows)
        if isinstance(ratio, float):
            return np.full((nrows, self.width), self.planar * ratio)
        return self.planar * ratio


def _node_ratios(crs: CRS, transform: Affine, node_r: np.ndarray, node_c: np.ndarray, planar: float) -> np.ndarray:
    """Ellipsoidal / planar area of the pixels whose top-left corners are the nodes, all at
    once: the densified pixel outlines go to longitude/latitude on the CRS's own ellipsoid,
    then to a Lambert azimuthal equal-area projection of that ellipsoid centred on the grid,
    where the shoelace formula gives their area. Nodes more than 90 degrees from the centre
    (where that projection stretches shapes without bound) use the geodesic area instead."""
    geod, to_ll = _to_lonlat(crs.to_wkt())
    ell = crs.ellipsoid
    if ell is None:
        raise ValueError(f"CRS has no ellipsoid: {crs.name}")
    t = np.linspace(0.0, 1.0, EDGE_POINTS, endpoint=False)
    ones, zeros = np.ones(EDGE_POINTS), np.zeros(EDGE_POINTS)
    dc = np.concatenate([t, ones, 1.0 - t, zeros])  # the outline, as in _geodesic_pixel_area
    dr = np.concatenate([zeros, t, ones, 1.0 - t])
    mid_c, mid_r = node_c[len(node_c) // 2], node_r[len(node_r) // 2]
    lon0, lat0 = (float(v) for v in to_ll.transform(*(transform @ (mid_c, mid_r))))
    laea = Proj(f"+proj=laea +lat_0={lat0!r} +lon_0={lon0!r} +a={ell.semi_major_metre!r} "
                f"+b={ell.semi_minor_metre!r} +no_defs")
    quarter = 0.5 * math.pi * ell.semi_major_metre
    out = np.empty((len(node_r), len(node_c)))
    batch = max(1, NODE_BATCH // len(node_c))  # node rows at a time: memory stays small for any grid
    for b0 in range(0, len(node_r), batch):
        rows_b = node_r[b0:b0 + batch]
        cc, rr = np.meshgrid(node_c, rows_b)
        cols = cc.reshape(-1, 1) + dc
        rows = rr.reshape(-1, 1) + dr
        x, y = transform @ (cols.ravel(), rows.ravel())
        lon, lat = to_ll.transform(x, y)
        lon, lat = np.asarray(lon).reshape(cols.shape), np.asarray(lat).reshape(cols.shape)
        px, py = laea(lon, lat)
        px, py = np.asarray(px) - np.asarray(px)[:, :1], np.asarray(py) - np.asarray(py)[:, :1]
        area = 0.5 * np.abs(np.sum(px * np.roll(py, -1, axis=1) - np.roll(px, -1, axis=1) * py, axis=1))
        _, _, dist = geod.inv(np.full(lon.shape[0], lon0), np.full(lon.shape[0], lat0), lon[:, 0], lat[:, 0])
        far = ~np.isfinite(area) | (np.asarray(dist) > quarter)
        for k in np.flatnonzero(far):
            i, j = divmod(int(k), len(node_c))
            area[k] = _geodesic_pixel_area(geod, to_ll, transform, node_c[j], rows_b[i])
        out[b0:b0 + len(rows_b)] = (area / planar).reshape(len(rows_b), len(node_c))
    return out


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
    shape = [1] * values.ndim
    shape[axis] = n
    t = t.reshape(shape)
    return v0 * (1.0 - t) + v1 * t
