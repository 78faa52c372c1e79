"""Geometry rules of a site: coordinates in range, polygons across the antimeridian split (and
brought back in one piece onto lon/lat grids), slivers, and the pixel limit of a site.
Areas are checked against pyproj.Geod."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import shapely
from affine import Affine
from pyproj import CRS, Geod

from carbon.errors import InputError
from carbon.io.config import load_config
from carbon.io.sites import load_sites
from carbon.io.tables import load_catalog, load_coefficients
from carbon.pipeline.plan import check_site_pixels, plan_site
from carbon.rules.grid import RasterInfo, contiguous_lonlat, shifts_meeting, site_grid, to_crs
from carbon.rules.site import (
    DEFAULT_MIN_SITE_AREA_HA,
    Site,
    SiteLimits,
    check_site_area,
    geodesic_area_ha,
    lonlat_geometry,
)
from tests.conftest import write_catalog, write_coefficients
from tests.rasters import CLCD_ALBERS, X0, Y0, write_tif

WGS84 = CRS.from_epsg(4326)
GEOD = Geod(ellps="WGS84")
ALBERS = CRS.from_proj4(CLCD_ALBERS)


def geod_ha(lons: list[float], lats: list[float]) -> float:
    return abs(GEOD.polygon_area_perimeter(lons, lats)[0]) / 1e4


def geod_box_ha(lon0: float, lon1: float, lat0: float, lat1: float, n: int = 2001) -> float:
    """A lon/lat box with its parallels densified (Geod's edges are geodesics)."""
    lons = np.concatenate([np.linspace(lon0, lon1, n), np.linspace(lon1, lon0, n)])
    lats = np.concatenate([np.full(n, lat0), np.full(n, lat1)])
    return geod_ha(list(lons), list(lats))


def sites_file(tmp_path: Path, coords: list, site_id: str = "s1") -> Path:
    props = {"site_id": site_id, "name": "n", "site_type": "forest", "ecozone": "*"}
    path = tmp_path / "sites.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": props, "geometry": {"type": "Polygon", "coordinates": coords}}]}))
    return path


# -- the antimeridian -------------------------------------------------------------------------

def test_polygon_across_the_antimeridian_is_split_with_its_geodesic_area() -> None:
    ring = [(179.9, -17.0), (-179.8, -17.0), (-179.8, -16.8), (179.9, -16.8)]
    geom = lonlat_geometry(shapely.Polygon(ring), WGS84)
    assert geom.geom_type == "MultiPolygon"
    west, east = sorted(shapely.get_parts(geom), key=lambda p: p.bounds[0])
    assert west.bounds == pytest.approx((-180.0, -17.0, -179.8, -16.8))
    assert east.bounds == pytest.approx((179.9, -17.0, 180.0, -16.8))
    # Geod on each half separately, and on the whole ring (its edges are geodesics, the short way)
    halves = geod_ha([179.9, 180, 180, 179.9], [-17, -17, -16.8, -16.8]) + geod_ha(
        [-180, -179.8, -179.8, -180], [-17, -17, -16.8, -16.8])
    assert geodesic_area_ha(geom, WGS84) == pytest.approx(halves, rel=1e-9)
    # the whole ring's edges are geodesics, which bow off the parallels the split follows: 1e-6 apart
    assert halves == pytest.approx(geod_ha([p[0] for p in ring], [p[1] for p in ring]), rel=1e-5)
    assert 60_000 < halves < 80_000  # 0.3 x 0.2 degrees (about 32 x 22 km), not a band round the globe


def test_ordinary_polygon_is_kept_as_it_is() -> None:
    poly = shapely.box(114.0, 30.0, 114.01, 30.01)
    assert lonlat_geometry(poly, WGS84) is poly
    assert to_crs(poly, WGS84, WGS84) is poly


def test_hole_across_the_antimeridian_stays_in_its_shell() -> None:
    shell = [(179.0, -1.0), (-179.0, -1.0), (-179.0, 1.0), (179.0, 1.0), (179.0, -1.0)]
    hole = [(-179.5, -0.5), (179.5, -0.5), (179.5, 0.5), (-179.5, 0.5), (-179.5, -0.5)]  # written from the east
    geom = lonlat_geometry(shapely.Polygon(shell, [hole]), WGS84)
    outer = geod_box_ha(179, 181, -1, 1)
    inner = geod_box_ha(179.5, 180.5, -0.5, 0.5)
    # edges along the parallels on both sides (densified), as the split polygon has them
    assert geodesic_area_ha(shapely.segmentize(geom, 0.001), WGS84) == pytest.approx(outer - inner, rel=1e-7)
    assert geom.is_valid and geom.geom_type == "MultiPolygon"


