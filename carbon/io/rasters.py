"""Land-cover raster access: structural checks, site grids, windowed and aligned reads.

The only module that opens rasters for reading. Every GDAL failure becomes an
:class:`InputError` naming the file. Reads are windowed (only the rows asked for,
only the part covering the site), so memory does not grow with raster size.
A raster may be a URL (``s3://bucket/key``): GDAL reads it through its virtual file systems
(``/vsis3/``), in ranged requests, with the settings ``gdal_env`` gives it (storage.gdal_options).
Alignment rule (docs/methods.md §5): each year is brought onto the site's reference
grid by nearest neighbour; a raster already on that grid is read as it is.
"""

from __future__ import annotations

import functools
import os
from contextlib import ExitStack
from typing import Any

import numpy as np
import rasterio
from pyproj import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from carbon.errors import InputError
from carbon.io.storage import gdal_options
from carbon.rules.grid import Grid, RasterInfo, aligned_offset

#: GDAL's block cache (MB) while a site is read. GDAL's default is 5% of the machine's memory;
#: reads here are streamed strip by strip, so a small cache keeps memory flat whatever the
#: raster size. A ``GDAL_CACHEMAX`` in the environment wins.
GDAL_CACHE_MB = 64


def gdal_env() -> rasterio.Env:
    """The GDAL settings of every read (entered around the reads, never set at import): the block
    cache, and the S3 endpoint derived from ``AWS_ENDPOINT_URL`` when GDAL's own variables are
    not set (storage.gdal_options)."""
    options: dict[str, Any] = dict(gdal_options())
    if "GDAL_CACHEMAX" not in os.environ:
        # rasterio passes an integer GDAL_CACHEMAX to GDALSetCacheMax64: bytes, not MB
        options["GDAL_CACHEMAX"] = GDAL_CACHE_MB << 20
    return rasterio.Env(**options)


def inspect_raster(path: str) -> RasterInfo:
    """Open a land-cover raster header and check its structure (single band, integer, CRS)."""
    info, problem = examine_raster(path)
    if problem is not None:
        raise problem
    assert info is not None
    return info


#: Headers of local rasters that passed their checks, by the file's version (``_version``), with
#: the versions of the files GDAL read beside it (sidecars: .aux.xml, .prj ...): a run of
#: thousands of sites plans each against the same few rasters.
_HEADERS: dict[tuple[Any, ...], tuple[RasterInfo, list[tuple[str, tuple[int, ...]]]]] = {}


def _version(path: str) -> tuple[int, ...]:
    """A local file's version: size, modification and change times, inode, and its folder's
    modification time (a sidecar added or removed beside it)."""
    st = os.stat(path)
    folder = os.stat(os.path.dirname(os.path.abspath(path)))
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, folder.st_mtime_ns


def examine_raster(path: str) -> tuple[RasterInfo | None, InputError | None]:
    """A raster's header and, if it fails the structural checks, the error saying why. The
    header is returned with the error when its extent is known (a usable CRS and a north-up
    transform), so a caller can tell whether the bad raster touches a site at all; an unreadable
    file, or one without a usable CRS or georeferencing, has no header. A local file's good
    header is read once per version of the file."""
    try:
        key = (path, *_version(path))
    except (OSError, ValueError):  # a URL, or a file that is not there (opening it says why)
        return _examine(path)[:2]
    known = _HEADERS.get(key)
    if known is not None:
        try:
            if all(_version(f) == v for f, v in known[1]):
                return known[0], None
        except (OSError, ValueError):
            pass
    info, problem, files = _examine(path)
    if info is not None and problem is None:
        try:
            versions = [(f, _version(f)) for f in files if os.path.abspath(f) != os.path.abspath(path)]
        except (OSError, ValueError):
            return info, problem
        if len(_HEADERS) > 1024:
            _HEADERS.clear()
        _HEADERS[key] = (info, versions)
    return info, problem


