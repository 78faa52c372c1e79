"""A site: its polygon (in its own CRS), its identity and its properties; selecting sites
and finding the land two sites would both count; the geometry rules of a site in a
geographic CRS (coordinates in range, split at the antimeridian), its geodesic area and the
limits of its size. Pure: loading a sites file is carbon/io/sites.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np
import shapely
from pyproj import CRS, Geod, Transformer
from shapely.geometry.base import BaseGeometry
from shapely.geometry.polygon import orient

from carbon.errors import InputError
from carbon.rules.grid import half_turn, split_lonlat, unwrap_lonlat

#: Smallest site accepted (geodesic ha; ``min_site_area_ha`` of the configuration): 0.01 ha is
#: 100 m^2, about one 10 m pixel; below it a polygon is a digitising sliver, not a site.
DEFAULT_MIN_SITE_AREA_HA = 0.01
#: Largest window a site may have on the grid of a raster covering it, in pixels
#: (``max_site_pixels`` of the configuration): 2e9 pixels is a 180,000 km^2 box of 30 m pixels
#: or 20,000 km^2 of 10 m pixels, hours of scanning; a site above it is usually a mistake (a
#: polygon in the wrong CRS, a band round the globe).
DEFAULT_MAX_SITE_PIXELS = 2_000_000_000


@dataclass(frozen=True)
class SiteLimits:
    """The size limits of a site, checked when it is planned (before any pixel is read)."""

    min_area_ha: float = DEFAULT_MIN_SITE_AREA_HA
    max_pixels: float = DEFAULT_MAX_SITE_PIXELS


class FrozenProperties(dict):
    """A site's extra properties: a ``dict`` (JSON, ``**`` and ``.get`` work as usual) that
    refuses every change, because the same ``Site`` is shared by every caller of a process."""

    __slots__ = ()

    def _refuse(self, *_: Any, **__: Any) -> NoReturn:
        raise TypeError("site properties are read-only (the sites are shared by every caller)")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[Any, ...]:  # pickled as a plain mapping (process pools, Dask)
        return (FrozenProperties, (dict(self),))

    def __copy__(self) -> FrozenProperties:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenProperties:
        return self


@dataclass(frozen=True)
class Site:
    site_id: str
    name: str
    site_type: str
    ecozone: str
    geometry: BaseGeometry = field(repr=False)  # in ``crs``
    crs: CRS = field(repr=False)
    baseline_year: int | None = None
    properties: dict[str, Any] = field(default_factory=dict, repr=False)
    source_path: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.properties, FrozenProperties):
            object.__setattr__(self, "properties", FrozenProperties(self.properties))

    @property
    def geometry_wkb(self) -> bytes:
        return shapely.to_wkb(self.geometry, hex=False)

    @property
    def geometry_sha256(self) -> str:
        """The digest of the polygon and its CRS: what a run records of the land it metered
        (input key, provenance), what exports compare, and what seeds the site's draws."""
        return hashlib.sha256(self.geometry_wkb + self.crs.to_wkt().encode()).hexdigest()

    def recorded_properties(self) -> dict[str, Any]:
        """The site's name, type and extra properties as a run records them (JSON values: text,
        numbers, booleans, null; anything else as its text), to tell later whether the sites
        file changed (an export credits what the run metered)."""
        def plain(v: Any) -> Any:
            return v if v is None or isinstance(v, str | bool | int | float) else str(v)

        return {"name": self.name, "site_type": self.site_type,
                **{str(k): plain(v) for k, v in sorted(self.properties.items())}}


def select_sites(sites: Sequence[Site], site_ids: list[str] | None) -> list[Site]:
    if not site_ids:
        return list(sites)
    by_id = {s.site_id: s for s in sites}
    unknown = [s for s in site_ids if s not in by_id]
    if unknown:
        raise InputError(
            f"unknown site_id(s): {', '.join(map(repr, unknown))}; known: {', '.join(sorted(by_id))}"
        )
    return [by_id[s] for s in site_ids]


