"""Reading and validating site polygons (GeoJSON, GeoPackage or any OGR vector file)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import pandas as pd
import shapely
from pyproj import CRS
from shapely.geometry.base import BaseGeometry

from carbon.errors import InputError
from schemas._validate import failure_messages
from schemas.inputs import SitesTable

REQUIRED = ("site_id", "name", "site_type", "ecozone")


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

    @property
    def geometry_wkb(self) -> bytes:
        return shapely.to_wkb(self.geometry, hex=False)


def load_sites(path: str | Path) -> list[Site]:
    """Read every site; raise one InputError listing every problem (row = feature number)."""
    path = Path(path)
    if not path.is_file():
        raise InputError("sites file not found", path=path)
    try:
        gdf = gpd.read_file(path)
    except Exception as exc:  # pyogrio/GDAL raise many kinds: name the file, hide the traceback
        raise InputError(f"sites file cannot be read as vector data: {exc}", path=path) from None
    if gdf.empty:
        raise InputError("sites file has no features", path=path)
    if gdf.crs is None:
        raise InputError("sites file has no coordinate reference system", path=path)

    attrs = pd.DataFrame(gdf.drop(columns=gdf.geometry.name))
    for col in REQUIRED:
        if col in attrs.columns:
            attrs[col] = attrs[col].astype("string").str.strip().astype(object)
    if "baseline_year" not in attrs.columns:
        attrs["baseline_year"] = pd.NA
    table, problems = failure_messages(SitesTable, attrs, where=str(path), row_offset=1)
    problems = [p.replace(", row ", ", feature ") for p in problems]

    ids = attrs["site_id"] if "site_id" in attrs.columns else pd.Series([None] * len(attrs))
    for i, geom in enumerate(gdf.geometry):
        label = f"{path}, feature {i + 1} (site_id {ids.iloc[i]!r})"
        if geom is None or geom.is_empty:
            problems.append(f"{label}: geometry is missing or empty")
        elif geom.geom_type not in ("Polygon", "MultiPolygon"):
            problems.append(f"{label}: geometry is a {geom.geom_type}, not a polygon")
        elif not geom.is_valid:
            problems.append(f"{label}: geometry is invalid ({shapely.is_valid_reason(geom)})")
        elif geom.area == 0:
            problems.append(f"{label}: polygon has zero area")
    if problems:
        raise InputError("sites are invalid", path=path, problems=problems)
    assert table is not None

    crs = CRS.from_user_input(gdf.crs)
    sites = []
    extra_cols = [c for c in attrs.columns if c not in (*REQUIRED, "baseline_year")]
    for i, row in enumerate(table.to_dict("records")):
        by = row.get("baseline_year")
        props = {c: _plain(attrs.iloc[i][c]) for c in extra_cols}
        sites.append(
            Site(
                site_id=str(row["site_id"]),
                name=str(row["name"]),
                site_type=str(row["site_type"]),
                ecozone=str(row["ecozone"]),
                geometry=gdf.geometry.iloc[i],
                crs=crs,
                baseline_year=None if by is None or pd.isna(by) else int(by),
                properties=props,
                source_path=str(path),
            )
        )
    return sites


def _plain(value: Any) -> Any:
    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    if hasattr(value, "item"):
        return value.item()
    return value


def select_sites(sites: list[Site], site_ids: list[str] | None) -> list[Site]:
    if not site_ids:
        return sites
    by_id = {s.site_id: s for s in sites}
    unknown = [s for s in site_ids if s not in by_id]
    if unknown:
        raise InputError(
            f"unknown site_id(s): {', '.join(map(repr, unknown))}; known: {', '.join(sorted(by_id))}"
        )
    return [by_id[s] for s in site_ids]


def overlaps(sites: list[Site], min_ha: float = 0.01) -> list[tuple[str, str, float]]:
    """Pairs of sites whose polygons overlap by more than ``min_ha`` (geodesic ha): land that
    would be counted, and exported, twice."""
    from pyproj import Geod  # noqa: PLC0415

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
        lonlat = gpd.GeoSeries([part], crs=sites[i].crs).to_crs(4326).iloc[0]
        ha = abs(geod.geometry_area_perimeter(lonlat)[0]) / 1e4
        if ha > min_ha:
            out.append((sites[i].site_id, sites[j].site_id, ha))
    return out
