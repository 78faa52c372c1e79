"""Run InVEST Carbon once (current and future maps, a pools table) and print JSON: the model's
own totals, independent sums of its output rasters, and the wall time of ``execute`` alone.

Run with InVEST's interpreter (benchmarks/invest/install.sh), not the project's:

    /tmp/invest-venv/bin/python benchmarks/invest/run_carbon.py --lulc-cur a.tif --lulc-fut b.tif \
        --pools pools.csv --workspace ws [--n-workers -1]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import sys
import time

import numpy as np
from osgeo import gdal

gdal.UseExceptions()


def raster_total_ha(path: str) -> float:
    """Sum of the raster's valid values (t C/ha) times its pixel area (ha), read by strips."""
    ds = gdal.Open(path)
    band = ds.GetRasterBand(1)
    nodata = band.GetNoDataValue()
    gt = ds.GetGeoTransform()
    total = 0.0
    step = max(band.GetBlockSize()[1], 256)
    for y0 in range(0, ds.RasterYSize, step):
        a = band.ReadAsArray(0, y0, ds.RasterXSize, min(step, ds.RasterYSize - y0)).astype(np.float64)
        total += float(a[a != nodata].sum()) if nodata is not None else float(a.sum())
    return total * abs(gt[1] * gt[5]) / 1e4


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lulc-cur", required=True)
    p.add_argument("--lulc-fut", required=True)
    p.add_argument("--pools", required=True)
    p.add_argument("--workspace", required=True)
    p.add_argument("--n-workers", type=int, default=-1)
    a = p.parse_args()
    import natcap.invest
    import natcap.invest.carbon

    args = {"workspace_dir": os.path.abspath(a.workspace), "results_suffix": "", "n_workers": a.n_workers,
            "lulc_bas_path": os.path.abspath(a.lulc_cur), "lulc_alt_path": os.path.abspath(a.lulc_fut),
            "carbon_pools_path": os.path.abspath(a.pools), "calc_sequestration": True, "do_valuation": False}
    start = time.perf_counter()
    registry = natcap.invest.carbon.execute(args)
    wall = time.perf_counter() - start
    summary = {}
    with open(registry["summary_csv"], newline="") as f:
        rows = csv.reader(f)
        next(rows)
        for row in rows:
            if row:
                summary[row[3]] = float(row[1])

    def total(key: str) -> float | None:
        return summary.get(os.path.basename(registry[key]))

    keys = ("c_storage_bas", "c_storage_alt", "c_change_bas_alt")
    out = {
        "invest_version": natcap.invest.__version__,
        "wall_time_s": round(wall, 3),
        "n_workers": a.n_workers,
        "totals": {"total_carbon_current_MgC": total("c_storage_bas"),
                   "total_carbon_future_MgC": total("c_storage_alt"),
                   "total_sequestration_MgC": total("c_change_bas_alt")},
        "raster_sums": {k: {"total_x_area_ha": raster_total_ha(registry[k])} for k in keys},
        "peak_rss_self_MiB": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
