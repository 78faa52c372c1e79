"""Pixel grids and geometry on them: the value types of a raster's header and of a site's
reference grid, reprojection of site polygons, polygons across the antimeridian, and the
choice of a site's window.

Pure (pyproj, shapely, affine): nothing here opens a file. docs/methods.md §3, §5.

Longitude and the antimeridian (docs/data-contracts.md, Sites): in a geographic CRS an edge
between consecutive vertices is the shorter way round, so a jump of more than half a turn
(180 degrees) of longitude crosses the antimeridian. A site is kept split there
(:func:`split_lonlat`: parts within -180..180), and brought to a geographic grid in one
piece (:func:`contiguous_lonlat`: the parts west of 0 moved a turn east, so its longitudes
run on past 180); a geographic raster on the other side of the antimeridian is matched
to it shifted by a turn (:meth:`RasterInfo.shifted`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import shapely
import shapely.affinity
from affine import Affine
from pyproj import CRS, Transformer
from shapely.geometry.base import BaseGeometry

from carbon.rules.area import _unit, pixel_area_m2

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
    #: Longitude (CRS units) added to the file's georeferencing: a turn (360 degrees) east or west
    #: for a geographic raster matched to a site on the other side of the antimeridian.
    lon_shift: float = 0.0

    def shifted(self, dx: float) -> RasterInfo:
        """The same raster with its longitudes moved by ``dx`` (its pixels unchanged)."""
        return replace(self, transform=Affine.translation(dx, 0.0) @ self.transform, lon_shift=self.lon_shift + dx)

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


def half_turn(crs: CRS) -> float:
    """Half a turn of longitude in a geographic CRS's angular unit (180 for degrees)."""
    return math.pi / _unit(CRS.from_user_input(crs))


def _rings(poly: shapely.Polygon) -> list[np.ndarray]:
    return [np.asarray(r.coords)[:, :2] for r in (poly.exterior, *poly.interiors)]


def _unwrap_ring(xy: np.ndarray, half: float) -> np.ndarray:
    """The ring with every jump of more than half a turn of longitude taken the short way round
    (the later vertices moved by whole turns); ValueError if it then does not close (a ring
    round a pole)."""
    dx = np.diff(xy[:, 0])
    turns = np.where(np.abs(dx) > half, np.round(dx / (2.0 * half)), 0.0)
    if not turns.any():
        return xy
    out = xy.copy()
    out[1:, 0] -= 2.0 * half * np.cumsum(turns)
    if abs(out[-1, 0] - out[0, 0]) > 1e-9 * half:
        raise ValueError("a ring goes round a pole (its longitudes wind a whole turn): split the polygon "
                         "so that no part encloses a pole")
    return out


def unwrap_lonlat(geom: BaseGeometry, half: float = 180.0) -> BaseGeometry:
    """A lon/lat polygon with every edge the shorter way round: each ring's longitudes made
    continuous (they may run past +-180), its holes moved by whole turns next to its shell.
    The same object when no edge jumps by more than half a turn; ValueError for a ring round
    a pole."""
    polys = list(shapely.get_parts(geom)) if geom.geom_type == "MultiPolygon" else [geom]
    changed = False
    out = []
    for poly in polys:
        rings = _rings(poly)
        fixed = [_unwrap_ring(r, half) for r in rings]
        if all(f is r for f, r in zip(fixed, rings, strict=True)):
            out.append(poly)
            continue
        changed = True
        shell_x = float(fixed[0][:-1, 0].mean())
        holes = []
        for h in fixed[1:]:
            k = round((float(h[:-1, 0].mean()) - shell_x) / (2.0 * half))
            holes.append(h - np.array([2.0 * half * k, 0.0]))
        out.append(shapely.Polygon(fixed[0], holes))
    if not changed:
        return geom
    return out[0] if len(out) == 1 and geom.geom_type == "Polygon" else shapely.MultiPolygon(out)


