"""A site across the antimeridian, end to end: two small EPSG:4326 rasters, one on each side
of 180 degrees, and a polygon written with consecutive vertices 179.999 -> -179.999. Its area,
its class areas and its sink must be those of its two halves, each read from the raster on
its own side, checked against pyproj.Geod on the halves computed here."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import shapely
from affine import Affine
from pyproj import CRS, Geod, Transformer

from carbon.errors import InputError
from carbon.io.config import load_config
from carbon.io.sites import load_sites
from carbon.io.tables import load_catalog, load_coefficients
from carbon.pipeline.plan import plan_site
from carbon.pipeline.site import compute_site
from carbon.pipeline.validate import validate_inputs
from carbon.rules.site import Site
from tests.conftest import write_catalog, write_coefficients
from tests.rasters import write_tif

D = 1 / 12000  # WorldCover's pixel (degrees)
N = 120  # pixels a side: each raster is 0.01 degrees square
TOP = -16.0
WEST_EDGE, EAST_EDGE = 179.99905, -179.99893  # the site's western and eastern longitudes
SOUTH, NORTH = -16.00291, -16.00107
DENSITY = {"cropland": {"agb": 5, "soc": 40}, "forest": {"agb": 100, "bgb": 20, "soc": 60},
           "grassland": {"agb": 3, "soc": 50}}
GEOD = Geod(ellps="WGS84")


def geod_box_m2(lon0: float, lon1: float, lat0: float, lat1: float, n: int = 400) -> float:
    """Geodesic area of a lon/lat box whose parallels are densified (pyproj.Geod, independent
    of the pixel areas and coverage the pipeline uses)."""
    lons = np.concatenate([np.linspace(lon0, lon1, n), np.full(n, lon1), np.linspace(lon1, lon0, n), np.full(n, lon0)])
    lats = np.concatenate([np.full(n, lat0), np.linspace(lat0, lat1, n), np.full(n, lat1), np.linspace(lat1, lat0, n)])
    return abs(GEOD.polygon_area_perimeter(lons, lats)[0])


EAST_HALF_HA = geod_box_m2(WEST_EDGE, 180.0, SOUTH, NORTH) / 1e4  # the part at 179.999.. 180
WEST_HALF_HA = geod_box_m2(-180.0, EAST_EDGE, SOUTH, NORTH) / 1e4  # the part at -180 .. -179.999
RING = [[WEST_EDGE, SOUTH], [EAST_EDGE, SOUTH], [EAST_EDGE, NORTH], [WEST_EDGE, NORTH], [WEST_EDGE, SOUTH]]


def rasters(folder: Path) -> Path:
    """Per year, a raster west of 180 (cropland in 2020, forest in 2021: the sink) and one
    east of -180 (grassland both years), listed as two tiles of one map."""
    rows = []
    for year, east_code in ((2020, 1), (2021, 2)):
        east = write_tif(folder / f"east{year}.tif", np.full((N, N), east_code, np.uint8), crs="EPSG:4326",
                         transform=Affine(D, 0, 180.0 - N * D, 0, -D, TOP))
        west = write_tif(folder / f"west{year}.tif", np.full((N, N), 4, np.uint8), crs="EPSG:4326",
                         transform=Affine(D, 0, -180.0, 0, -D, TOP))
        rows += [(year, east.name, "clcd"), (year, west.name, "clcd")]
    return write_catalog(folder / "catalog.csv", rows)


def sites_file(folder: Path, ring: list[list[float]]) -> Path:
    path = folder / "sites.geojson"
    props = {"site_id": "fiji", "name": "Across 180", "site_type": "forest", "ecozone": "*",
             "method": "stock_difference"}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": props, "geometry": {"type": "Polygon", "coordinates": [ring]}}]}))
    return path


@pytest.fixture
def inputs(tmp_path: Path):
    catalog = load_catalog(rasters(tmp_path))
    coef = load_coefficients(write_coefficients(tmp_path / "coef.csv", DENSITY))
    return tmp_path, catalog, coef


def check_result(r) -> None:
    total = EAST_HALF_HA + WEST_HALF_HA
    assert 4.0 < total < 4.5  # a site of about 4 ha, not a band round the globe
    stocks = r.stocks.set_index("year")
    for y in (2020, 2021):
        assert stocks.loc[y, "area_ha"] + stocks.loc[y, "nodata_ha"] == pytest.approx(total, rel=1e-6)
        assert stocks.loc[y, "nodata_ha"] == pytest.approx(0.0, abs=1e-9)
    by_code = r.area_by_code.set_index(["year", "code"])["area_ha"]
    # each half read from the raster on its own side
    assert by_code[(2020, 1)] == pytest.approx(EAST_HALF_HA, rel=1e-6)  # cropland: 179.999 .. 180
    assert by_code[(2020, 4)] == pytest.approx(WEST_HALF_HA, rel=1e-6)  # grassland: -180 .. -179.999
    assert by_code[(2021, 2)] == pytest.approx(EAST_HALF_HA, rel=1e-6)
    assert by_code[(2021, 4)] == pytest.approx(WEST_HALF_HA, rel=1e-6)
    assert set(by_code.index) == {(2020, 1), (2020, 4), (2021, 2), (2021, 4)}
    # the sink: cropland (45 t C/ha) -> forest (180 t C/ha) on the eastern half only
    sink = r.sinks.set_index(["period_start", "period_end"]).loc[(2020, 2021)]
    assert sink["stock_change_tc"] == pytest.approx(EAST_HALF_HA * (180 - 45), rel=1e-6)
    assert sink["sink_tco2e"] == pytest.approx(EAST_HALF_HA * (180 - 45) * 44 / 12, rel=1e-6)
    assert stocks.loc[2020, "stock_tc"] == pytest.approx(EAST_HALF_HA * 45 + WEST_HALF_HA * 53, rel=1e-6)


def test_site_across_the_antimeridian_is_split_and_read_from_both_sides(inputs) -> None:
    folder, catalog, coef = inputs
    (site,) = load_sites(sites_file(folder, RING))
    assert site.geometry.geom_type == "MultiPolygon"  # split at 180, each part within -180..180
    west, east = sorted(shapely.get_parts(site.geometry), key=lambda p: p.bounds[0])
    assert west.bounds == pytest.approx((-180.0, SOUTH, EAST_EDGE, NORTH))
    assert east.bounds == pytest.approx((WEST_EDGE, SOUTH, 180.0, NORTH))
    plan = plan_site(site, catalog, coef)
    # each year: both rasters, the one west of -180 moved a turn east next to the site
    assert sorted(i.lon_shift for i in plan[2020].infos) == [0.0, 360.0]
    check_result(compute_site(site, catalog, coef))


def test_site_written_in_0_to_360_longitudes_gives_the_same(inputs) -> None:
    folder, catalog, coef = inputs
    ring = [[x + 360 if x < 0 else x, y] for x, y in RING]  # 179.999 -> 180.001
    (site,) = load_sites(sites_file(folder, ring))
    assert site.geometry.geom_type == "MultiPolygon"
    check_result(compute_site(site, catalog, coef))


def test_site_in_a_projected_crs_across_the_antimeridian(inputs) -> None:
    """The same land given in UTM zone 60S: its polygon is whole there, and taken to the
    rasters' lon/lat it must not become a band round the globe."""
    _, catalog, coef = inputs
    utm = CRS.from_epsg(32760)
    to_utm = Transformer.from_crs("EPSG:4326", utm, always_xy=True)
    lonlat = shapely.segmentize(shapely.Polygon([(x + 360 if x < 0 else x, y) for x, y in RING]), 1e-5)
    geom = shapely.transform(lonlat, lambda xy: np.column_stack(to_utm.transform(xy[:, 0], xy[:, 1])))
    r = compute_site(Site("fiji", "F", "forest", "*", geom, utm, properties={"method": "stock_difference"}),
                     catalog, coef)
    total = EAST_HALF_HA + WEST_HALF_HA
    stocks = r.stocks.set_index("year")
    # the UTM polygon's straight edges are not exactly the parallels: close, not identical
    assert stocks.loc[2020, "area_ha"] == pytest.approx(total, rel=1e-4)
    by_code = r.area_by_code.set_index(["year", "code"])["area_ha"]
    assert by_code[(2020, 1)] == pytest.approx(EAST_HALF_HA, rel=1e-3)
    assert by_code[(2020, 4)] == pytest.approx(WEST_HALF_HA, rel=1e-3)


