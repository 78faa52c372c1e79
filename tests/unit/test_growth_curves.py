"""Age curves of biomass worked out by hand (docs/methods.md §9): a Chapman–Richards forest,
an age-class table, the linear default unchanged, the Monte Carlo interval scaling with the
curve, the density maps, and validation errors naming the row."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from pyproj import CRS

from carbon.errors import InputError
from carbon.io.tables import load_catalog, load_coefficients
from carbon.pipeline.site import compute_site
from carbon.rules.dynamics import MATURE_BIN, Coefficients, biomass_table, coefficient_arrays
from carbon.rules.site import Site
from tests.rasters import CLCD_ALBERS, X0, Y0, uniform_history
from tests.unit.test_dynamics import COEF

# CLCD codes: 1 cropland, 2 forest. The forest agb row is the one each test varies; bgb grows
# linearly 1 t C/ha/yr to 25 (as in test_dynamics.py), so it is the same in every test.
# the coefficients of tests/unit/test_dynamics.py without its forest agb row
HEADER, *_ROWS = COEF.strip().splitlines()
REST = "".join(f"{r}\n" for r in _ROWS if not r.startswith("forest,*,agb,"))
LINEAR_AGB = "forest,*,agb,100,,4,hand"  # the linear default: min(100, 4 a)
HA = 4 * 0.09  # the site covers 2 x 2 whole 30 m pixels
SITE = shapely.box(X0, Y0 - 60, X0 + 60, Y0)
CURVE_COLUMNS = ",curve,curve_k,curve_p,age_curve"


def table(agb_row: str, *, curves: bool = False) -> str:
    """A coefficient CSV with the given forest agb row; ``curves``: with the four curve
    columns (the other rows leave them empty)."""
    if not curves:
        return f"{HEADER}\n{agb_row}\n{REST}"
    rest = "".join(f"{line},,,,\n" for line in REST.splitlines())
    return f"{HEADER}{CURVE_COLUMNS}\n{agb_row}\n{rest}"


def run(tmp_path: Path, history: dict[int, int], coef_csv: str, *, name: str = "coef", **kwargs):
    folder = tmp_path / name
    folder.mkdir()
    catalog = load_catalog(uniform_history(folder, history))
    (folder / "coef.csv").write_text(coef_csv)
    coef = load_coefficients(folder / "coef.csv")
    site = Site("s", "S", "reclaimed_mine", "*", SITE, CRS.from_proj4(CLCD_ALBERS))
    return compute_site(site, catalog, coef, method="gain_loss", **kwargs)


def agb(r, year: int) -> float:
    return float(r.stocks.set_index("year").loc[year, "stock_agb_tc"]) / HA


def sink(r, y0: int, y1: int):
    return r.sinks.set_index(["period_start", "period_end"]).loc[(y0, y1)]


REGROWTH = {2020: 1, **{y: 2 for y in range(2021, 2031)}}  # cropland 2020, forest 2021..2030 (age 0..9)


def test_chapman_richards_forest_regrows_along_the_curve(tmp_path: Path) -> None:
    coef = table("forest,*,agb,100,,,hand,chapman_richards,0.1,2,", curves=True)
    r = run(tmp_path, REGROWTH, coef)
    # B(a) = 100 (1 - e^(-0.1 a))^2, B_max = stock_tc_per_ha = 100, k = 0.1/yr, p = 2
    assert agb(r, 2021) == pytest.approx(0)  # age 0
    # age 1: 1 - e^-0.1 = 0.0951626; squared 0.00905592 -> 0.905592
    assert agb(r, 2022) == pytest.approx(0.905592, abs=1e-6)
    # age 4: 1 - e^-0.4 = 0.3296800; squared 0.1086889 -> 10.868887
    assert agb(r, 2025) == pytest.approx(10.868887, abs=1e-6)
    # age 9 (2030): 1 - e^-0.9 = 1 - 0.4065697 = 0.5934303; squared 0.3521596 -> 35.215957
    assert agb(r, 2030) == pytest.approx(35.215957, abs=1e-6)
    assert agb(r, 2030) == pytest.approx(100 * (1 - math.exp(-0.9)) ** 2, rel=1e-12)
    # the rest of the stock as before: bgb 1 x 9, SOC 40 + 20 x 9/20
    total = float(r.stocks.set_index("year").loc[2030, "stock_tc"]) / HA
    assert total == pytest.approx(35.215957 + 9 + 49, abs=1e-6)
    whole = sink(r, 2020, 2030)
    assert whole["gain_agb_tc"] / HA == pytest.approx(35.215957, abs=1e-6)  # grown from age 0
    assert whole["loss_agb_tc"] / HA == pytest.approx(-5)  # the crop biomass, lost at conversion
    # one year's growth, age 8 -> 9: 1 - e^-0.8 = 1 - 0.4493290 = 0.5506710; squared 0.3032386
    # -> 30.323859, so 35.215957 - 30.323859 = 4.892098
    assert sink(r, 2029, 2030)["gain_agb_tc"] / HA == pytest.approx(4.892098, abs=1e-6)
    # the curve applied is recorded beside the coefficient
    used = r.coefficients_used.set_index(["carbon_class", "pool"])["growth_curve"]
    assert used[("forest", "agb")] == "chapman_richards: k=0.1/yr, p=2"
    assert used[("forest", "bgb")] == "linear: 1 t C/ha/yr up to the stock"
    assert used[("forest", "soc")] == "linear change over 20 years from the previous class's stock"


def test_age_curve_is_interpolated_and_flat_after_its_last_age(tmp_path: Path) -> None:
    coef = table("forest,*,agb,100,,,hand,,,,0:0;10:50;20:100", curves=True)
    # cropland 2000, forest from 2001: ages 5, 15 and 30 in 2006, 2016 and 2031
    r = run(tmp_path, {2000: 1, 2001: 2, 2006: 2, 2016: 2, 2031: 2}, coef)
    assert agb(r, 2001) == pytest.approx(0)
    assert agb(r, 2006) == pytest.approx(25)  # halfway from 0 (age 0) to 50 (age 10)
    assert agb(r, 2016) == pytest.approx(75)  # halfway from 50 (age 10) to 100 (age 20)
    assert agb(r, 2031) == pytest.approx(100)  # after the last age: its stock, the mature stock
    assert sink(r, 2006, 2016)["gain_agb_tc"] / HA == pytest.approx(50)
    used = r.coefficients_used.set_index(["carbon_class", "pool"])["growth_curve"]
    assert used[("forest", "agb")] == "age_curve: 0:0;10:50;20:100"


def test_linear_default_is_unchanged(tmp_path: Path) -> None:
    """A table without the curve columns, the same table with them empty, with ``linear``
    named, and an age_curve that traces the same line all give the same numbers; the linear
    numbers are those of test_dynamics.py (4 t C/ha/yr to 100)."""
    history = {2020: 1, 2021: 2, 2024: 2, 2050: 2}
    # without uncertain coefficients every interval is the point value, whatever the table's seed
    old = run(tmp_path, history, table(LINEAR_AGB), name="old", sd_defaults=None)
    assert agb(old, 2024) == pytest.approx(12)  # age 3 x 4
    assert agb(old, 2050) == pytest.approx(100)  # age 29: 116, capped at maturity
    variants = {
        "empty": table(LINEAR_AGB + ",,,,", curves=True),
        "named": table(LINEAR_AGB + ",linear,,,", curves=True),
        "traced": table("forest,*,agb,100,,,hand,,,,0:0;25:100", curves=True),  # 4 a up to age 25
    }
    numeric = [c for c in old.stocks.columns if pd.api.types.is_float_dtype(old.stocks[c])]
    for name, csv in variants.items():
        r = run(tmp_path, history, csv, name=name, sd_defaults=None)
        pd.testing.assert_frame_equal(r.stocks[numeric], old.stocks[numeric], rtol=1e-12)
        for col in ("sink_tco2e", "gain_agb_tc", "loss_agb_tc", "sink_tco2e_upper90", "conservative_sink_tco2e"):
            assert r.sinks[col].tolist() == pytest.approx(old.sinks[col].tolist(), rel=1e-12), col
    # the built-in table has no curve columns: every pool is linear, densities say so
    builtin = load_coefficients(Path(__file__).resolve().parents[2] / "data" / "coefficients" / "ipcc2019_tier1.csv")
    dens = builtin.densities("subtropical_humid_asia", ["forest", "cropland"])
    assert set(dens["curve_agb"]) == {"linear"} and dens["age_curve_agb"].isna().all()
    assert dens["curve_k_agb"].isna().all() and dens["curve_p_agb"].isna().all()


def test_biomass_table_without_curves_is_the_linear_rule() -> None:
    mature = np.array([[100.0, 25.0], [5.0, 0.0]])
    growth = np.array([[4.0, np.nan], [np.nan, np.nan]])
    t = biomass_table(mature, growth)
    assert t[0, 3, 0] == 12 and t[0, 30, 0] == 100 and t[0, 0, 1] == 25 and t[1, 0, 0] == 5
    assert (t[:, MATURE_BIN, :] == mature).all()
    curve = np.array([["linear", "chapman_richards"], ["age_curve", "linear"]], dtype=object)
    k = np.array([[np.nan, 0.1], [np.nan, np.nan]])
    p = np.array([[np.nan, 2.0], [np.nan, np.nan]])
    ages = np.array([[None, None], ["0:0;10:5", None]], dtype=object)
    c = biomass_table(mature, growth, curve, k, p, ages)
    assert c[0, :, 0].tolist() == t[0, :, 0].tolist()  # linear rows untouched
    assert c[0, 9, 1] == pytest.approx(25 * (1 - math.exp(-0.9)) ** 2)
    assert c[1, 4, 0] == pytest.approx(2.0)  # 5 x 4/10
    assert (c[:, MATURE_BIN, :] == mature).all()
    # a Coefficients built as before (no curve fields) is linear
    coef = Coefficients(classes=["forest", "cropland"], stock=np.zeros((2, 5)), growth=np.full((2, 5), np.nan))
    assert coef.curve is None and (coef.biomass == 0).all()


def test_monte_carlo_interval_scales_with_the_curve(tmp_path: Path) -> None:
    """The forest agb coefficient has an SD (20 of 100) and nothing else is uncertain: one
    lognormal factor f per draw scales B_max, hence the whole curve, so the stock of year t is
    const_t + agb_t x f and its 90% interval is agb_t x (f95 - f05): proportional to agb."""
    coef = table("forest,*,agb,100,20,,hand,chapman_richards,0.1,2,", curves=True)
    r = run(tmp_path, REGROWTH, coef, sd_defaults=None, draws=2000)
    s = r.stocks.set_index("year")
    width = s["stock_tc_upper90"] - s["stock_tc_lower90"]
    assert width[2021] == pytest.approx(0, abs=1e-9)  # age 0: no agb, no uncertainty
    ratio = width[2030] / s.loc[2030, "stock_agb_tc"]
    assert ratio > 0.5  # a lognormal with CV 0.2: f95 - f05 is about 0.66
    for y in range(2022, 2031):
        assert width[y] / s.loc[y, "stock_agb_tc"] == pytest.approx(ratio, rel=1e-9)
    # an age table with the same SD scales the same way
    coef = table("forest,*,agb,100,20,,hand,,,,0:0;10:50;20:100", curves=True)
    r = run(tmp_path, REGROWTH, coef, sd_defaults=None, draws=2000, name="table")
    s = r.stocks.set_index("year")
    width = s["stock_tc_upper90"] - s["stock_tc_lower90"]
    assert s.loc[2030, "stock_agb_tc"] / HA == pytest.approx(45)  # age 9: 50 x 9/10
    ratio = width[2030] / s.loc[2030, "stock_agb_tc"]
    for y in range(2022, 2031):
        assert width[y] / s.loc[y, "stock_agb_tc"] == pytest.approx(ratio, rel=1e-9)


def test_density_maps_follow_the_curve(tmp_path: Path) -> None:
    coef = table("forest,*,agb,100,,,hand,chapman_richards,0.1,2,", curves=True)
    run(tmp_path, REGROWTH, coef, maps_dir=tmp_path / "maps")
    with rasterio.open(tmp_path / "maps" / "s_stock_density_2030.tif") as src:
        a = src.read(1)
    # agb 35.215957 (age 9), bgb 9, SOC 49
    assert a[0, 0] == pytest.approx(35.215957 + 9 + 49, abs=1e-4)


def test_densities_carry_the_curve_per_class_and_pool(tmp_path: Path) -> None:
    csv = table("forest,*,agb,100,,,hand,chapman_richards,0.1,2,", curves=True).replace(
        "forest,*,bgb,25,,1,hand,,,,", "forest,*,bgb,25,,,hand,,,,0:0;10:12.5;20:25")
    (tmp_path / "coef.csv").write_text(csv)
    dens = load_coefficients(tmp_path / "coef.csv").densities("*", ["forest", "cropland"])
    assert dens.loc["forest", "curve_agb"] == "chapman_richards"
    assert dens.loc["forest", "curve_k_agb"] == 0.1 and dens.loc["forest", "curve_p_agb"] == 2
    assert dens.loc["forest", "curve_bgb"] == "age_curve"
    assert dens.loc["forest", "age_curve_bgb"] == "0:0;10:12.5;20:25"
    assert dens.loc["cropland", "curve_agb"] == "linear"
    coef = coefficient_arrays(dens)
    assert coef.biomass[0, 15, 1] == pytest.approx(18.75)  # bgb at age 15
    assert coef.biomass[1, 15, 0] == 5  # cropland agb at once


BAD = [
    ("forest,*,agb,100,,,hand,weibull,,,", "row 2, column curve: value 'weibull' fails isin"),
    ("forest,*,agb,100,,,hand,chapman_richards,0.1,,", "row 2: column curve_k/curve_p: chapman_richards needs both"),
    ("forest,*,agb,100,,,hand,chapman_richards,0,2,", "row 2, column curve_k: value 0.0 fails greater_than(0)"),
    ("forest,*,agb,100,,,hand,chapman_richards,0.1,inf,", "row 2, column curve_p: value inf fails finite"),
    ("forest,*,agb,100,,4,hand,,0.1,2,", "row 2: column curve_k/curve_p: given on a row whose curve is not"),
    ("forest,*,agb,100,,,hand,,,,0:0;ten:100", "row 2, column age_curve: value '0:0;ten:100' fails age:stock pairs"),
    ("forest,*,agb,100,,,hand,,,,5:0;10:100", "row 2, column age_curve: value '5:0;10:100' fails ages starting at 0"),
    ("forest,*,agb,100,,,hand,,,,0:0;20:50;10:100", "fails ages starting at 0, strictly increasing"),
    ("forest,*,agb,100,,,hand,,,,0:-1;10:100", "row 2, column age_curve: value '0:-1;10:100' fails stocks >= 0"),
    ("forest,*,agb,100,,,hand,,,,0:0;10:120;20:100", "fails stocks never decreasing with age"),
    ("forest,*,agb,100,,,hand,,,,0:0;10:90", "row 2: column age_curve: its last stock must equal stock_tc_per_ha"),
    ("forest,*,agb,100,,,hand,linear,,,0:0;10:100", "row 2: columns curve and age_curve: a row gives either"),
]


@pytest.mark.parametrize(("row", "message"), BAD)
def test_invalid_curves_are_errors_naming_file_row_and_column(tmp_path: Path, row: str, message: str) -> None:
    path = tmp_path / "coef.csv"
    path.write_text(table(row, curves=True))
    with pytest.raises(InputError) as err:
        load_coefficients(path)
    problems = err.value.problems
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}, row 2") and message in problems[0], problems


def test_a_curve_on_soc_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "coef.csv"
    path.write_text(table(LINEAR_AGB + ",,,,", curves=True).replace("forest,*,soc,60,,,hand,,,,",
                                                                    "forest,*,soc,60,,,hand,,,,0:40;20:60"))
    with pytest.raises(InputError) as err:
        load_coefficients(path)
    assert err.value.problems == [f"{path}, row 6: columns curve/age_curve: an age curve applies to a biomass pool "
                                  "(agb, bgb, deadwood, litter), not to soc (SOC follows its own transition)"]
