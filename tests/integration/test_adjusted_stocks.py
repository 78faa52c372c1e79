"""Stocks and sinks on map-error-adjusted areas (docs/methods.md §8), drawn jointly with the
coefficients in the Monte Carlo.

A 10 x 60 CLCD map of 30 m pixels on an equal-area grid (0.09 ha each): 100 pixels of
cropland (code 1), 300 of forest (2), 200 of shrubland (3), i.e. A = 9, 27 and 18 ha, with the
accuracy sample of Olofsson et al. (2013) worked example 1: (97, 0, 3), (3, 279, 18),
(2, 1, 97). Worked by hand, A_j = sum_i A_i n_ij / n_i.:

    cropland  = 9 x 0.97 + 27 x 3/300   + 18 x 0.02 =  9.36 ha
    forest    = 9 x 0    + 27 x 279/300 + 18 x 0.01 = 25.29 ha
    shrubland = 9 x 0.03 + 27 x 18/300  + 18 x 0.97 = 19.35 ha  (sum 54 ha)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import shapely
from pyproj import CRS

from carbon.io.tables import load_catalog, load_coefficients
from carbon.pipeline.site import compute_site
from carbon.rules.site import Site
from carbon.rules.vocabulary import CO2_PER_C, Z95
from tests.conftest import REPO, write_coefficients
from tests.rasters import CLCD_ALBERS, X0, Y0, write_tif

SAMPLE = {(1, 1): 97, (1, 2): 0, (1, 3): 3, (2, 1): 3, (2, 2): 279, (2, 3): 18, (3, 1): 2, (3, 2): 1, (3, 3): 97}
CLASS = {1: "cropland", 2: "forest", 3: "shrubland"}
ADJUSTED_HA = {"cropland": 9.36, "forest": 25.29, "shrubland": 19.35}
ROWS, COLS = 10, 60
IPCC = REPO / "data" / "coefficients" / "ipcc2019_tier1.csv"
ECOZONE = "subtropical_humid_asia"


def _map(folder: Path, name: str, counts: dict[int, int]) -> np.ndarray:
    codes = np.concatenate([np.full(n, c, dtype=np.uint8) for c, n in counts.items()]).reshape(ROWS, COLS)
    write_tif(folder / name, codes)
    return codes


def _site(method: str) -> Site:
    return Site("mapped", "a mapped site", "other", ECOZONE, shapely.box(X0, Y0 - ROWS * 30, X0 + COLS * 30, Y0),
                CRS.from_proj4(CLCD_ALBERS), properties={"method": method})


def _catalog(folder: Path, maps: dict[int, str], sample: dict[tuple[int, int], int] | None) -> Path:
    if sample is None:
        lines = ["year,path,legend"] + [f"{y},{m},clcd" for y, m in maps.items()]
    else:
        (folder / "sample.csv").write_text("map_code,reference_code,count\n"
                                           + "".join(f"{m},{r},{n}\n" for (m, r), n in sample.items()))
        lines = ["year,path,legend,accuracy"] + [f"{y},{m},clcd,sample.csv" for y, m in maps.items()]
    path = folder / ("catalog.csv" if sample is not None else "plain.csv")
    path.write_text("\n".join(lines) + "\n")
    return path


def _hand_adjusted(mapped_ha: dict[int, float], sample: dict[tuple[int, int], int]) -> dict[str, float]:
    """sum_i A_i n_ij / n_i., by class name."""
    n_i = {i: sum(n for (m, _), n in sample.items() if m == i) for i in CLASS}
    return {CLASS[j]: sum(mapped_ha[i] * sample[(i, j)] / n_i[i] for i in CLASS) for j in CLASS}


def _hand_covariance(mapped_ha: dict[int, float], sample: dict[tuple[int, int], int]) -> np.ndarray:
    """cov(A_j, A_k) = sum_i A_i^2 (q_ij [j == k] - q_ij q_ik) / (n_i. - 1), q_ij = n_ij / n_i."""
    cov = np.zeros((3, 3))
    for i in CLASS:
        n_i = sum(n for (m, _), n in sample.items() if m == i)
        q = np.array([sample[(i, j)] / n_i for j in CLASS])
        cov += mapped_ha[i] ** 2 * (np.diag(q) - np.outer(q, q)) / (n_i - 1)
    return cov


def _ipcc_density(cls: str) -> float:
    """Total stock density (t C/ha) of a class in the ecozone, read from the table itself: per
    pool the ecozone's row, else the row for every ecozone (``*``)."""
    table = pd.read_csv(IPCC)
    rows = table[table["carbon_class"] == cls]
    total = 0.0
    for _, pool in rows.groupby("pool"):
        own = pool[pool["ecozone"] == ECOZONE]
        total += float((own if len(own) else pool[pool["ecozone"] == "*"])["stock_tc_per_ha"].iloc[0])
    return total


