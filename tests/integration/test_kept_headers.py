"""A process keeps raster headers between the sites it meters, per version of the file
(carbon/io/rasters.py): a raster rewritten in place between two sites must be read again."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio

from carbon.pipeline.loop import compute_config
from tests.conftest import DEMO, write_config

SITE = "wuhan-quarry-reclaim"


def test_a_raster_rewritten_in_place_between_two_sites_is_read_again(tmp_path: Path) -> None:
    landcover = tmp_path / "landcover"
    shutil.copytree(DEMO / "landcover", landcover)
    cfg = write_config(tmp_path / "c.toml", landcover=landcover / "catalog.csv", output_dir=tmp_path / "out")
    first = compute_config(cfg, [SITE]).results[SITE].area_by_code

    tif = landcover / "clcd_2024_a.tif"  # the quarry's 2024 tile
    before = os.stat(tif)
    with rasterio.open(tif, "r+") as dst:  # in place: the same file (inode), every pixel with data cropland
        codes = dst.read(1)
        dst.write(np.where(codes == 0, 0, 1).astype(codes.dtype), 1)
    os.utime(tif, ns=(before.st_atime_ns, before.st_mtime_ns))  # and its modification time put back
    assert os.stat(tif).st_ino == before.st_ino

    second = compute_config(cfg, [SITE]).results[SITE].area_by_code
    y1, y2 = first[first["year"] == 2024], second[second["year"] == 2024]
    assert len(set(y1["code"])) > 1  # the quarry had several classes in 2024
    assert list(y2["code"]) == [1]  # now cropland (CLCD code 1) alone, over the same pixels
    assert y2["area_ha"].sum() == pytest.approx(y1["area_ha"].sum(), rel=1e-12)
    assert int(y2["pixel_count"].sum()) == int(y1["pixel_count"].sum())
    rest = [df[df["year"] != 2024].reset_index(drop=True) for df in (first, second)]
    pd.testing.assert_frame_equal(*rest)


def test_a_raster_whose_header_changes_in_place_is_read_with_its_new_header(tmp_path: Path) -> None:
    landcover = tmp_path / "landcover"
    shutil.copytree(DEMO / "landcover", landcover)
    cfg = write_config(tmp_path / "c.toml", landcover=landcover / "catalog.csv", output_dir=tmp_path / "out")
    assert SITE in compute_config(cfg, [SITE]).results

    tif = landcover / "clcd_2024_a.tif"
    before = os.stat(tif)
    with rasterio.open(tif, "r+") as dst:  # every pixel with data cropland (code 1), and 1 now the nodata value
        codes = dst.read(1)
        dst.write(np.where(codes == 0, 0, 1).astype(codes.dtype), 1)
        dst.nodata = 1
    os.utime(tif, ns=(before.st_atime_ns, before.st_mtime_ns))

    run = compute_config(cfg, [SITE])  # read with the old header (nodata 0), the site would be all cropland
    assert SITE not in run.results
    assert "no land-cover data inside the site in map year(s) [2024]" in run.errors[SITE]