def test_split_site_is_one_piece_on_a_lon_lat_grid() -> None:
    geom = lonlat_geometry(shapely.Polygon([(179.99, 10), (-179.98, 10), (-179.98, 10.01), (179.99, 10.01)]), WGS84)
    whole = contiguous_lonlat(geom)
    assert whole.geom_type == "Polygon"
    assert whole.bounds == pytest.approx((179.99, 10.0, 180.02, 10.01))
    assert to_crs(geom, WGS84, WGS84).bounds == pytest.approx(whole.bounds)
    d = 0.001
    east = RasterInfo("e.tif", WGS84, Affine(d, 0, 179.9, 0, -d, 10.1), 100, 200, "uint8", 0)
    grid = site_grid(east, whole)
    assert (grid.width, grid.height) == (30, 10)  # 0.03 x 0.01 degrees, not 360


def test_rasters_are_matched_from_either_side() -> None:
    whole = shapely.box(179.99, 10.0, 180.02, 10.01)
    d = 0.01
    west = RasterInfo("w.tif", WGS84, Affine(d, 0, -180.0, 0, -d, 11.0), 10, 200, "uint8", 0)
    east = RasterInfo("e.tif", WGS84, Affine(d, 0, 179.9, 0, -d, 11.0), 10, 200, "uint8", 0)
    world = RasterInfo("g.tif", WGS84, Affine(d, 0, -180.0, 0, -d, 90.0), 36000, 18000, "uint8", 0)
    (w,) = shifts_meeting(west, whole)
    assert w.lon_shift == 360.0 and w.bounds[0] == pytest.approx(180.0)
    assert [i.lon_shift for i in shifts_meeting(east, whole)] == [0.0]
    assert sorted(i.lon_shift for i in shifts_meeting(world, whole)) == [0.0, 360.0]  # both edges of the map
    albers = RasterInfo("a.tif", ALBERS, Affine(30, 0, X0, 0, -30, Y0), 3, 3, "uint8", 0)
    assert shifts_meeting(albers, shapely.box(X0 + 400, Y0 - 80, X0 + 480, Y0 - 10)) == []


def test_ring_round_a_pole_is_refused(tmp_path: Path) -> None:
    ring = [[0, 80], [120, 80], [-120, 80], [0, 80]]  # winds a whole turn of longitude
    with pytest.raises(InputError, match=r"feature 1 \(site_id 's1'\): a ring goes round a pole"):
        load_sites(sites_file(tmp_path, [ring]))


def test_polygon_invalid_once_unwrapped_names_the_reason(tmp_path: Path) -> None:
    bowtie = [[179.99, 0], [-179.99, 0.01], [-179.99, 0], [179.99, 0.01], [179.99, 0]]
    with pytest.raises(InputError, match=r"site_id 's1'\): geometry is invalid once its edges across the "
                                         r"antimeridian are taken the short way \(Self-intersection"):
        load_sites(sites_file(tmp_path, [bowtie]))


def test_0_to_360_longitudes_are_the_same_site(tmp_path: Path) -> None:
    (a,) = load_sites(sites_file(tmp_path, [[[190, 5], [190.01, 5], [190.01, 5.01], [190, 5.01], [190, 5]]]))
    assert a.geometry.bounds == pytest.approx((-170.0, 5.0, -169.99, 5.01))


# -- coordinates out of range -------------------------------------------------------------------

@pytest.mark.parametrize(("coords", "message"), [
    ([[114, 30], [114.01, 30], [114.01, 91], [114, 91], [114, 30]], "latitude 91 is out of range"),
    ([[114, -90.5], [114.01, -90.5], [114.01, 30], [114, 30], [114, -90.5]], "latitude -90.5 is out of range"),
    ([[-181, 30], [-180.5, 30], [-180.5, 30.01], [-181, 30.01], [-181, 30]], "longitude -181 is out of range"),
    ([[361, 30], [361.5, 30], [361.5, 30.01], [361, 30.01], [361, 30]], "longitude 361 is out of range"),
    # latitude first by mistake
    ([[30, 114], [30.01, 114], [30.01, 114.01], [30, 114.01], [30, 114]], "latitude 114 is out of range"),
])
def test_coordinates_out_of_range_are_refused(tmp_path: Path, coords: list, message: str) -> None:
    path = sites_file(tmp_path, [coords], site_id="far")
    with pytest.raises(InputError, match=rf"sites\.geojson, feature 1 \(site_id 'far'\): {message}") as e:
        load_sites(path)
    assert str(path) in str(e.value)


def test_projected_coordinates_are_not_checked_as_degrees(tmp_path: Path) -> None:
    path = tmp_path / "albers.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection",
                                "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::3857"}},
                                "features": [{"type": "Feature", "properties": {
                                    "site_id": "m", "name": "n", "site_type": "forest", "ecozone": "*"},
                                    "geometry": {"type": "Polygon", "coordinates": [[
                                        [12_000_000, 3_500_000], [12_000_100, 3_500_000],
                                        [12_000_100, 3_500_100], [12_000_000, 3_500_000]]]}}]}))
    (site,) = load_sites(path)
    assert site.geometry.bounds[2] == 12_000_100