def test_stock_difference_stocks_are_the_adjusted_areas_times_the_coefficients(tmp_path: Path) -> None:
    _map(tmp_path, "m.tif", {1: 100, 2: 300, 3: 200})
    assert _hand_adjusted({1: 9.0, 2: 27.0, 3: 18.0}, SAMPLE) == pytest.approx(ADJUSTED_HA, abs=1e-12)
    r = compute_site(_site("stock_difference"), load_catalog(_catalog(tmp_path, {2020: "m.tif", 2024: "m.tif"},
                                                                     SAMPLE)),
                     load_coefficients(IPCC), draws=2000)
    expected = sum(a * _ipcc_density(c) for c, a in ADJUSTED_HA.items())
    mapped = 9 * _ipcc_density("cropland") + 27 * _ipcc_density("forest") + 18 * _ipcc_density("shrubland")
    stocks = r.stocks.set_index("year")
    assert stocks.loc[2020, "stock_tc"] == pytest.approx(expected, rel=1e-9)
    assert stocks.loc[2024, "stock_tc"] == pytest.approx(expected, rel=1e-9)
    assert abs(expected - mapped) > 10  # the adjustment moves the stock: 1.71 ha of forest less
    by_class = r.stocks_by_class[r.stocks_by_class["year"] == 2020].set_index("carbon_class")
    for cls, a in ADJUSTED_HA.items():
        assert by_class.loc[cls, "area_ha"] == pytest.approx(a, rel=1e-9)
        assert by_class.loc[cls, "stock_tc"] == pytest.approx(a * _ipcc_density(cls), rel=1e-9)
    # the figures on the mapped areas stay in the provenance, beside the adjusted ones
    assert r.provenance["map_accuracy"]["areas"] == "adjusted"
    assert r.provenance["map_accuracy"]["on_mapped_areas"]["stock_tc"]["2020"] == pytest.approx(mapped, rel=1e-9)
    # the same map twice with one sample: no change invented by map error, point or draws
    sink = r.sinks.iloc[0]
    assert sink["sink_tco2e"] == pytest.approx(0.0, abs=1e-9)
    assert sink["sink_tco2e_lower95"] == pytest.approx(0.0, abs=1e-9)
    assert sink["sink_tco2e_upper95"] == pytest.approx(0.0, abs=1e-9)
    assert "map error" in sink["uncertainty_method"]


def test_map_error_alone_gives_the_estimators_interval(tmp_path: Path) -> None:
    """Coefficients without SD and no default: the stock's only uncertainty is the areas'. Its
    95% half-width must be z x sqrt(d' Cov d), Cov the estimator's covariance worked by hand."""
    _map(tmp_path, "m.tif", {1: 100, 2: 300, 3: 200})
    density = {"cropland": {"agb": 5.0, "soc": 40.0}, "forest": {"agb": 100.0, "bgb": 20.0, "soc": 60.0},
               "shrubland": {"agb": 10.0, "soc": 50.0}}
    coef = load_coefficients(write_coefficients(tmp_path / "coef.csv", density, ecozone=ECOZONE))
    r = compute_site(_site("stock_difference"), load_catalog(_catalog(tmp_path, {2020: "m.tif"}, SAMPLE)), coef,
                     draws=40_000, sd_defaults=None)
    d = np.array([sum(density[CLASS[j]].values()) for j in CLASS])
    cov = _hand_covariance({1: 9.0, 2: 27.0, 3: 18.0}, SAMPLE)
    sd = float(np.sqrt(d @ cov @ d))
    row = r.stocks.iloc[0]
    point = sum(ADJUSTED_HA[CLASS[j]] * d[j - 1] for j in CLASS)
    assert row["stock_tc"] == pytest.approx(point, rel=1e-9)
    assert (row["stock_tc_upper95"] - row["stock_tc_lower95"]) / 2 == pytest.approx(Z95 * sd, rel=0.05)
    assert row["stock_tc_u95_pct_approach1"] == pytest.approx(Z95 * sd / point * 100, rel=0.03)
    assert row["stock_tc_upper95"] - row["stock_tc_lower95"] > 0


def test_a_perfect_sample_changes_nothing(tmp_path: Path) -> None:
    _map(tmp_path, "a.tif", {1: 100, 2: 300, 3: 200})
    _map(tmp_path, "b.tif", {1: 50, 2: 350, 3: 200})
    perfect = {(i, j): (40 if i == j else 0) for i in CLASS for j in CLASS}
    maps = {2020: "a.tif", 2024: "b.tif"}
    coef = load_coefficients(IPCC)
    plain = compute_site(_site("gain_loss"), load_catalog(_catalog(tmp_path, maps, None)), coef, draws=500)
    adj = compute_site(_site("gain_loss"), load_catalog(_catalog(tmp_path, maps, perfect)), coef, draws=500)
    for col in ("stock_tc", "stock_agb_tc", "stock_soc_tc"):
        assert adj.stocks[col].tolist() == pytest.approx(plain.stocks[col].tolist(), rel=1e-12)
    assert adj.sinks["sink_tco2e"].tolist() == pytest.approx(plain.sinks["sink_tco2e"].tolist(), rel=1e-12)


