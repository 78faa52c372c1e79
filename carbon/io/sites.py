"""Reading and validating site polygons (GeoJSON, GeoPackage or any OGR vector file).

A sites file is read and validated once per process and file version: ``load_sites``
keeps the validated sites of the last few files it read, keyed on the resolved path and
the file's (and its sidecars') size, modification time, change time and inode, and
returns them again while none of these has changed. The sites it returns are immutable
(a tuple of frozen ``Site``s whose ``properties`` cannot be changed), so no caller can
change what the next one gets.

A sites file may be a URL (``s3://bucket/sites.gpkg``): it is read through fsspec as one file
(GeoJSON, GeoPackage, FlatGeobuf, a zipped Shapefile; not a Shapefile's loose parts), and its
version is the object's size and ETag (storage.signature, one HEAD request).
"""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import geopandas as gpd
import pandas as pd
import shapely
from pyproj import CRS

from carbon.errors import InputError
from carbon.io import storage
from carbon.rules.site import FrozenProperties, Site, lonlat_geometry
from schemas._validate import failure_messages
from schemas.inputs import SitesTable

REQUIRED = ("site_id", "name", "site_type", "ecozone")


#: Sites files kept validated in memory (per process): (path as given, resolved path) ->
#: (file version, sites); the path as given is in the sites' ``source_path`` and messages.
_CACHE: OrderedDict[tuple[str, str], tuple[tuple[Any, ...], tuple[Site, ...]]] = OrderedDict()
_CACHE_FILES = 8
_CACHE_LOCK = threading.Lock()
#: Files a vector file's content may also live in (Shapefile parts, SQLite write-ahead log).
_SIDECARS = (".dbf", ".shx", ".prj", ".cpg")


#: How long (s) an object's version, once asked for, stands for the sites file, catalog and
#: coefficient caches (each site of a run asks several times; a HEAD request each otherwise).
URL_VERSION_AGE = 2.0


def _version(path: str | Path, what: str = "file") -> tuple[Any, ...]:
    """What changes when the file (or a sidecar holding part of its content) changes; for an
    object on storage, its size and ETag (None when it does not exist; a store that cannot be
    asked raises an InputError naming ``what`` and the URL)."""
    if storage.is_url(path):
        try:
            return (storage.signature(path, max_age=URL_VERSION_AGE, what=what),)
        except storage.MissingInput:
            return (None,)
    path = Path(path)
    stamps: list[tuple[int, ...] | None] = []
    candidates = [path, Path(f"{path}-wal")]
    if path.suffix.lower() == ".shp":
        candidates += [path.with_suffix(ext) for ext in _SIDECARS]
    for p in candidates:
        try:
            st = os.stat(p)
        except FileNotFoundError:
            stamps.append(None)
            continue
        stamps.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(stamps)


def load_sites(path: str | Path) -> tuple[Site, ...]:
    """Every site of a sites file, validated; raise one InputError listing every problem
    (row = feature number). Read once per process and file version (see the module's
    docstring); a file that changed is read again."""
    if storage.is_url(path):
        path = str(path)
        resolved: str | Path = path
    else:
        path = Path(path)
        if not path.is_file():
            raise InputError("sites file not found", path=path)
        resolved = path.resolve()
    key = (str(path), str(resolved))
    with _CACHE_LOCK:  # one reader at a time: concurrent tasks wait for the first one's read
        version = _version(resolved, "sites file")
        if version == (None,):  # an object that does not exist
            raise InputError("sites file not found", path=path)
        hit = _CACHE.get(key)
        if hit is not None and hit[0] == version:
            _CACHE.move_to_end(key)
            return hit[1]
        sites = _read_sites(path)
        if _version(resolved, "sites file") == version:  # not changed while it was read
            _CACHE[key] = (version, sites)
            _CACHE.move_to_end(key)
            while len(_CACHE) > _CACHE_FILES:
                _CACHE.popitem(last=False)
        return sites


def clear_sites_cache() -> None:
    with _CACHE_LOCK:
        _CACHE.clear()


_PER_THREAD = threading.local()
T = TypeVar("T")


def load_per_version(loader: Callable[[str | Path], T], path: str | Path) -> T:
    """``loader(path)`` read once per thread and file version (inode, size, mtime, ctime; an
    object's size and ETag), for the other shared inputs of a run (catalog, coefficient set):
    per thread, because what they hold (pandas tables) is not for threads to share. Errors are
    not kept."""
    path = str(path) if storage.is_url(path) else Path(path)
    try:
        version = _version(path if storage.is_url(path) else Path(path).resolve())[0]
    except InputError:  # a store that cannot be asked: the loader says so, naming what it reads
        version = None
    key = (getattr(loader, "__qualname__", repr(loader)), str(path))
    cache: dict[tuple[str, str], tuple[Any, Any]] = _PER_THREAD.__dict__.setdefault("cache", {})
    hit = cache.get(key)
    if hit is not None and version is not None and hit[0] == version:
        return hit[1]
    value = loader(path)
    if len(cache) >= 16:
        cache.clear()
    cache[key] = (version, value)
    return value


def _read_sites(path: str | Path) -> tuple[Site, ...]:
    if storage.is_url(path):  # one file's bytes through fsspec (a missing object: one line naming it)
        source: Any = io.BytesIO(storage.read_bytes(path, what="sites file"))
    else:
        source = path
    try:
        gdf = gpd.read_file(source)
    except Exception as exc:  # pyogrio/GDAL raise many kinds: name the file, hide the traceback
        raise InputError(f"sites file cannot be read as vector data: {exc}", path=path) from None
    return sites_from_frame(gdf, path)


def sites_from_frame(gdf: gpd.GeoDataFrame, path: str | Path = "<GeoDataFrame>") -> tuple[Site, ...]:
    """The validated sites of a GeoDataFrame (the columns of a sites file; ``path`` names it in
    messages)."""
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

    crs = CRS.from_user_input(gdf.crs)
    ids = attrs["site_id"] if "site_id" in attrs.columns else pd.Series([None] * len(attrs))
    geoms = list(gdf.geometry)
    for i, geom in enumerate(geoms):
        label = f"{path}, feature {i + 1} (site_id {ids.iloc[i]!r})"
        if geom is None or geom.is_empty:
            problems.append(f"{label}: geometry is missing or empty")
            continue
        if geom.geom_type not in ("Polygon", "MultiPolygon"):
            problems.append(f"{label}: geometry is a {geom.geom_type}, not a polygon")
            continue
        if crs.is_geographic:  # coordinates in range; split where it crosses the antimeridian
            try:
                geoms[i] = geom = lonlat_geometry(geom, crs)
            except ValueError as exc:
                problems.append(f"{label}: {exc}")
                continue
        if not geom.is_valid:
            problems.append(f"{label}: geometry is invalid ({shapely.is_valid_reason(geom)})")
        elif geom.area == 0:
            problems.append(f"{label}: polygon has zero area")
    if problems:
        raise InputError("sites are invalid", path=path, problems=problems)
    assert table is not None

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
                geometry=geoms[i],
                crs=crs,
                baseline_year=None if by is None or pd.isna(by) else int(by),
                properties=FrozenProperties(props),
                source_path=str(path),
            )
        )
    return tuple(sites)


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