def overlaps(sites: Sequence[Site], min_ha: float = 0.01) -> list[tuple[str, str, float]]:
    """Pairs of sites whose polygons overlap by more than ``min_ha`` (geodesic ha): land that
    would be counted, and exported, twice."""
    if not sites:
        return []
    tree = shapely.STRtree([s.geometry for s in sites])
    geod = Geod(ellps="WGS84")
    out = []
    for i, j in zip(*tree.query([s.geometry for s in sites], predicate="intersects"), strict=True):
        if i >= j:
            continue
        part = shapely.intersection(sites[i].geometry, sites[j].geometry)
        if part.is_empty or part.area == 0:
            continue
        to_lonlat = Transformer.from_crs(sites[i].crs, CRS.from_epsg(4326), always_xy=True)
        lonlat = shapely.transform(part, lambda xy, tr=to_lonlat: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
        ha = abs(geod.geometry_area_perimeter(lonlat)[0]) / 1e4
        if ha > min_ha:
            out.append((sites[i].site_id, sites[j].site_id, ha))
    return out


def lonlat_geometry(geom: BaseGeometry, crs: CRS) -> BaseGeometry:
    """A polygon of a geographic CRS as a site keeps it: every coordinate in range (latitude
    within +-90 degrees, longitude within -180..180 or the 0..360 convention), edges the shorter
    way round (a jump of more than 180 degrees between consecutive vertices crosses the
    antimeridian), and split at the antimeridian into parts within -180..180 (a
    MultiPolygon). The same object when nothing changes; ValueError naming the problem."""
    half = half_turn(crs)
    xy = shapely.get_coordinates(geom)
    if len(xy):
        bad_lat = xy[np.abs(xy[:, 1]) > half / 2]
        if len(bad_lat):
            raise ValueError(f"latitude {bad_lat[0, 1]:g} is out of range (-{half / 2:g} to {half / 2:g}): "
                             "are the coordinates in this CRS, longitude first?")
        bad_lon = xy[(xy[:, 0] < -half) | (xy[:, 0] > 2 * half)]
        if len(bad_lon):
            raise ValueError(f"longitude {bad_lon[0, 0]:g} is out of range (-{half:g} to {half:g}, or 0 to "
                             f"{2 * half:g}): are the coordinates in this CRS?")
    unwrapped = unwrap_lonlat(geom, half)
    if not unwrapped.is_valid:
        how = " once its edges across the antimeridian are taken the short way" if unwrapped is not geom else ""
        raise ValueError(f"geometry is invalid{how} ({shapely.is_valid_reason(unwrapped)})")
    return split_lonlat(unwrapped, half)


_WGS84 = CRS.from_epsg(4326)
#: Transformers to WGS 84 by CRS object (the sites of one file share theirs), with the CRS kept
#: so that its id stays its own.
_TO_WGS84: dict[int, tuple[CRS, Transformer | None]] = {}


def _to_wgs84(crs: CRS) -> Transformer | None:
    """The transformation of ``crs`` to WGS 84 longitude/latitude (None: it is WGS 84)."""
    known = _TO_WGS84.get(id(crs))
    if known is None or known[0] is not crs:
        if len(_TO_WGS84) > 64:
            _TO_WGS84.clear()
        known = (crs, None if crs == _WGS84 else Transformer.from_crs(crs, _WGS84, always_xy=True))
        _TO_WGS84[id(crs)] = known
    return known[1]


def geodesic_area_ha(geom: BaseGeometry, crs: CRS) -> float:
    """The polygon's area (ha) on the WGS 84 ellipsoid, each part's geodesic area (holes
    subtracted, any ring orientation), its vertices taken to longitude/latitude."""
    crs = CRS.from_user_input(crs)
    # edges are straight in the site's CRS, geodesics on the ellipsoid: edges longer than 1/1000
    # of the polygon's extent (and than 100 m, or 0.001 degree) are cut so that both follow the
    # same line (a polygon of a few long edges spanning thousands of km would otherwise be wrong)
    x0, y0, x1, y1 = geom.bounds
    shortest = 0.001 if crs.is_geographic else 100.0
    geom = shapely.segmentize(geom, max(max(x1 - x0, y1 - y0) / 1000, shortest))
    tr = _to_wgs84(crs)
    if tr is not None:
        geom = shapely.transform(geom, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    geod = Geod(ellps="WGS84")
    total = 0.0
    for poly in shapely.get_parts(geom):
        if poly.geom_type == "Polygon" and not poly.is_empty:
            total += geod.geometry_area_perimeter(orient(poly, 1.0))[0]
    return abs(total) / 1e4


def check_site_area(site: Site, limits: SiteLimits) -> float:
    """The site's geodesic area (ha); InputError for a sliver below ``limits.min_area_ha``."""
    ha = geodesic_area_ha(site.geometry, site.crs)
    if ha < limits.min_area_ha:
        raise InputError(f"the site polygon is a sliver: its geodesic area {ha:.4g} ha is below the minimum of "
                         f"{limits.min_area_ha:g} ha (min_site_area_ha of the configuration)", site_id=site.site_id)
    return ha
