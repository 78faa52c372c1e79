"""Gain-loss dynamics worked out by hand: regrowth after cropland, a soil transition part way,
a forest cleared, a mature forest staying forest, and a real multi-year site checked against
an independent per-pixel implementation written here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
import xarray as xr
from pyproj import CRS

from carbon.io.tables import load_catalog, load_coefficients
from carbon.pipeline.site import compute_site
from carbon.rules.dynamics import land_cover_history
from carbon.rules.site import Site
from tests.conftest import write_catalog
from tests.rasters import CLCD_ALBERS, X0, Y0, uniform_history

# CLCD codes: 1 cropland, 2 forest, 8 impervious (settlement)
# Forest grows 4 t C/ha/yr above ground and 1 below ground, to 100 and 25 at maturity.
COEF = """carbon_class,ecozone,pool,stock_tc_per_ha,sd_tc_per_ha,growth_tc_per_ha_yr,source
forest,*,agb,100,,4,hand
forest,*,bgb,25,,1,hand
forest,*,deadwood,0,,,hand
forest,*,litter,0,,,hand
forest,*,soc,60,,,hand
cropland,*,agb,5,,,hand
cropland,*,bgb,0,,,hand
cropland,*,deadwood,0,,,hand
cropland,*,litter,0,,,hand
cropland,*,soc,40,,,hand
settlement,*,agb,0,,,hand
settlement,*,bgb,0,,,hand
settlement,*,deadwood,0,,,hand
settlement,*,litter,0,,,hand
settlement,*,soc,30,,,hand
"""
HA = 4 * 0.09  # the site covers 2 x 2 whole 30 m pixels
SITE = shapely.box(X0, Y0 - 60, X0 + 60, Y0)


def run(tmp_path: Path, history: dict[int, int], **props):
    catalog = load_catalog(uniform_history(tmp_path, history))
    (tmp_path / "coef.csv").write_text(COEF)
    coef = load_coefficients(tmp_path / "coef.csv")
    site = Site("s", "S", "reclaimed_mine", "*", SITE, CRS.from_proj4(CLCD_ALBERS), properties=props)
    return compute_site(site, catalog, coef, method="gain_loss")


def per_ha(r, year: int, col: str = "stock_tc") -> float:
    return float(r.stocks.set_index("year").loc[year, col]) / HA


def sink(r, y0: int, y1: int):
    return r.sinks.set_index(["period_start", "period_end"]).loc[(y0, y1)]


def test_cropland_turned_to_forest_regrows_for_three_years(tmp_path: Path) -> None:
    r = run(tmp_path, {2020: 1, 2021: 2, 2022: 2, 2023: 2, 2024: 2})
    # 2020 cropland: 5 + 40. 2021 first forest year, age 0: no biomass yet; soil still cropland's 40.
    assert per_ha(r, 2020) == pytest.approx(45)
    assert per_ha(r, 2021) == pytest.approx(40)
    # age 1, 2, 3: agb 4a, bgb 1a; SOC 40 + 20 x a/20
    assert per_ha(r, 2022) == pytest.approx(4 + 1 + 41)
    assert per_ha(r, 2023) == pytest.approx(8 + 2 + 42)
    assert per_ha(r, 2024) == pytest.approx(12 + 3 + 43)
    assert per_ha(r, 2024, "stock_agb_tc") == pytest.approx(12)
    conv = sink(r, 2020, 2021)
    assert conv["loss_agb_tc"] / HA == pytest.approx(-5)  # the crop biomass is lost at conversion
    assert conv["gain_agb_tc"] == pytest.approx(0)
    assert conv["sink_tco2e"] / HA == pytest.approx(-5 * 44 / 12)
    whole = sink(r, 2020, 2024)
    assert whole["stock_change_tc"] / HA == pytest.approx(58 - 45)
    assert whole["gain_agb_tc"] / HA == pytest.approx(12)
    assert whole["loss_agb_tc"] / HA == pytest.approx(-5)
    assert whole["gain_bgb_tc"] / HA == pytest.approx(3)
    assert whole["stock_change_soc_tc"] / HA == pytest.approx(3)
    # the regrowing years: a steady 5 t C/ha/yr of biomass plus 1 of soil
    for y in (2021, 2022, 2023):
        assert sink(r, y, y + 1)["stock_change_tc"] / HA == pytest.approx(6)


def test_soil_transition_five_years_into_twenty(tmp_path: Path) -> None:
    r = run(tmp_path, {2015: 1, 2016: 2, 2021: 2})
    # the change is dated 2016; in 2021, five years on, SOC = 40 + (60 - 40) x 5/20 = 45
    assert per_ha(r, 2021, "stock_soc_tc") == pytest.approx(45)
    assert per_ha(r, 2016, "stock_soc_tc") == pytest.approx(40)
    assert per_ha(r, 2021, "stock_agb_tc") == pytest.approx(20)  # age 5 x 4
    assert sink(r, 2016, 2021)["stock_change_soc_tc"] / HA == pytest.approx(5)


def test_soil_reaches_the_new_stock_after_twenty_years_and_stays(tmp_path: Path) -> None:
    r = run(tmp_path, {2000: 1, 2001: 2, 2021: 2, 2030: 2})
    assert per_ha(r, 2021, "stock_soc_tc") == pytest.approx(60)
    assert per_ha(r, 2030, "stock_soc_tc") == pytest.approx(60)
    assert per_ha(r, 2030, "stock_agb_tc") == pytest.approx(100)  # 29 x 4 capped at maturity


def test_forest_cleared_is_an_emission(tmp_path: Path) -> None:
    r = run(tmp_path, {2020: 2, 2021: 8, 2022: 8})
    assert per_ha(r, 2020) == pytest.approx(185)  # mature forest (initial_age: mature)
    cleared = sink(r, 2020, 2021)
    assert cleared["loss_agb_tc"] / HA == pytest.approx(-100)
    assert cleared["loss_bgb_tc"] / HA == pytest.approx(-25)
    assert cleared["stock_change_soc_tc"] == pytest.approx(0)  # soil starts moving after the change
    assert cleared["sink_tco2e"] / HA == pytest.approx(-125 * 44 / 12)
    assert sink(r, 2021, 2022)["stock_change_soc_tc"] / HA == pytest.approx((30 - 60) / 20)


def test_mature_forest_staying_forest_has_zero_sink(tmp_path: Path) -> None:
    r = run(tmp_path, {2018: 2, 2019: 2, 2021: 2, 2024: 2})
    assert (r.sinks["sink_tco2e"].abs() < 1e-9).all()
    assert (r.sinks["gain_agb_tc"].abs() < 1e-9).all() and (r.sinks["loss_agb_tc"].abs() < 1e-9).all()
    assert per_ha(r, 2024) == pytest.approx(185)


def test_initial_age_makes_existing_stands_grow(tmp_path: Path) -> None:
    r = run(tmp_path, {2020: 2, 2022: 2}, initial_age=10)
    assert per_ha(r, 2020, "stock_agb_tc") == pytest.approx(40)  # 10 years x 4
    assert per_ha(r, 2022, "stock_agb_tc") == pytest.approx(48)
    assert sink(r, 2020, 2022)["gain_agb_tc"] / HA == pytest.approx(8)
    assert sink(r, 2020, 2022)["gain_bgb_tc"] / HA == pytest.approx(2)


def test_history_first_year_and_previous_class() -> None:
    stack = xr.DataArray(np.array([[[0, 1]], [[1, 1]], [[1, -1]], [[2, 1]]]), dims=("year", "y", "x"),
                         coords={"year": [2000, 2001, 2002, 2003]})
    h = land_cover_history(stack)
    # pixel 0: 0 -> 1 (2001) -> 2 (2003); pixel 1: 1 throughout, with a gap in 2002
    assert h["first_year"].sel(x=0).squeeze().values.tolist() == [-1, 2001, 2001, 2003]
    assert h["previous_class"].sel(x=0).squeeze().values.tolist() == [-1, 0, 0, 1]
    assert h["first_year"].sel(x=1).squeeze().values.tolist() == [-1, -1, -2, -1]


SWISS = {1985: "AS85R_17.tif", 1997: "AS97R_17.tif", 2009: "AS09R_17.tif", 2018: "AS18_17.tif"}
SWISS_LEGEND = {1: "settlement", 2: "settlement", 3: "settlement", 4: "settlement", 5: "cropland", 6: "cropland",
                7: "cropland", 8: "cropland", 9: "cropland", 10: "forest", 11: "forest", 12: "forest", 13: "settlement",
                14: "settlement", 15: "cropland", 16: "settlement", 17: "settlement"}


def test_real_multi_year_site_matches_an_independent_pixel_simulation(shared: Path, tmp_path: Path) -> None:
    """Four Swiss epochs (1985-2018) on a 40 km2 window, gain-loss, against a plain per-pixel
    implementation of the rules written here."""
    d = shared / "swiss_arealstatistik_as17"
    legends = tmp_path / "legends"
    legends.mkdir()
    (legends / "as17.csv").write_text("code,label,carbon_class\n" + "".join(
        f"{c},c{c},{k}\n" for c, k in SWISS_LEGEND.items()))
    (tmp_path / "coef.csv").write_text(COEF)
    catalog = load_catalog(write_catalog(tmp_path / "c.csv", [(y, d / f, "as17") for y, f in SWISS.items()]))
    coef = load_coefficients(tmp_path / "coef.csv")
    # a window around Lausanne's northern forests, 80 x 50 pixels of 1 ha
    x0, y0 = 2_535_050, 1_160_050  # on the raster's pixel edges
    site = Site("jorat", "Jorat", "forest", "*", shapely.box(x0, y0, x0 + 8000, y0 + 5000), CRS.from_epsg(2056))
    r = compute_site(site, catalog, coef, legends_dir=legends, method="gain_loss")

    densities = {"forest": (100, 25, 60, 4, 1), "cropland": (5, 0, 40, 0, 0), "settlement": (0, 0, 30, 0, 0)}
    years = list(SWISS)
    stacks = []
    for y in years:
        with rasterio.open(d / SWISS[y]) as src:
            win = rasterio.windows.from_bounds(x0, y0, x0 + 8000, y0 + 5000, src.transform).round_offsets().round_lengths()
            stacks.append(src.read(1, window=win))
    codes = np.stack(stacks)
    assert (codes > 0).all()  # no nodata in this window
    expected = {y: 0.0 for y in years}
    for px in codes.reshape(len(years), -1).T:
        classes = [SWISS_LEGEND[int(c)] for c in px]
        for i in range(1, len(classes) - 1):  # short flicker A -> B -> A is map noise (maps <= 3 years apart)
            if classes[i - 1] == classes[i + 1] != classes[i] and years[i + 1] - years[i - 1] <= 3:
                classes[i] = classes[i - 1]
        # a change first seen in year y, the previous map being of year p, happened in one of the
        # years p+1 .. y, each with weight 1/(y - p) (methods §9); the soil transition starts at
        # their mean, (p + 1 + y) / 2
        change_years, soc_at_start = None, None
        for i, y in enumerate(years):
            k = classes[i]
            agb, bgb, soc, g_agb, g_bgb = densities[k]
            if i == 0:
                change_years, soc_at_start, soc_from_year = None, soc, None
            elif k != classes[i - 1]:
                p = years[i - 1]
                when = (p + 1 + y) / 2
                # SOC at the change, from the previous run's trajectory
                prev = densities[classes[i - 1]][2]
                if soc_from_year is None:
                    soc_now = prev
                else:
                    f = min(1.0, (when - soc_from_year) / 20)
                    soc_now = soc_at_start + (prev - soc_at_start) * f
                change_years, soc_at_start, soc_from_year = list(range(p + 1, y + 1)), soc_now, when
            if change_years is None:
                bio = agb + bgb  # mature since before the first map
                soil = soc
            else:
                bio = sum((min(agb, (y - c) * g_agb) if g_agb else agb) + (min(bgb, (y - c) * g_bgb) if g_bgb else bgb)
                          for c in change_years) / len(change_years)
                soil = soc_at_start + (soc - soc_at_start) * min(1.0, (y - soc_from_year) / 20)
            expected[y] += bio + soil  # t C on 1 ha
    got = r.stocks.set_index("year")["stock_tc"]
    for y in years:
        # the projection's areal scale makes a 100 m LV95 pixel differ from 1 ha by < 0.05%
        assert got[y] == pytest.approx(expected[y], rel=5e-4)
    assert got[2018] != pytest.approx(expected[1985], rel=1e-3)  # the series is not flat


def test_single_year_flicker_is_map_noise_not_a_clearing(tmp_path: Path) -> None:
    """Forest mapped as cropland for one year only: under gain-loss that is no conversion
    (the stand keeps its age and biomass); a change that persists is one."""
    r = run(tmp_path, {2018: 2, 2019: 2, 2020: 1, 2021: 2, 2022: 2})
    assert (r.sinks["sink_tco2e"].abs() < 1e-9).all()
    assert r.provenance["flicker_filtered_ha"]["2020"] == pytest.approx(HA)
    (tmp_path / "p").mkdir()
    persisted = run(tmp_path / "p", {2018: 2, 2019: 2, 2020: 1, 2021: 1, 2022: 2})
    assert sink(persisted, 2019, 2020)["loss_agb_tc"] / HA == pytest.approx(-100)


def test_flicker_filter_skips_years_without_data() -> None:
    from carbon.rules.dynamics import INVALID, filter_flicker

    a, b = 3, 5
    stack = np.array([[a, a, a], [b, INVALID, b], [INVALID, b, INVALID], [a, a, b]])
    out, changed = filter_flicker(stack)
    # pixel 0: A, B, -, A -> B is flicker; pixel 1: A, -, B, A -> B is flicker; pixel 2: A, B, -, B stays
    assert out[:, 0].tolist() == [a, a, INVALID, a]
    assert out[:, 1].tolist() == [a, INVALID, a, a]
    assert out[:, 2].tolist() == [a, b, INVALID, b]
    assert changed.sum() == 2
