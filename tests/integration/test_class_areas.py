"""Class areas adjusted for map error (docs/methods.md §8): a catalog row names the map's
accuracy-assessment sample; each site and year gets its classes' mapped and adjusted areas.

When the site is the whole map, the adjusted areas and their intervals must be those of the
stratified estimator on the map's own areas: Olofsson et al. (2013, Remote Sens. Environ. 129:
122-131) worked example 1, strata of 22,353 / 1,122,543 / 610,228 pixels and the sample
(97, 0, 3), (3, 279, 18), (2, 1, 97), reproduced here with pixels of exactly 900 m² (30 m on
an equal-area grid, methods §3). The expected numbers are the estimator worked out by hand
in tests/unit/test_accuracy.py (eq. 9-12 of the paper): areas 45,112.40 / 1,050,067.27 /
659,944.33 pixels, standard errors 10,751.40 / 17,652.04 / 18,635.86 pixels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import shapely
from pyproj import CRS
from typer.testing import CliRunner

from carbon.errors import InputError
from carbon.io.tables import load_catalog, load_coefficients
from carbon.pipeline.site import compute_site
from carbon.rules.site import Site
from flows.cli import app
from tests.conftest import REPO, publish, write_config
from tests.rasters import CLCD_ALBERS, X0, Y0, write_tif

STRATA = {1: 22_353, 2: 1_122_543, 3: 610_228}  # CLCD 1 cropland, 2 forest, 3 shrub
SAMPLE = {(1, 1): 97, (1, 2): 0, (1, 3): 3, (2, 1): 3, (2, 2): 279, (2, 3): 18, (3, 1): 2, (3, 2): 1, (3, 3): 97}
AREA_PX = {"cropland": 45_112.40, "forest": 1_050_067.27, "shrubland": 659_944.33}
SE_PX = {"cropland": 10_751.40, "forest": 17_652.04, "shrubland": 18_635.86}
PX_HA = 0.09
WIDTH = 1_755_124 // 4  # 4 rows of 438,781 pixels


def _map(folder: Path) -> tuple[Path, Site]:
    codes = np.concatenate([np.full(n, c, dtype=np.uint8) for c, n in STRATA.items()]).reshape(4, WIDTH)
    write_tif(folder / "map.tif", codes)
    sample = "map_code,reference_code,count\n" + "".join(f"{m},{r},{n}\n" for (m, r), n in SAMPLE.items())
    (folder / "sample.csv").write_text(sample)
    site = Site("whole-map", "the whole map", "other", "subtropical_humid_asia",
                shapely.box(X0, Y0 - 4 * 30, X0 + WIDTH * 30, Y0), CRS.from_proj4(CLCD_ALBERS))
    return folder / "map.tif", site


def _catalog(folder: Path, sample: str = "sample.csv") -> Path:
    path = folder / "catalog.csv"
    path.write_text(f"year,path,legend,accuracy\n2020,map.tif,clcd,{sample}\n2024,map.tif,clcd,{sample}\n")
    return path


def test_the_whole_map_reproduces_the_published_stratified_estimate(tmp_path: Path) -> None:
    _, site = _map(tmp_path)
    coef = load_coefficients(REPO / "data" / "coefficients" / "ipcc2019_tier1.csv")
    r = compute_site(site, load_catalog(_catalog(tmp_path)), coef, draws=200)
    areas = r.class_areas[r.class_areas["year"] == 2020].set_index("carbon_class")
    for cls, n in {"cropland": 22_353, "forest": 1_122_543, "shrubland": 610_228}.items():
        assert areas.loc[cls, "area_ha"] == pytest.approx(n * PX_HA, rel=1e-9)
    for cls, expected in AREA_PX.items():
        assert areas.loc[cls, "area_adjusted_ha"] == pytest.approx(expected * PX_HA, abs=0.01 * PX_HA)
        half = 1.959963984540054 * SE_PX[cls] * PX_HA
        assert areas.loc[cls, "area_adjusted_ha_upper95"] - areas.loc[cls, "area_adjusted_ha"] == pytest.approx(
            half, abs=0.01 * PX_HA)
        assert areas.loc[cls, "adjusted"]
    # the adjusted areas share the mapped total
    assert areas["area_adjusted_ha"].sum() == pytest.approx(areas["area_ha"].sum(), rel=1e-12)


def test_without_a_sample_the_adjusted_areas_are_the_mapped_ones(tmp_path: Path) -> None:
    _, site = _map(tmp_path)
    (tmp_path / "plain.csv").write_text("year,path,legend\n2020,map.tif,clcd\n")
    coef = load_coefficients(REPO / "data" / "coefficients" / "ipcc2019_tier1.csv")
    r = compute_site(site, load_catalog(tmp_path / "plain.csv"), coef, draws=100)
    a = r.class_areas
    assert not a["adjusted"].any()
    assert (a["area_adjusted_ha"] == a["area_ha"]).all() and (a["area_adjusted_ha_upper95"] == a["area_ha"]).all()


@pytest.mark.parametrize("rows, words", [
    ("1,1,1\n1,2,0\n2,2,5\n3,3,4\n", "sampled fewer than twice"),
    ("1,1,5\n2,2,5\n3,3,5\n1,99,2\n", "code 99 is not in the 'clcd' legend"),
    ("1,1,5\n2,2,-1\n3,3,5\n", "count"),
    ("1,1,5\n2,2,5\n3,3,5\n1,1,2\n", "listed twice"),
])
def test_a_bad_sample_is_refused_naming_the_file_and_row(tmp_path: Path, rows: str, words: str) -> None:
    _, site = _map(tmp_path)
    (tmp_path / "bad.csv").write_text("map_code,reference_code,count\n" + rows)
    coef = load_coefficients(REPO / "data" / "coefficients" / "ipcc2019_tier1.csv")
    with pytest.raises(InputError, match="accuracy sample is invalid") as err:
        compute_site(site, load_catalog(_catalog(tmp_path, "bad.csv")), coef, draws=100)
    assert "bad.csv" in str(err.value) and words in str(err.value)


def test_a_missing_sample_file_is_named_by_the_catalog(tmp_path: Path) -> None:
    _map(tmp_path)
    with pytest.raises(InputError, match="accuracy sample file not found"):
        load_catalog(_catalog(tmp_path, "nowhere.csv"))


def test_results_classes_lists_mapped_and_adjusted_areas(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml")
    publish(cfg, ["daye-mine-wc"])
    result = CliRunner().invoke(app, ["results", "--config", str(cfg), "--classes", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {r["site_id"] for r in rows} == {"daye-mine-wc"}
    assert {r["year"] for r in rows} == {2020, 2021, 2022, 2023, 2024}
    for r in rows:  # the demo's catalog has no accuracy sample
        assert r["area_adjusted_ha"] == r["area_ha"] and r["adjusted"] is False
    assert "no accuracy sample" in result.stderr