# -- slivers ---------------------------------------------------------------------------------------

def albers_site(geom) -> Site:
    return Site("s1", "S", "other", "*", geom, ALBERS)


def test_geodesic_area_of_a_projected_site_matches_geod() -> None:
    geom = shapely.box(X0 + 10, Y0 - 80, X0 + 80, Y0 - 10)  # 70 x 70 m in the equal-area Albers
    assert geodesic_area_ha(geom, ALBERS) == pytest.approx(0.49, rel=1e-6)


def test_sliver_is_refused_naming_the_site(tmp_path: Path) -> None:
    sliver = shapely.box(X0 + 10, Y0 - 80, X0 + 80, Y0 - 79.5)  # 70 m x 0.5 m = 35 m^2
    with pytest.raises(InputError, match=r"sliver: its geodesic area 0\.0035 ha is below the minimum of 0\.01 ha "
                                         r"\(min_site_area_ha.*site 's1'"):
        check_site_area(albers_site(sliver), SiteLimits())
    assert check_site_area(albers_site(sliver), SiteLimits(min_area_ha=0.001)) == pytest.approx(0.0035, rel=1e-6)
    write_tif(tmp_path / "lc.tif", np.full((3, 3), 2, np.uint8))
    catalog = load_catalog(write_catalog(tmp_path / "c.csv", [(2020, "lc.tif", "clcd")]))
    coef = load_coefficients(write_coefficients(tmp_path / "k.csv", {"forest": {"agb": 1}}))
    with pytest.raises(InputError, match=r"sliver.*site 's1'"):
        plan_site(albers_site(sliver), catalog, coef)
    assert list(plan_site(albers_site(sliver), catalog, coef, limits=SiteLimits(min_area_ha=0.0))) == [2020]
    assert DEFAULT_MIN_SITE_AREA_HA == 0.01


# -- the pixel limit -------------------------------------------------------------------------------

def test_pixel_estimate_is_the_window_on_the_raster_grid() -> None:
    info = RasterInfo("lc.tif", ALBERS, Affine(30, 0, X0, 0, -30, Y0), 1000, 1000, "uint8", 0)
    geom = shapely.box(X0 + 10, Y0 - 3000, X0 + 3000, Y0 - 10)  # columns 0..99, rows 0..99
    assert check_site_pixels(albers_site(geom), [(info, geom)], SiteLimits(max_pixels=10_000)) == 10_000
    with pytest.raises(InputError, match=r"too large to scan: its bounding box covers about 10,000 pixels "
                                         r"\(100 x 100 pixels of lc\.tif\), above the limit of 9,999;.*"
                                         r"max_site_pixels.*site 's1'"):
        check_site_pixels(albers_site(geom), [(info, geom)], SiteLimits(max_pixels=9_999))


def test_config_reads_the_site_limits(tmp_path: Path) -> None:
    base = 'sites = "s.geojson"\nlandcover = "c.csv"\ncoefficients = "k.csv"\noutput_dir = "out"\n'
    path = tmp_path / "run.toml"
    path.write_text(base, encoding="utf-8")
    assert load_config(path).site_limits == SiteLimits(min_area_ha=0.01, max_pixels=2e9)
    path.write_text(base + "min_site_area_ha = 0.5\nmax_site_pixels = 5e9\n", encoding="utf-8")
    assert load_config(path).site_limits == SiteLimits(min_area_ha=0.5, max_pixels=5e9)
    path.write_text(base + 'min_site_area_ha = -1\nmax_site_pixels = "lots"\n', encoding="utf-8")
    with pytest.raises(InputError) as e:
        load_config(path)
    assert "min_site_area_ha must be a number of hectares >= 0, not -1" in str(e.value)
    assert "max_site_pixels must be a number of pixels >= 1 (e.g. 5e9), not 'lots'" in str(e.value)


def test_the_configured_limits_reach_the_run_and_the_input_key(tmp_path: Path) -> None:
    """max_site_pixels and min_site_area_ha of the configuration apply to a run, not only to validate."""
    from carbon.pipeline.loop import compute_config
    from tests.conftest import write_config

    cfg = write_config(tmp_path / "c.toml", output_dir=tmp_path / "out")
    cfg.write_text(cfg.read_text() + "max_site_pixels = 100\n")
    run = compute_config(cfg, ["daye-mine-wc"])
    assert run.results == {}
    assert "above the limit of 100" in run.errors["daye-mine-wc"]
    cfg.write_text(cfg.read_text().replace("max_site_pixels = 100\n", "min_site_area_ha = 1000\n"))
    run = compute_config(cfg, ["daye-mine-wc"])
    assert "sliver" in run.errors["daye-mine-wc"] and "1000 ha" in run.errors["daye-mine-wc"]
