"""The engine on real third-party rasters (../shared/datasets), checked against the pixel
counts published in the datasets' READMEs, against pyproj.Geod, and against independent
numpy arithmetic written in the tests."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from pyproj import CRS, Geod

from carbon.io.tables import load_catalog, load_coefficients
from carbon.pipeline.site import compute_site
from carbon.rules.site import Site
from tests.conftest import ALL_CLASSES, write_catalog, write_coefficients, write_legend

# Swiss Arealstatistik, 17 classes (README of swiss_arealstatistik_as17)
SWISS_LEGEND = {1: "settlement", 2: "settlement", 3: "settlement", 4: "mining_land", 5: "grassland",
                6: "cropland", 7: "cropland", 8: "grassland", 9: "grassland", 10: "forest", 11: "shrubland",
                12: "shrubland", 13: "water", 14: "water", 15: "grassland", 16: "barren", 17: "snow_ice"}
# Hand-chosen densities (t C/ha) for the tests: round numbers so the sums can be checked by hand.
DENSITY = {"forest": {"agb": 100, "bgb": 25, "soc": 80}, "shrubland": {"agb": 20, "bgb": 8, "soc": 60},
           "grassland": {"agb": 3, "bgb": 6, "soc": 70}, "cropland": {"agb": 5, "soc": 50},
           "wetland": {"agb": 10, "soc": 120}, "settlement": {"soc": 20}}
DENSITY.update({c: {} for c in ALL_CLASSES if c not in DENSITY})
YEARS = {1985: "AS85R_17.tif", 1997: "AS97R_17.tif", 2009: "AS09R_17.tif", 2018: "AS18_17.tif"}
LV95 = CRS.from_epsg(2056)


def total_density(cls: str) -> float:
    return float(sum(DENSITY[cls].values()))


def box_site(path: Path, site_id: str = "extent") -> Site:
    with rasterio.open(path) as src:
        return Site(site_id, site_id, "other", "*", shapely.box(*src.bounds), CRS.from_wkt(src.crs.to_wkt()))


def geodesic_area_ha(geom: shapely.Geometry, crs: CRS) -> float:
    ll = gpd.GeoSeries([geom], crs=crs).to_crs(4326).iloc[0]
    ll = shapely.segmentize(ll, 0.0005)
    return abs(Geod(ellps="WGS84").geometry_area_perimeter(ll)[0]) / 1e4


@pytest.fixture
def swiss(shared: Path, tmp_path: Path):
    d = shared / "swiss_arealstatistik_as17"
    catalog = write_catalog(tmp_path / "catalog.csv", [(y, d / f, "arealstatistik17") for y, f in YEARS.items()])
    write_legend(tmp_path / "legends" / "arealstatistik17.csv", SWISS_LEGEND)
    coef = write_coefficients(tmp_path / "test_coefficients.csv", DENSITY)
    return d, load_catalog(catalog), load_coefficients(coef), tmp_path / "legends"


def test_swiss_class_areas_match_published_pixel_counts(swiss) -> None:
    d, catalog, coef, legends = swiss
    r = compute_site(box_site(d / "AS85R_17.tif"), catalog, coef, legends_dir=legends, method="stock_difference")
    codes = r.area_by_code.set_index(["year", "code"])
    # README "CHANGE OVER TIME" table (ha = pixels of 100 m x 100 m)
    published = {10: [325689, 330317, 331112, 332939], 12: [29610, 28628, 27654, 27750],
                 2: [34694, 40899, 45731, 49993], 7: [212731, 208762, 195833, 187785],
                 16: [53705, 56589, 56734, 57921], 17: [26434, 22764, 21110, 18530], 4: [5739, 4653, 4432, 4774]}
    for code, counts in published.items():
        for year, n in zip(YEARS, counts, strict=True):
            assert codes.loc[(year, code), "pixel_count"] == n
            # ellipsoidal area of a 1 ha LV95 pixel differs from 1 ha by the projection's scale only
            assert codes.loc[(year, code), "area_ha"] == pytest.approx(n, rel=5e-4)
    # same valid mask every year: 1,163,630 ha with data (README)
    assert set(r.stocks["nodata_ha"].round(6)) == {r.stocks["nodata_ha"].round(6).iloc[0]}
    assert r.area_by_code.groupby("year")["pixel_count"].sum().tolist() == [1_163_630] * 4


def test_swiss_multi_year_stock_series_by_hand(swiss) -> None:
    d, catalog, coef, legends = swiss
    r = compute_site(box_site(d / "AS85R_17.tif"), catalog, coef, legends_dir=legends, method="stock_difference")
    # independent: count codes with numpy, apply the legend and the densities, 1 ha a pixel
    expected = {}
    for year, f in YEARS.items():
        with rasterio.open(d / f) as src:
            a = src.read(1)
        values, counts = np.unique(a[a != 0], return_counts=True)
        expected[year] = sum(n * total_density(SWISS_LEGEND[int(v)]) for v, n in zip(values, counts, strict=True))
    stocks = r.stocks.set_index("year")["stock_tc"]
    for year in YEARS:
        assert stocks[year] == pytest.approx(expected[year], rel=5e-4)
    # forest + shrub (woods) grows, so the series is not flat and the sinks carry sign
    sinks = r.sinks.set_index(["period_start", "period_end"])
    whole = sinks.loc[(1985, 2018)]
    assert bool(whole["is_full_period"])
    assert whole["stock_change_tc"] == pytest.approx(expected[2018] - expected[1985], rel=5e-3, abs=1.0)
    assert whole["sink_tco2e"] == pytest.approx(whole["stock_change_tc"] * 44 / 12)
    assert whole["annual_sink_tco2e"] == pytest.approx(whole["sink_tco2e"] / 33)
    # periods: 3 consecutive + the whole period
    assert sorted(sinks.index.tolist()) == [(1985, 1997), (1985, 2018), (1997, 2009), (2009, 2018)]


def test_swiss_transitions_add_up_to_class_areas(swiss) -> None:
    d, catalog, coef, legends = swiss
    r = compute_site(box_site(d / "AS85R_17.tif"), catalog, coef, legends_dir=legends, method="stock_difference")
    t = r.transitions[(r.transitions.period_start == 1985) & (r.transitions.period_end == 2018)]
    by_class = r.stocks_by_class.set_index(["year", "carbon_class"])["area_ha"]
    for cls, area in t.groupby("from_class")["area_ha"].sum().items():
        assert area == pytest.approx(by_class[(1985, cls)], rel=1e-9)
    for cls, area in t.groupby("to_class")["area_ha"].sum().items():
        assert area == pytest.approx(by_class[(2018, cls)], rel=1e-9)
    # glacier retreat shows as snow_ice -> barren
    assert t[(t.from_class == "snow_ice") & (t.to_class == "barren")]["area_ha"].sum() > 1000


def test_municipality_site_area_matches_geodesic_area_projected_crs(shared: Path, swiss) -> None:
    d, catalog, coef, legends = swiss
    munis = gpd.read_file(shared / "swiss_arealstatistik_as17/boundaries/municipalities_in_study_extent.gpkg")
    for name in ("Lausanne", "Bern"):
        row = munis[munis["GMDNAME"] == name].iloc[0]
        site = Site(name.lower(), name, "other", "*", row.geometry, CRS.from_user_input(munis.crs))
        r = compute_site(site, catalog, coef, legends_dir=legends)
        geodesic = geodesic_area_ha(row.geometry, site.crs)
        assert geodesic > 100  # far more than 100 pixels of 1 ha
        assert r.provenance["site_area_ha"] == pytest.approx(geodesic, rel=0.005)
        assert (r.stocks["area_ha"] + r.stocks["nodata_ha"]).tolist() == pytest.approx([r.provenance["site_area_ha"]] * 4)


def test_corine_misaligned_grids_are_aligned_nearest_neighbour(shared: Path, tmp_path: Path) -> None:
    d = shared / "corine_clc_lausanne"
    catalog = load_catalog(write_catalog(tmp_path / "c.csv", [(2006, d / "ls100_06.tif", "corine"), (2012, d / "ls100_12.tif", "corine")]))
    coef = load_coefficients(write_coefficients(tmp_path / "k.csv", DENSITY))
    site = box_site(d / "ls100_12.tif")
    r = compute_site(site, catalog, coef)
    grid = r.provenance["reference_grid"]
    assert grid["year"] == 2012  # the finer grid (99.992 m) is the reference
    codes = r.area_by_code.set_index(["year", "code"])["pixel_count"]
    # 2012 is read as it is: published counts exactly
    assert codes[(2012, 7)] == 160  # mineral extraction
    assert codes[(2012, 24)] == 3479  # coniferous forest
    # 2006 is resampled onto the 2012 grid by nearest neighbour: counts within a few pixels
    for code, n in {7: 114, 23: 2112, 24: 3425, 25: 12667}.items():
        assert abs(codes[(2006, code)] - n) <= max(3, 0.003 * n)
    # mining land grew 2006 -> 2012 and carries no carbon in these densities
    by_class = r.stocks_by_class.set_index(["year", "carbon_class"])["area_ha"]
    assert by_class[(2012, "mining_land")] > by_class[(2006, "mining_land")]


def test_lausanne_polygon_on_corine(shared: Path, tmp_path: Path) -> None:
    d = shared / "corine_clc_lausanne"
    gdf = gpd.read_file(d / "gmb-lausanne.gpkg")
    site = Site("lausanne", "Lausanne", "other", "*", gdf.geometry.iloc[0], CRS.from_user_input(gdf.crs))
    catalog = load_catalog(write_catalog(tmp_path / "c.csv", [(2006, d / "ls250_06.tif", "corine"), (2012, d / "ls250_12.tif", "corine")]))
    coef = load_coefficients(write_coefficients(tmp_path / "k.csv", DENSITY))
    r = compute_site(site, catalog, coef)
    # 4147 ha municipality (README); geodesic area of the polygon within 0.5% of the pixel weights
    assert r.provenance["site_area_ha"] == pytest.approx(geodesic_area_ha(site.geometry, site.crs), rel=0.005)
    assert r.provenance["site_area_ha"] == pytest.approx(4147, rel=0.01)


def test_worldcover_geographic_grid_counts_and_area(shared: Path, tmp_path: Path) -> None:
    d = shared / "esa_worldcover_saotome"
    files = {2020: "saotome_island_worldcover_2020_v100.tif", 2021: "saotome_island_worldcover_2021_v200.tif"}
    catalog = load_catalog(write_catalog(tmp_path / "c.csv", [(y, d / f, "worldcover") for y, f in files.items()]))
    coef = load_coefficients(write_coefficients(tmp_path / "k.csv", DENSITY))
    r = compute_site(box_site(d / files[2020]), catalog, coef)
    codes = r.area_by_code.set_index(["year", "code"])
    published = {10: (9_239_228, 9_255_908), 50: (125_246, 172_971), 60: (179_715, 116_589),
                 40: (7_418, 4_672), 95: (99, 4_637), 30: (371_555, 359_499)}
    for code, (n20, n21) in published.items():
        assert codes.loc[(2020, code), "pixel_count"] == n20
        assert codes.loc[(2021, code), "pixel_count"] == n21
    # 1/12000 deg pixels between 0 and 0.45 N are 85.48 m^2 at most, never 100 m^2
    tree = codes.loc[(2020, 10)]
    assert tree["area_ha"] / tree["pixel_count"] * 1e4 == pytest.approx(85.47, abs=0.02)


@pytest.mark.parametrize("site_crs", ["EPSG:4326", "EPSG:32632"])
def test_site_area_matches_geodesic_area_geographic_crs(shared: Path, tmp_path: Path, site_crs: str) -> None:
    d = shared / "esa_worldcover_saotome"
    catalog = load_catalog(write_catalog(tmp_path / "c.csv", [(2020, d / "saotome_island_worldcover_2020_v100.tif", "worldcover")]))
    coef = load_coefficients(write_coefficients(tmp_path / "k.csv", DENSITY))
    lonlat = shapely.Polygon([(6.52, 0.20), (6.55, 0.19), (6.58, 0.215), (6.57, 0.25), (6.545, 0.262), (6.53, 0.24), (6.515, 0.23)])
    geom = gpd.GeoSeries([lonlat], crs=4326).to_crs(site_crs).iloc[0]
    site = Site("st-hills", "hills", "forest", "*", geom, CRS.from_user_input(site_crs))
    r = compute_site(site, catalog, coef)
    expected = geodesic_area_ha(geom, site.crs)
    assert expected / 0.0085 > 100  # many more than 100 pixels
    assert r.provenance["site_area_ha"] == pytest.approx(expected, rel=0.005)
    assert r.stocks["nodata_ha"].iloc[0] == pytest.approx(0.0, abs=1e-9)


def test_invest_pools_table_runs_unchanged_and_matches_reference(shared: Path, tmp_path: Path) -> None:
    d = shared / "invest_willamette"
    catalog = load_catalog(write_catalog(tmp_path / "c.csv", [(2000, d / "lulc_samp_cur.tif", "lucode"), (2030, d / "lulc_samp_fut.tif", "lucode")]))
    coef = load_coefficients(d / "carbon_pools_willamette.csv")
    site = box_site(d / "lulc_samp_cur.tif")
    r = compute_site(site, catalog, coef)
    pools = pd.read_csv(d / "carbon_pools_willamette.csv")
    pools.columns = [c.lower() for c in pools.columns]
    total = pools.set_index("lucode")[["c_above", "c_below", "c_soil", "c_dead"]].sum(axis=1)
    planar = {}
    for year, f in ((2000, "lulc_samp_cur.tif"), (2030, "lulc_samp_fut.tif")):
        with rasterio.open(d / f) as src:
            a = src.read(1)
        v, n = np.unique(a[a != 255], return_counts=True)
        planar[year] = float(sum(total[int(c)] * k * 0.09 for c, k in zip(v, n, strict=True)))
    # README reference (naive planar lookup): 41,401,391 and 37,875,296 Mg C
    assert planar[2000] == pytest.approx(41_401_391, abs=1)
    assert planar[2030] == pytest.approx(37_875_296, abs=1)
    stocks = r.stocks.set_index("year")
    # our areas are ellipsoidal: UTM 10N map units understate area by ~0.08% here
    area_ratio = stocks.loc[2000, "area_ha"] / (r.area_by_code.query("year == 2000")["pixel_count"].sum() * 0.09)
    assert 1.0005 < area_ratio < 1.0012
    for year in (2000, 2030):
        assert stocks.loc[year, "stock_tc"] / area_ratio == pytest.approx(planar[year], rel=2e-4)
    sink = r.sinks.iloc[0]
    assert sink["stock_change_tc"] / area_ratio == pytest.approx(-3_526_095, rel=1e-3)
    assert sink["sink_tco2e"] < 0  # harvest and residential growth: an emission


def test_an_invest_pools_table_without_sds_gets_the_default_uncertainty_and_says_so(shared: Path, tmp_path: Path) -> None:
    """InVEST's pools table has no SD column: under the default policy every stock and sink
    has a non-zero interval, and the tables say which coefficients were defaulted."""
    d = shared / "invest_willamette"
    catalog = load_catalog(write_catalog(tmp_path / "c.csv", [(2000, d / "lulc_samp_cur.tif", "lucode"),
                                                             (2030, d / "lulc_samp_fut.tif", "lucode")]))
    coef = load_coefficients(d / "carbon_pools_willamette.csv")
    site = box_site(d / "lulc_samp_cur.tif")
    r = compute_site(site, catalog, coef, draws=2000)
    stocks, sink = r.stocks, r.sinks.iloc[0]
    assert (stocks["stock_tc_upper95"] > stocks["stock_tc_lower95"]).all()
    assert sink["sink_tco2e_upper90"] > sink["sink_tco2e_lower90"]
    assert sink["sink_tco2e_u90_pct"] > 0
    assert "default SD for" in sink["uncertainty_method"]
    used = r.coefficients_used
    with_stock = used[used["stock_tc_per_ha"] > 0]
    assert with_stock["sd_source"].str.startswith("default: 95% interval of ±90%").all()
    # the default SD is 90% / 1.96 of the coefficient
    assert (with_stock["sd_tc_per_ha"] / with_stock["stock_tc_per_ha"]).to_numpy() == pytest.approx(0.90 / 1.959963984540054)
    assert r.provenance["monte_carlo"]["sd_unknown"] == []
    # with no default policy the same run has no interval from those coefficients, and says so
    bare = compute_site(site, catalog, coef, draws=200, sd_defaults=None)
    assert bare.sinks.iloc[0]["sink_tco2e_u90_pct"] == 0
    assert "uncertainty unknown (no SD, no default) for" in bare.sinks.iloc[0]["uncertainty_method"]