def _polygons(geom: BaseGeometry) -> list[shapely.Polygon]:
    return [p for p in shapely.get_parts(geom) if p.geom_type == "Polygon" and not p.is_empty] + [
        q for p in shapely.get_parts(geom) if p.geom_type == "MultiPolygon" for q in shapely.get_parts(p)]


def split_lonlat(geom: BaseGeometry, half: float = 180.0) -> BaseGeometry:
    """A lon/lat polygon whose longitudes may run past +-``half`` (continuous, as from
    :func:`unwrap_lonlat`, or written 0..360) cut at the antimeridian into parts within
    -half..half: a MultiPolygon when it crosses. The same object when it lies within."""
    minx, _, maxx, _ = geom.bounds
    if minx >= -half and maxx <= half:
        return geom
    if maxx - minx >= 2.0 * half:
        raise ValueError("the polygon spans a whole turn of longitude or more")
    turn = 2.0 * half
    parts: list[shapely.Polygon] = []
    for k in range(math.floor((minx + half) / turn), math.ceil((maxx + half) / turn)):
        lo = -half + k * turn
        piece = shapely.clip_by_rect(geom, lo, -1e9, lo + turn, 1e9)
        if piece.is_empty or piece.area == 0:
            continue
        piece = shapely.affinity.translate(piece, xoff=-k * turn)
        parts += [p for p in _polygons(piece) if p.area > 0]
    if not parts:
        raise ValueError("nothing of the polygon is left after cutting it at the antimeridian")
    merged = shapely.union_all(parts)
    polys = _polygons(merged)
    return polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)


def contiguous_lonlat(geom: BaseGeometry, half: float = 180.0) -> BaseGeometry:
    """A lon/lat polygon in one piece of longitudes: its edges unwrapped, and if it then spans
    more than half a turn (a site split at the antimeridian), its parts west of 0 moved a turn
    east so that its longitudes run on past ``half``. The same object for an ordinary polygon."""
    geom = unwrap_lonlat(geom, half)
    minx, _, maxx, _ = geom.bounds
    if maxx - minx <= half:
        return geom
    moved = [shapely.affinity.translate(p, xoff=2.0 * half) if p.centroid.x < 0 else p for p in _polygons(geom)]
    out = shapely.union_all(moved)
    minx, _, maxx, _ = out.bounds
    if maxx - minx > half:
        return geom  # a site really that wide: left as it is
    polys = _polygons(out)
    return polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)


def to_crs(geom: BaseGeometry, src: CRS, dst: CRS) -> BaseGeometry:
    """Reproject a geometry, densifying its edges first so curved edges stay curved. Into a
    geographic CRS the result is in one piece of longitudes (:func:`contiguous_lonlat`): a
    site across the antimeridian runs on past 180 degrees instead of round the globe."""
    src, dst = CRS.from_user_input(src), CRS.from_user_input(dst)
    if src.is_geographic:
        geom = contiguous_lonlat(geom, half_turn(src))
    if src == dst:
        return geom
    minx, miny, maxx, maxy = geom.bounds
    step = max(maxx - minx, maxy - miny) / 256.0
    if step > 0:
        geom = shapely.segmentize(geom, step)
    tr = Transformer.from_crs(src, dst, always_xy=True)
    out = shapely.transform(geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    if dst.is_geographic:
        out = contiguous_lonlat(out, half_turn(dst))
    return out


def shifts_meeting(info: RasterInfo, geom_in_raster_crs: BaseGeometry) -> list[RasterInfo]:
    """The raster as it meets the site: itself if its bounds meet the polygon and, for a
    geographic raster, itself a turn east or west where that meets it (a site across the
    antimeridian, or written in the other convention); a global raster may meet it both ways."""
    out = [info] if intersects(info, geom_in_raster_crs) else []
    if info.crs.is_geographic:
        turn = 2.0 * half_turn(info.crs)
        for dx in (turn, -turn):
            moved = info.shifted(dx)
            if intersects(moved, geom_in_raster_crs):
                out.append(moved)
    return out


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