#: One CRS object per CRS text in a process: the rasters of a catalog in one CRS share it, so that
#: what is worked out per CRS and grid (a site's nominal pixel area, its transformations) is
#: worked out once for all of them (carbon/rules/policies.py ``reference_grid``).
@functools.lru_cache(maxsize=256)
def _crs(wkt: str) -> CRS:
    return CRS.from_wkt(wkt)


def _examine(path: str) -> tuple[RasterInfo | None, InputError | None, list[str]]:
    """``examine_raster`` itself, with the files GDAL read for the header."""
    files: list[str] = []
    try:
        with gdal_env(), rasterio.open(path) as src:
            try:
                crs = _crs(src.crs.to_wkt()) if src.crs else None
            except Exception as exc:  # pyproj CRSError / ProjError: an engineering or broken CRS
                raise InputError(f"raster CRS is not usable for area on the ellipsoid: {exc}", path=path) from None
            info = RasterInfo(
                path=path,
                crs=crs,  # type: ignore[arg-type]
                transform=src.transform,
                width=src.width,
                height=src.height,
                dtype=src.dtypes[0],
                nodata=src.nodata,
                block_height=int(src.block_shapes[0][0]) if src.block_shapes else 1,
            )
            count = src.count
            files = list(src.files)
    except RasterioError as exc:
        return None, InputError(f"cannot open raster (missing, corrupt or not a GeoTIFF): {exc}", path=path), files
    except InputError as exc:
        return None, exc, files
    problems = []
    if count != 1:
        problems.append(f"expected one band of land-cover codes, found {count} bands")
    if not np.issubdtype(np.dtype(info.dtype), np.integer):
        problems.append(
            f"land cover must be stored as integer codes; this raster is {info.dtype} "
            "(a float raster is not a categorical map: convert it to integers with an explicit nodata)"
        )
    if info.crs is None:
        problems.append("raster has no coordinate reference system (CRS)")
    if info.transform.b != 0 or info.transform.d != 0:
        problems.append("rotated or sheared rasters are not supported")
    elif info.transform.a < 0 or info.transform.e > 0:
        problems.append("rasters stored south-up or east-to-west are not supported: rewrite it north-up "
                        "(e.g. gdalwarp) first")
    if info.crs is not None and info.crs.ellipsoid is None:
        problems.append("raster CRS has no ellipsoid (an engineering or local CRS): pixel areas cannot be computed")
    if info.transform.is_identity:
        problems.append("raster has no georeferencing (identity transform)")
    if not problems:
        return info, None, files
    error = InputError("raster fails structural checks", path=path, problems=problems)
    extent_known = (info.crs is not None and info.crs.ellipsoid is not None and not info.transform.is_identity
                    and info.transform.b == 0 and info.transform.d == 0 and info.transform.a > 0
                    and info.transform.e < 0)
    return (info if extent_known else None), error, files


