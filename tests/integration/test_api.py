"""The public Python API (carbon.api) on real rasters: ESA WorldCover 2020 (v100) and 2021
(v200) of Principe island, a site given as a GeoDataFrame, results checked against reads and
areas computed here independently (rasterio, pyproj.Geod)."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from pyproj import Geod
from rasterio.windows import Window

import carbon.api as cs
from carbon.pipeline.loop import compute_config
from tests.conftest import write_catalog

WC = "esa_worldcover_saotome"
# (the built-in IPCC set has no African tropical ecozone: its subtropical humid rows stand in; the
# coefficients are not under test here)
# a window of 300 x 200 pixels (1/12000 degree) inside the island, on pixel edges
ROW0, COL0, NROWS, NCOLS = 1300, 1000, 300, 200


@pytest.fixture
def principe(shared: Path, tmp_path: Path) -> tuple[gpd.GeoDataFrame, Path, Path]:
    d = shared / WC
    catalog = write_catalog(tmp_path / "catalog.csv", [
        (2020, d / "principe_island_worldcover_2020_v100.tif", "worldcover"),
        (2021, d / "principe_island_worldcover_2021_v200.tif", "worldcover"),
    ])
    with rasterio.open(d / "principe_island_worldcover_2020_v100.tif") as src:
        bounds = rasterio.windows.bounds(Window(COL0, ROW0, NCOLS, NROWS), src.transform)
        crs = src.crs
    gdf = gpd.GeoDataFrame({"site_id": ["principe-block"], "name": ["Principe block"], "site_type": ["forest"],
                            "ecozone": ["subtropical_humid_asia"]},
                           geometry=[shapely.box(*bounds)], crs=crs)
    return gdf, catalog, d


def test_compute_from_a_geodataframe_gives_pandas_xarray_and_geometry(principe) -> None:
    gdf, catalog, _ = principe
    res = cs.compute(gdf, landcover=catalog, draws=500)
    assert res.errors == {}
    # the site's area with data: every pixel is inside and WorldCover has no gap here, so the
    # area is the polygon's geodesic area on WGS84, computed here with pyproj
    lonlat = shapely.segmentize(gdf.geometry.iloc[0], 1e-4)
    geodesic_ha = abs(Geod(ellps="WGS84").geometry_area_perimeter(lonlat)[0]) / 1e4
    stocks = res.stocks.set_index("year")
    assert stocks.loc[2020, "area_ha"] + stocks.loc[2020, "nodata_ha"] == pytest.approx(geodesic_ha, rel=1e-6)
    sinks = res.sinks
    full = sinks[sinks["is_full_period"]]
    assert len(full) == 1 and (full["period_start"].iloc[0], full["period_end"].iloc[0]) == (2020, 2021)
    # the stock array is the stocks table by class and pool
    stock = res.stock["principe-block"]
    assert stock.dims == ("year", "carbon_class", "pool")
    assert float(stock.sel(year=2021).sum()) == pytest.approx(stocks.loc[2021, "stock_tc"], rel=1e-12)
    # the GIS view: the polygon in the input's CRS with the full-period sink
    sites = res.sites
    assert sites.crs == gdf.crs
    assert sites.geometry.iloc[0].equals(gdf.geometry.iloc[0])
    assert sites["sink_tco2e"].iloc[0] == pytest.approx(full["sink_tco2e"].iloc[0])


def test_landcover_is_the_raster_window_with_its_crs(principe) -> None:
    gdf, catalog, d = principe
    res = cs.compute(gdf, landcover=catalog, draws=100)
    ds = cs.landcover(res, "principe-block", chunk_rows=128)
    assert ds.rio.crs.to_epsg() == 4326
    assert dict(ds.sizes) == {"year": 2, "y": NROWS, "x": NCOLS}
    assert ds["code"].chunks is not None  # lazy: read when computed
    for year, name in ((2020, "principe_island_worldcover_2020_v100.tif"), (2021, "principe_island_worldcover_2021_v200.tif")):
        with rasterio.open(d / name) as src:
            expected = src.read(1, window=Window(COL0, ROW0, NCOLS, NROWS))
        np.testing.assert_array_equal(ds["code"].sel(year=year).values, expected)
        np.testing.assert_array_equal(ds["valid"].sel(year=year).values, expected != 0)  # 0 is WorldCover's nodata


def test_compute_from_the_demo_configuration_equals_the_site_loop() -> None:
    res = cs.compute(site_ids=["daye-mine-wc"], draws=10_000)
    loop = compute_config(None, ["daye-mine-wc"])
    assert res.errors == loop.errors == {}
    a = res.sinks.reset_index(drop=True)
    b = loop.table("sinks").reset_index(drop=True)
    assert a.equals(b)


def test_a_bad_site_fails_alone(principe) -> None:
    gdf, catalog, _ = principe
    far = gdf.copy()
    far["site_id"] = ["far-away"]
    far.geometry = [shapely.box(20.0, 20.0, 20.01, 20.01)]
    both = gpd.GeoDataFrame(gpd.pd.concat([gdf, far], ignore_index=True), crs=gdf.crs)
    res = cs.compute(both, landcover=catalog, draws=100)
    assert set(res.site_results) == {"principe-block"}
    assert "outside every raster" in res.errors["far-away"]
