"""A site: its polygon (in its own CRS), its identity and its properties; selecting sites
and finding the land two sites would both count. Pure: loading a sites file is
carbon/io/sites.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np
import shapely
from pyproj import CRS, Geod, Transformer
from shapely.geometry.base import BaseGeometry

from carbon.errors import InputError


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