class YearReader:
    """Reads one year's mosaic (its tiles, in catalog order) onto a site grid, by rows.

    ``read`` returns the codes (int64), a validity mask and, per pixel, the index of the
    tile it came from (-1 where no tile has data). The first tile with data wins.
    """

    def __init__(self, infos: list[RasterInfo], grid: Grid, stack: ExitStack) -> None:
        self.infos = infos
        self.grid = grid
        self._sources: list[tuple[object, tuple[int, int] | None]] = []
        stack.enter_context(gdal_env())
        for info in infos:
            try:
                src = stack.enter_context(rasterio.open(info.path))
                offset = aligned_offset(info, grid)
                if offset is None:
                    src = stack.enter_context(
                        WarpedVRT(
                            src,
                            crs=grid.crs.to_wkt(),
                            transform=grid.transform,
                            width=grid.width,
                            height=grid.height,
                            resampling=Resampling.nearest,
                            src_nodata=info.nodata,
                            add_alpha=True,
                            tolerance=1e-6,  # (pixels) near-exact transform: no approximated nearest pick
                        )
                    )
            except RasterioError as exc:
                raise InputError(f"cannot open raster: {exc}", path=info.path) from None
            self._sources.append((src, offset))

    def read(self, row_off: int, nrows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        shape = (nrows, self.grid.width)
        codes = np.zeros(shape, dtype=np.result_type(*[np.dtype(i.dtype) for i in self.infos]))
        valid = np.zeros(shape, dtype=bool)
        tile = self.read_into(row_off, nrows, codes, valid)
        if tile is None:
            tile = np.where(valid, 0, -1).astype(np.int16)
        return codes, valid, tile

    def read_into(self, row_off: int, nrows: int, codes: np.ndarray, valid: np.ndarray) -> np.ndarray | None:
        """Fill ``codes`` and ``valid`` (nrows, width) for rows ``row_off..``; returns the
        tile index per pixel (-1: no tile has data there), or None when there is one raster."""
        if len(self._sources) == 1:  # one raster: read straight into the caller's arrays
            info, (src, offset) = self.infos[0], self._sources[0]
            try:
                self._read_one(info, src, offset, row_off, nrows, codes, valid)
            except RasterioError as exc:
                raise InputError(f"cannot read raster (corrupt or truncated?): {exc}", path=info.path) from None
            return None
        shape = (nrows, self.grid.width)
        codes[:] = 0
        valid[:] = False
        tile = np.full(shape, -1, dtype=np.int16)
        values = np.empty(shape, dtype=codes.dtype)
        ok = np.empty(shape, dtype=bool)
        for k, (info, (src, offset)) in enumerate(zip(self.infos, self._sources, strict=True)):
            try:
                self._read_one(info, src, offset, row_off, nrows, values, ok)
            except RasterioError as exc:
                raise InputError(f"cannot read raster (corrupt or truncated?): {exc}", path=info.path) from None
            take = ok & ~valid
            codes[take] = values[take]
            tile[take] = k
            valid |= take
        return tile

    def _read_one(self, info, src, offset, row_off, nrows, values, ok) -> None:  # type: ignore[no-untyped-def]
        if offset is None:
            band = np.empty((2, nrows, self.grid.width), dtype=np.dtype(info.dtype))
            src.read([1, 2], window=Window(0, row_off, self.grid.width, nrows), out=band)
            values[:] = band[0]
            np.greater(band[1], 0, out=ok)
        else:
            col0, row0 = offset
            r0, r1 = max(row0 + row_off, 0), min(row0 + row_off + nrows, info.height)
            c0, c1 = max(col0, 0), min(col0 + self.grid.width, info.width)
            whole = r0 == row0 + row_off and r1 - r0 == nrows and c0 == col0 and c1 - c0 == self.grid.width
            if not whole:
                values[:] = 0
                ok[:] = False
            if r1 > r0 and c1 > c0:
                window = Window(c0, r0, c1 - c0, r1 - r0)
                dst = (slice(r0 - row0 - row_off, r1 - row0 - row_off), slice(c0 - col0, c1 - col0))
                if whole and values.dtype == np.dtype(info.dtype):
                    src.read(1, window=window, out=values)
                else:
                    values[dst] = src.read(1, window=window)
                if _mask_is_nodata(src):  # the mask is "value != nodata" (or all valid): no second read
                    ok[dst] = True
                else:
                    ok[dst] = src.read_masks(1, window=window) > 0  # an internal mask, as GDAL sees it
        if info.nodata is not None and float(info.nodata).is_integer():
            if np.can_cast(np.min_scalar_type(int(info.nodata)), values.dtype):
                ok &= values != int(info.nodata)
            else:
                ok &= values.astype(np.int64) != int(info.nodata)


def _mask_is_nodata(src: Any) -> bool:
    """Whether GDAL's mask of band 1 is only "value != nodata" (or every pixel valid), which
    the values themselves give, so the mask need not be read."""
    flags = src.mask_flag_enums[0]
    return MaskFlags.per_dataset not in flags and MaskFlags.alpha not in flags
