"""Small GeoTIFFs written by tests (for hand-worked cases and bad inputs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

CLCD_ALBERS = "+proj=aea +lat_0=0 +lon_0=105 +lat_1=25 +lat_2=47 +x_0=0 +y_0=0 +ellps=WGS84 +units=m +no_defs"
#: A 30 m Albers grid origin near Wuhan (x, y of the top-left corner).
X0, Y0 = 1_005_000.0, 3_420_000.0


def write_tif(path: Path, codes: np.ndarray, *, crs: str | None = CLCD_ALBERS, transform: Affine | None = None,
              nodata: float | None = 0, dtype: str | None = None) -> Path:
    codes = np.asarray(codes)
    profile = {
        "driver": "GTiff",
        "width": codes.shape[1],
        "height": codes.shape[0],
        "count": 1,
        "dtype": dtype or codes.dtype.name,
        "transform": transform or Affine(30, 0, X0, 0, -30, Y0),
        "nodata": nodata,
    }
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(codes.astype(profile["dtype"]), 1)
    return path


def uniform_history(folder: Path, history: dict[int, int]) -> Path:
    """A catalog of 3 x 3 CLCD rasters, one per year, each all one code: a land-cover history
    worked out by hand for the pixels of a site. Returns the catalog's path."""
    rows = ["year,path,legend"]
    for year, code in history.items():
        write_tif(folder / f"lc{year}.tif", np.full((3, 3), code, dtype=np.uint8))
        rows.append(f"{year},lc{year}.tif,clcd")
    catalog = folder / "catalog.csv"
    catalog.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return catalog
