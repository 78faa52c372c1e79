"""A structurally bad or unreadable tile fails only the sites it covers, and is said once.

The demo's CLCD maps come in two tiles a year: tile ``a`` holds the quarry and the forest park,
tile ``b`` the lakeside wetland; the WorldCover mine is on a grid of its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import Affine

from carbon.io.config import load_config
from carbon.pipeline.loop import compute_config
from carbon.pipeline.validate import validate_inputs
from tests.conftest import DEMO, write_config

TILE_A = {"wuhan-quarry-reclaim", "jiufeng-forest-park"}
OTHERS = {"liangzi-lakeside-wetland", "daye-mine-wc"}


def _landcover(tmp_path: Path) -> Path:
    landcover = tmp_path / "landcover"
    shutil.copytree(DEMO / "landcover", landcover)
    return landcover


def _three_bands_for_tile_a(landcover: Path) -> Path:
    """2022's tile a rewritten with 3 bands (the same georeferencing), named by the catalog."""
    with rasterio.open(landcover / "clcd_2022_a.tif") as src:
        profile, codes = src.profile, src.read(1)
    profile.update(count=3)
    with rasterio.open(landcover / "bad3.tif", "w", **profile) as dst:
        dst.write(np.stack([codes, codes, codes]))
    catalog = landcover / "catalog.csv"
    catalog.write_text(catalog.read_text().replace("clcd_2022_a.tif", "bad3.tif"))
    return landcover / "bad3.tif"


def test_a_bad_tile_fails_only_the_sites_it_covers_and_validate_says_it_once(tmp_path: Path) -> None:
    landcover = _landcover(tmp_path)
    bad = _three_bands_for_tile_a(landcover)
    cfg = write_config(tmp_path / "c.toml", landcover=landcover / "catalog.csv", output_dir=tmp_path / "out")
    run = compute_config(cfg)
    assert set(run.errors) == TILE_A and set(run.results) == OTHERS
    for error in run.errors.values():
        assert f"file {bad}" in error and "found 3 bands" in error
    found = validate_inputs(load_config(cfg), quick=True)
    said = [p for p in found.problems if str(bad) in p]
    assert len(said) == 1, found.problems
    assert "sites 'wuhan-quarry-reclaim', 'jiufeng-forest-park'" in said[0] or (
        "sites 'jiufeng-forest-park', 'wuhan-quarry-reclaim'" in said[0])


def test_a_bad_tile_that_covers_no_site_fails_none(tmp_path: Path) -> None:
    landcover = _landcover(tmp_path)
    with rasterio.open(landcover / "far.tif", "w", driver="GTiff", width=10, height=10, count=3, dtype="float32",
                       crs="EPSG:4326", transform=Affine(0.001, 0, 10, 0, -0.001, 50)) as dst:
        dst.write(np.ones((3, 10, 10), dtype="float32"))
    with (landcover / "catalog.csv").open("a") as f:
        f.write("2022,far.tif,clcd,a tile far from every site,clcd_accuracy.csv\n")
    cfg = write_config(tmp_path / "c.toml", landcover=landcover / "catalog.csv", output_dir=tmp_path / "out")
    run = compute_config(cfg, ["daye-mine-wc", "liangzi-lakeside-wetland"])
    assert run.errors == {} and set(run.results) == OTHERS
    found = validate_inputs(load_config(cfg), quick=True)
    assert len(found.problems) == 1, found.problems
    assert "far.tif" in found.problems[0] and "covers none of the sites" in found.problems[0]


def test_an_unreadable_tile_fails_the_sites_of_its_year_said_once(tmp_path: Path) -> None:
    """A file that is not a raster has no known extent: every site with a map that year may
    need it, so each fails, naming the file; validate says it once, naming the sites."""
    landcover = _landcover(tmp_path)
    (landcover / "garbage.tif").write_bytes(b"not a GeoTIFF")
    with (landcover / "catalog.csv").open("a") as f:
        f.write("2023,garbage.tif,clcd,a broken download,clcd_accuracy.csv\n")
    cfg = write_config(tmp_path / "c.toml", landcover=landcover / "catalog.csv", output_dir=tmp_path / "out")
    found = validate_inputs(load_config(cfg), quick=True)
    said = [p for p in found.problems if "garbage.tif" in p]
    assert len(said) == 1 and "cannot open raster" in said[0], found.problems
    assert all(s in said[0] for s in TILE_A | OTHERS)


def test_run_prints_one_line_per_failed_site_and_no_traceback(tmp_path: Path) -> None:
    """The command a user runs: the failed sites are named with the file and the problem, the
    others published, and no traceback reaches the console (it is in the log at debug level)."""
    landcover = _landcover(tmp_path)
    _three_bands_for_tile_a(landcover)
    cfg = write_config(tmp_path / "c.toml", landcover=landcover / "catalog.csv", output_dir=tmp_path / "out")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--config", str(cfg), "--no-reports"],
                          capture_output=True, text=True, env=env, timeout=600, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert "Traceback" not in out, out[-5000:]
    for site in TILE_A:
        assert f"site {site} failed: raster fails structural checks" in out
    assert "partial; 4 sites" in out


def test_validate_lists_every_problem_of_a_site_at_once(tmp_path: Path) -> None:
    """The quarry with a bad tile in 2022, a missing tile in 2023 and an ecozone the coefficient
    table lacks: validate names all three (it used to stop at the first)."""
    import json

    landcover = _landcover(tmp_path)
    bad = _three_bands_for_tile_a(landcover)
    catalog = landcover / "catalog.csv"
    catalog.write_text(catalog.read_text().replace("clcd_2023_a.tif", "garbage_2023.tif"))
    (landcover / "garbage_2023.tif").write_bytes(b"not a GeoTIFF")
    data = json.loads((DEMO / "sites.geojson").read_text())
    for f in data["features"]:
        if f["properties"]["site_id"] == "wuhan-quarry-reclaim":
            f["properties"]["ecozone"] = "nowhere_zone"
    sites = tmp_path / "sites.geojson"
    sites.write_text(json.dumps(data, ensure_ascii=False))
    cfg = write_config(tmp_path / "c.toml", sites=sites, landcover=catalog, output_dir=tmp_path / "out")
    found = validate_inputs(load_config(cfg), quick=True)
    quarry = [p for p in found.problems if "nowhere_zone" in p]
    assert len(quarry) == 1, found.problems
    assert str(bad) in quarry[0] and "garbage_2023.tif" in quarry[0] and "wuhan-quarry-reclaim" in quarry[0]
