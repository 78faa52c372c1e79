"""A tiny site worked out by hand: fractional boundary pixels, stocks, sink, transitions, nodata."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from pyproj import CRS

from carbon.io.tables import load_catalog, load_coefficients
from carbon.pipeline.site import compute_site
from carbon.rules.site import Site
from tests.conftest import write_catalog, write_coefficients
from tests.rasters import CLCD_ALBERS, X0, Y0, write_tif

# CLCD codes: 2 forest, 3 shrub, 4 grassland, 7 barren; 0 nodata
Y2020 = np.array([[7, 7, 4, 1], [7, 4, 4, 1], [1, 1, 1, 1], [1, 1, 1, 1]], dtype=np.uint8)
Y2023 = np.array([[2, 3, 2, 1], [4, 2, 2, 1], [1, 1, 1, 1], [1, 1, 1, 1]], dtype=np.uint8)
DENSITY = {"forest": {"agb": 100, "bgb": 20, "soc": 30}, "shrubland": {"agb": 25, "soc": 15},
           "grassland": {"soc": 20}, "barren": {}, "cropland": {"soc": 40}}
# 90 m x 60 m polygon from x0+15 to x0+75: half of column 0, all of column 1, half of column 2,
# rows 0 and 1 -> 4 pixel-equivalents of 0.09 ha = 0.36 ha.
SITE = shapely.box(X0 + 15, Y0 - 60, X0 + 75, Y0)


def run(tmp_path: Path, y2023: np.ndarray, **kw):
    a = write_tif(tmp_path / "lc2020.tif", Y2020)
    b = write_tif(tmp_path / "lc2023.tif", y2023)
    catalog = load_catalog(write_catalog(tmp_path / "catalog.csv", [(2020, a.name, "clcd"), (2023, b.name, "clcd")]))
    coef = load_coefficients(write_coefficients(tmp_path / "coef.csv", DENSITY))
    site = Site("quarry", "Quarry", "reclaimed_mine", "*", SITE, CRS.from_proj4(CLCD_ALBERS))
    kw.setdefault("method", "stock_difference")  # the stock-difference rules (methods §2, §6)
    return compute_site(site, catalog, coef, **kw)


def test_hand_worked_stocks_and_sink(tmp_path: Path) -> None:
    r = run(tmp_path, Y2023)
    s = r.stocks.set_index("year")
    # 2020: barren 0.5+1+0.5 px, grass 0.5+1+0.5 px -> 0.18 ha x 20 = 3.6 t C
    assert s.loc[2020, "area_ha"] == pytest.approx(0.36)
    assert s.loc[2020, "stock_tc"] == pytest.approx(3.6)
    # 2023: forest 2.5 px (0.225 ha x 150), shrub 1 px (0.09 x 40), grass 0.5 px (0.045 x 20) = 38.25
    assert s.loc[2023, "stock_tc"] == pytest.approx(38.25)
    assert s.loc[2023, "stock_agb_tc"] == pytest.approx(0.225 * 100 + 0.09 * 25)
    sink = r.sinks.iloc[0]
    assert (sink["period_start"], sink["period_end"], sink["period_years"]) == (2020, 2023, 3)
    assert sink["stock_change_tc"] == pytest.approx(34.65)
    assert sink["sink_tco2e"] == pytest.approx(34.65 * 44 / 12)  # 127.05 t CO2e, a removal
    assert sink["annual_sink_tco2e"] == pytest.approx(42.35)
    t = r.transitions.set_index(["from_class", "to_class"])["area_ha"]
    assert t[("barren", "forest")] == pytest.approx(0.045)
    assert t[("barren", "shrubland")] == pytest.approx(0.09)
    assert t[("barren", "grassland")] == pytest.approx(0.045)
    assert t[("grassland", "forest")] == pytest.approx(0.18)
    assert t.sum() == pytest.approx(0.36)
    # the audit trail: pixels touched and area by source code
    codes = r.area_by_code.set_index(["year", "code"])
    assert codes.loc[(2020, 7), "pixel_count"] == 3
    assert codes.loc[(2020, 7), "area_ha"] == pytest.approx(0.18)
    used = r.coefficients_used.set_index(["carbon_class", "pool"])
    assert used.loc[("forest", "agb"), "stock_tc_per_ha"] == 100
    assert used.loc[("forest", "agb"), "source"] == "test value"


def test_nodata_pixel_is_left_out_of_both_years(tmp_path: Path) -> None:
    y2023 = Y2023.copy()
    y2023[1, 2] = 0  # half of this pixel is inside the site: 0.045 ha without data in 2023
    r = run(tmp_path, y2023)
    s = r.stocks.set_index("year")
    assert s.loc[2023, "nodata_ha"] == pytest.approx(0.045)
    assert s.loc[2023, "stock_tc"] == pytest.approx(38.25 - 0.045 * 150)
    assert s.loc[2020, "nodata_ha"] == 0
    sink = r.sinks.iloc[0]
    assert sink["area_ha"] == pytest.approx(0.315)
    assert sink["nodata_ha"] == pytest.approx(0.045)
    # the 2020 grass under that pixel is not counted at the start of the period either
    assert sink["stock_start_tc"] == pytest.approx(3.6 - 0.045 * 20)
    assert sink["stock_change_tc"] == pytest.approx(31.5 - 2.7)


def test_density_maps_are_cloud_optimized_and_per_pixel(tmp_path: Path) -> None:
    r = run(tmp_path, Y2023, maps_dir=tmp_path / "maps")
    assert r.site_id == "quarry"
    path = tmp_path / "maps" / "quarry_stock_density_2023.tif"
    with rasterio.open(path) as src:
        assert src.driver == "GTiff" and src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        a = src.read(1)
    assert a[0, 1] == pytest.approx(40)  # shrub
    assert a[1, 1] == pytest.approx(150)  # forest
    with rasterio.open(tmp_path / "maps" / "quarry_stock_change_2020_2023.tif") as src:
        change = src.read(1)
    assert change[0, 0] == pytest.approx(150)  # barren -> forest
    assert change[1, 1] == pytest.approx(130)  # grass -> forest


def test_strips_give_the_same_answer_as_one_block(tmp_path: Path) -> None:
    whole = run(tmp_path, Y2023)
    strips = run(tmp_path, Y2023, max_cells=1)  # one row at a time
    assert strips.stocks["stock_tc"].tolist() == pytest.approx(whole.stocks["stock_tc"].tolist(), rel=1e-12)
    assert strips.sinks["sink_tco2e"].tolist() == pytest.approx(whole.sinks["sink_tco2e"].tolist(), rel=1e-12)