def test_gain_loss_sinks_move_the_adjusted_hectares_at_each_class_density(tmp_path: Path) -> None:
    """Under gain-loss, a year's adjusted stock is the mapped stock plus (A_c - a_c) x d_c, d_c
    the site's density of class c that year (its stands' ages, its soils' histories), read
    here from the unadjusted run's stock and area by class."""
    _map(tmp_path, "a.tif", {1: 100, 2: 300, 3: 200})
    _map(tmp_path, "b.tif", {1: 50, 2: 350, 3: 200})  # 4.5 ha of cropland became forest
    maps = {2020: "a.tif", 2024: "b.tif"}
    coef = load_coefficients(IPCC)
    plain = compute_site(_site("gain_loss"), load_catalog(_catalog(tmp_path, maps, None)), coef, draws=500)
    adj = compute_site(_site("gain_loss"), load_catalog(_catalog(tmp_path, maps, SAMPLE)), coef, draws=500)
    mapped = {2020: {1: 9.0, 2: 27.0, 3: 18.0}, 2024: {1: 4.5, 2: 31.5, 3: 18.0}}
    expected = {}
    for y, areas in mapped.items():
        by_class = plain.stocks_by_class[plain.stocks_by_class["year"] == y].set_index("carbon_class")
        hand = _hand_adjusted(areas, SAMPLE)
        shift = sum((hand[CLASS[i]] - a) * by_class.loc[CLASS[i], "stock_tc"] / by_class.loc[CLASS[i], "area_ha"]
                    for i, a in areas.items())
        expected[y] = float(plain.stocks.set_index("year").loc[y, "stock_tc"]) + shift
        assert adj.stocks.set_index("year").loc[y, "stock_tc"] == pytest.approx(expected[y], rel=1e-9)
    sink = adj.sinks.set_index(["period_start", "period_end"]).loc[(2020, 2024)]
    assert sink["sink_tco2e"] == pytest.approx((expected[2024] - expected[2020]) * CO2_PER_C, rel=1e-9)
    assert sink["sink_tco2e"] != pytest.approx(plain.sinks.iloc[0]["sink_tco2e"], rel=1e-3)
    # the interval holds the point and is wider than the coefficients' alone
    assert sink["sink_tco2e_lower95"] < sink["sink_tco2e"] < sink["sink_tco2e_upper95"]
    g = [f"gain_{p}_tc" for p in ("agb", "bgb", "deadwood", "litter")]
    assert (adj.sinks[g] >= 0).all().all()


def test_a_class_the_map_never_shows_gets_its_coefficient_in_every_year(tmp_path: Path) -> None:
    """The sample says some mapped cropland and forest is really shrubland, which the map never
    shows at the site: those hectares carry shrubland's coefficient in every year alike (so the
    same map twice has the same stock, and no sink)."""
    _map(tmp_path, "m.tif", {1: 200, 2: 400})  # 18 ha cropland, 36 ha forest, no shrubland
    sample = {(1, 1): 90, (1, 2): 5, (1, 3): 5, (2, 1): 2, (2, 2): 90, (2, 3): 8}
    r = compute_site(_site("stock_difference"), load_catalog(_catalog(tmp_path, {2018: "m.tif", 2020: "m.tif",
                                                                                  2024: "m.tif"}, sample)),
                     load_coefficients(IPCC), draws=500)
    # by hand: shrubland = 18 x 5/100 + 36 x 8/100 = 0.9 + 2.88 = 3.78 ha
    n_i = {1: 100, 2: 100}
    adjusted = {CLASS[j]: sum(a * sample.get((i, j), 0) / n_i[i] for i, a in {1: 18.0, 2: 36.0}.items())
                for j in CLASS}
    assert adjusted["shrubland"] == pytest.approx(3.78)
    expected = sum(a * _ipcc_density(c) for c, a in adjusted.items())
    for year in (2018, 2020, 2024):
        assert r.stocks.set_index("year").loc[year, "stock_tc"] == pytest.approx(expected, rel=1e-9), year
    assert r.sinks["sink_tco2e"].abs().max() == pytest.approx(0.0, abs=1e-9)
    gl = compute_site(_site("gain_loss"), load_catalog(_catalog(tmp_path, {2018: "m.tif", 2020: "m.tif",
                                                                           2024: "m.tif"}, sample)),
                      load_coefficients(IPCC), draws=500)
    shrub = gl.stocks_by_class.set_index(["year", "carbon_class"])
    assert shrub.loc[(2018, "shrubland"), "stock_tc"] == pytest.approx(shrub.loc[(2024, "shrubland"), "stock_tc"])
    assert shrub.loc[(2018, "shrubland"), "stock_tc"] == pytest.approx(3.78 * _ipcc_density("shrubland"), rel=1e-9)