def test_raster_across_the_antimeridian_off_the_reference_grid_is_refused(inputs) -> None:
    """A raster on the other side that is not on the reference grid cannot be read there yet:
    a clear error naming it, never a silent nodata."""
    folder, _, coef = inputs
    write_tif(folder / "west_coarse.tif", np.full((40, 40), 4, np.uint8), crs="EPSG:4326",
              transform=Affine(2.5 * D, 0, -180.0, 0, -2.5 * D, TOP))
    catalog = load_catalog(write_catalog(folder / "mixed.csv", [(2020, "east2020.tif", "clcd"),
                                                                 (2020, "west_coarse.tif", "clcd")]))
    (site,) = load_sites(sites_file(folder, RING))
    with pytest.raises(InputError, match=r"crosses the antimeridian.*west_coarse\.tif"):
        compute_site(site, catalog, coef)


def test_validate_reports_a_site_above_the_pixel_limit(inputs) -> None:
    folder, _, _ = inputs
    sites_file(folder, RING)
    cfg_path = folder / "run.toml"
    base = ('sites = "sites.geojson"\nlandcover = "catalog.csv"\ncoefficients = "coef.csv"\n'
            'output_dir = "out"\n')
    cfg_path.write_text(base, encoding="utf-8")
    assert validate_inputs(load_config(cfg_path), quick=True).problems == []
    cfg_path.write_text(base + "max_site_pixels = 500\n", encoding="utf-8")
    problems = validate_inputs(load_config(cfg_path), quick=True).problems
    assert len(problems) == 1
    # the window of the site's 0.00202 x 0.00184 degrees on the 1/12000-degree pixels, not round the globe
    cols = math.ceil((EAST_EDGE + 360 - (180 - N * D)) / D) - math.floor((WEST_EDGE - (180 - N * D)) / D)
    rows = math.ceil((TOP - SOUTH) / D) - math.floor((TOP - NORTH) / D)
    assert (cols, rows) == (25, 23)
    assert "site 'fiji'" in problems[0] and "too large to scan" in problems[0]
    assert f"about {cols * rows} pixels ({cols} x {rows} pixels of " in problems[0]
    assert "limit of 500;" in problems[0] and "max_site_pixels" in problems[0]
